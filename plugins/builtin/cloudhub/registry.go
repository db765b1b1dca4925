package cloudhub

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/plugin-registry/server"
)

// RegistryPath is where the plugin registry is served on the certificate server.
const RegistryPath = "/registry/"

// certServerHandler serves the certificate server's endpoints and, with registryDir set, the plugin
// registry (plugin-registry/server: index.json, artifacts/<sha256>) under /registry/, to edge nodes
// presenting a valid node certificate of the cluster CA. The TLS config asks for client
// certificates without requiring them (a first join has only a token), so the check is made here.
func (m *Module) certServerHandler(certs http.Handler) (http.Handler, error) {
	if m.RegistryDir == "" {
		return certs, nil
	}
	fi, err := os.Stat(m.RegistryDir)
	if err != nil {
		return nil, fmt.Errorf("registryDir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("registryDir: %s is not a folder", m.RegistryDir)
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudhub_registry_requests_total",
		Help: "Plugin registry requests on the certificate server, by result (served, no_client_cert, bad_client_cert)."}, []string{"result"})
	if err := m.host.Metrics().Register(requests); err != nil {
		return nil, err
	}
	reg := http.StripPrefix(strings.TrimSuffix(RegistryPath, "/"), server.Handler(m.RegistryDir, m.host.Logger()))
	log := m.host.Logger()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, RegistryPath) {
			certs.ServeHTTP(w, r)
			return
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			requests.WithLabelValues("no_client_cert").Inc()
			log.Info("registry request without a client certificate refused", "path", r.URL.Path, "remote", r.RemoteAddr)
			http.Error(w, "the plugin registry is for edge nodes: present the node certificate issued by this cloud's CA", http.StatusUnauthorized)
			return
		}
		node, err := m.ca.VerifyNodeCert(r.TLS.PeerCertificates[0])
		if err != nil {
			requests.WithLabelValues("bad_client_cert").Inc()
			log.Warn("registry request with a client certificate that is not a node certificate of this cloud refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			http.Error(w, "client certificate not accepted: "+err.Error(), http.StatusForbidden)
			return
		}
		requests.WithLabelValues("served").Inc()
		log.Debug("registry request", "node", node, "path", r.URL.Path)
		reg.ServeHTTP(w, r)
	}), nil
}
