package pki

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// net/http's handshake error lines become one refusal each with a reason; other server errors are
// passed on and counted as nothing.
func TestHandshakeErrorLogCountsEachRefusedHandshakeByReason(t *testing.T) {
	tests := []struct {
		line, reason string // reason "": not a refusal
	}{
		{"http: TLS handshake error from 127.0.0.1:5000: tls: client didn't provide a certificate", TLSRefusedNoCert},
		{"http: TLS handshake error from [::1]:5000: tls: failed to verify certificate: x509: certificate signed by unknown authority", TLSRefusedBadCert},
		{"http: TLS handshake error from 10.0.0.1:1: remote error: tls: bad certificate", TLSRefusedBadCert},
		{"http: TLS handshake error from 10.0.0.1:1: client sent an HTTP request to an HTTPS server", TLSRefusedPlainHTTP},
		{"http: TLS handshake error from 10.0.0.1:1: EOF", TLSRefusedAborted},
		{"http: TLS handshake error from 10.0.0.1:1: read tcp 1.2.3.4:10000->10.0.0.1:1: read: connection reset by peer", TLSRefusedAborted},
		{"http: TLS handshake error from 10.0.0.1:1: tls: client offered only unsupported versions: [301]", TLSRefusedHandshake},
		{"http: Accept error: accept tcp: too many open files; retrying in 5ms", ""},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			var got []string
			var out bytes.Buffer
			l := HandshakeErrorLog(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})), "hub",
				func(reason string) { got = append(got, reason) })
			l.Print(tt.line)
			if tt.reason == "" {
				if len(got) != 0 || !strings.Contains(out.String(), "level=WARN") {
					t.Fatalf("counted %v, logged %q; want no refusal and a warning", got, out.String())
				}
				return
			}
			if len(got) != 1 || got[0] != tt.reason {
				t.Fatalf("refusals %v, want [%s]", got, tt.reason)
			}
			if !strings.Contains(out.String(), "listener=hub") || !strings.Contains(out.String(), "reason="+tt.reason) {
				t.Fatalf("log %q", out.String())
			}
		})
	}
}
