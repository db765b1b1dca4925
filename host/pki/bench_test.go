package pki

import (
	"context"
	"testing"
	"time"
)

// BenchmarkIssueNodeCert measures signing one node certificate (ECDSA P-256), the cert server's
// main cost when a fleet joins or renews at once.
func BenchmarkIssueNodeCert(b *testing.B) {
	ca, _, err := LoadOrCreateCA(context.Background(), FileStorage{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	pub := newKey(b).Public()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, err := ca.IssueNodeCert(pub, "edge-1", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
}

// BenchmarkVerifyJWT measures checking a join token's JWT.
func BenchmarkVerifyJWT(b *testing.B) {
	ca, _, err := LoadOrCreateCA(context.Background(), FileStorage{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := testToken(b, ca, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := ca.VerifyJWT(tok.JWT); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tokens/s")
}
