package cloudhub

import (
	"context"
	"crypto/x509"
	"net/http"

	"github.com/kedge-io/kedge/host/pki"
)

// refuseRevoked refuses a hub connection whose client certificate the node's record lists as
// revoked (a join with a --replace token took the node over): the old installation may not
// displace the new one. It answers 403 and returns true then. A record that cannot be read lets the
// connection through (logged): the certificate is still one of the cluster CA, and refusing would
// keep every node out while the records are unreachable.
func (m *Module) refuseRevoked(w http.ResponseWriter, r *http.Request) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	why, revoked := m.revoked(r.Context(), r.TLS.PeerCertificates[0], r.RemoteAddr)
	if revoked {
		http.Error(w, why, http.StatusForbidden)
	}
	return revoked
}

// revoked says whether cert is one the node's record lists as revoked, and why, for both lanes (the
// websocket's refuseRevoked and the QUIC listener); it logs and counts the refusal. The record is
// read through the cache (recordcache.go), not per connection.
func (m *Module) revoked(ctx context.Context, cert *x509.Certificate, remote string) (string, bool) {
	if m.records == nil {
		return "", false
	}
	node, err := pki.NodeNameFromCert(cert)
	if err != nil {
		return "", false // the hub refuses it and says why
	}
	serial := cert.SerialNumber.Text(16)
	revoked, err := m.records.revoked(ctx, node, serial)
	if err != nil {
		m.host.Logger().Warn("node record unreadable; connection let through on its certificate", "node", node, "err", err)
		return "", false
	}
	if !revoked {
		return "", false
	}
	m.metrics.rejected.Inc()
	m.host.Logger().Warn("edge connection refused: revoked certificate", "node", node, "serial", serial, "remote", remote)
	return "certificate " + serial + " of node " + node + " was revoked when the node joined again (--replace); join with a new token", true
}
