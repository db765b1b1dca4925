package pki

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// Reasons HandshakeErrorLog gives a failed TLS handshake (a metric label: every one starts with tls_).
const (
	TLSRefusedNoCert    = "tls_no_cert"    // the server requires a client certificate and got none
	TLSRefusedBadCert   = "tls_bad_cert"   // a client certificate the server does not trust (or the client refused the server's)
	TLSRefusedPlainHTTP = "tls_plain_http" // plain HTTP sent to the TLS port
	TLSRefusedAborted   = "tls_aborted"    // the client went away mid-handshake (EOF, reset, timeout; also TCP probes)
	TLSRefusedHandshake = "tls_handshake"  // any other handshake failure (protocol version, cipher, malformed)
)

// TLSRefusalReason classifies the error text net/http logs for a failed TLS handshake.
func TLSRefusalReason(detail string) string {
	d := strings.ToLower(detail)
	switch {
	case strings.Contains(d, "didn't provide a certificate"), strings.Contains(d, "certificate required"):
		return TLSRefusedNoCert
	case strings.Contains(d, "certificate"):
		return TLSRefusedBadCert
	case strings.Contains(d, "http request to an https server"):
		return TLSRefusedPlainHTTP
	case d == "eof", strings.Contains(d, "connection reset"), strings.Contains(d, "timeout"), strings.Contains(d, "broken pipe"),
		strings.Contains(d, "unexpected eof"):
		return TLSRefusedAborted
	}
	return TLSRefusedHandshake
}

// HandshakeErrorLog returns a logger for http.Server.ErrorLog. net/http writes one line
// "http: TLS handshake error from ADDR: DETAIL" per connection whose TLS handshake failed — the only
// place a server sees a refused client certificate — so each such line calls refused with the
// client's address and TLSRefusalReason's label, and is logged at Info on logger (a scanner must
// not flood the log at a louder level; tls_aborted, which TCP probes cause, at Debug). Any other
// server error line is logged at Warn.
func HandshakeErrorLog(logger *slog.Logger, listener string, refused func(reason string)) *log.Logger {
	if logger == nil {
		logger = slog.Default()
	}
	return log.New(handshakeWriter{logger: logger, listener: listener, refused: refused}, "", 0)
}

type handshakeWriter struct {
	logger   *slog.Logger
	listener string
	refused  func(reason string)
}

const handshakePrefix = "http: TLS handshake error from "

func (w handshakeWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	rest, ok := strings.CutPrefix(line, handshakePrefix)
	if !ok {
		w.logger.Warn("server error", "listener", w.listener, "err", line)
		return len(p), nil
	}
	remote, detail, _ := strings.Cut(rest, ": ") // ADDR is host:port, the first ": " ends it
	reason := TLSRefusalReason(detail)
	if w.refused != nil {
		w.refused(reason)
	}
	level := slog.LevelInfo
	if reason == TLSRefusedAborted {
		level = slog.LevelDebug // load balancers' TCP health checks look like this, every few seconds
	}
	w.logger.Log(context.Background(), level, "TLS handshake refused", "listener", w.listener, "remote", remote, "reason", reason, "err", detail)
	return len(p), nil
}
