package cloudhub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-io/kedge/host/pki"
)

// A client the hub's TLS handshake turns away never reaches accept, yet it is counted in
// kedge_cloudhub_rejected_total with a reason saying why (issue 17: such refusals were invisible).
func TestTLSHandshakeRefusalsOnTheHubPortAreCountedByReason(t *testing.T) {
	c := startCloud(t, nil)
	other, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	foreign, err := other.IssueNodeCert(&key.PublicKey, "edge-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The client trusts the hub (so the refusal is the server's), and tries a request after the
	// handshake: with TLS 1.3 the server's verdict on the client certificate comes with the first read.
	tlsTry := func(certs []tls.Certificate) error {
		conn, err := tls.Dial("tcp", c.hub.Address, &tls.Config{RootCAs: c.hub.ca.Pool(), ServerName: "127.0.0.1", Certificates: certs})
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.WriteString(conn, "GET /e632aba927ea4ac2b575ec1603d56f10/edge-a/events HTTP/1.1\r\nHost: x\r\n\r\n")
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	tests := []struct {
		name, reason string
		try          func() error
	}{
		{"no client certificate", pki.TLSRefusedNoCert, func() error { return tlsTry(nil) }},
		{"a certificate from another CA", pki.TLSRefusedBadCert, func() error {
			return tlsTry([]tls.Certificate{{Certificate: [][]byte{foreign.Raw}, PrivateKey: key}})
		}},
		{"plain HTTP to the TLS port", pki.TLSRefusedPlainHTTP, func() error {
			conn, err := net.Dial("tcp", c.hub.Address)
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			b, _ := io.ReadAll(conn)
			return fmt.Errorf("%s", b)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctr := c.hub.metrics.rejectedBy.WithLabelValues(tt.reason)
			before := testutil.ToFloat64(ctr)
			if err := tt.try(); err == nil {
				t.Fatal("the hub served the client")
			}
			eventually(t, "rejected_total{reason="+tt.reason+"} to move", func() bool { return testutil.ToFloat64(ctr) == before+1 })
			if n := testutil.ToFloat64(c.hub.metrics.connects); n != 0 {
				t.Fatalf("%v connections accepted", n)
			}
		})
	}
}
