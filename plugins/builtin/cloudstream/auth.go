package cloudstream

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"slices"
)

// clientAuth returns the pool of clientCAFile; nil (no error) only when insecureAllowUnauthenticated
// allows serving without client certificates.
func (m *Module) clientAuth() (*x509.CertPool, error) {
	if m.ClientCAFile == "" {
		return nil, nil // Validate made sure insecureAllowUnauthenticated is on
	}
	pem, err := os.ReadFile(m.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("modules.cloudstream.clientCAFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("modules.cloudstream.clientCAFile %s holds no PEM certificate", m.ClientCAFile)
	}
	return pool, nil
}

// allowed checks a request that passed the TLS handshake: with clientAllowedNames, the client
// certificate's common name must be one of them. It writes the refusal and returns false.
func (m *Module) allowed(w http.ResponseWriter, r *http.Request) bool {
	if len(m.ClientAllowedNames) == 0 || m.ClientCAFile == "" {
		return true
	}
	cn := ""
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cn = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if slices.Contains(m.ClientAllowedNames, cn) {
		return true
	}
	m.metrics.streamRefused.WithLabelValues("name_not_allowed").Inc()
	m.host.Logger().Info("stream client refused", "remote", r.RemoteAddr, "cn", cn, "reason", "name_not_allowed")
	http.Error(w, fmt.Sprintf("client certificate %q is not in clientAllowedNames", cn), http.StatusForbidden)
	return false
}
