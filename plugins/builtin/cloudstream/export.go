package cloudstream

import "k8s.io/client-go/kubernetes"

// SetClient sets the API client before Start (for tests and embedders that already have one).
func SetClient(m *Module, c kubernetes.Interface) { m.client = c }

// ForwardPeers are the other replicas this one knows from the Leases (for tests).
func ForwardPeers(m *Module) []string {
	if m.fwd == nil {
		return nil
	}
	ps, _ := m.fwd.peersFromCache()
	var out []string
	for _, p := range ps {
		out = append(out, p.identity)
	}
	return out
}

// HubOwnerOf is the other replica the node's ownership Lease names, as this replica sees it (for tests).
func HubOwnerOf(m *Module, node string) string {
	if m.fwd == nil {
		return ""
	}
	p, _ := m.fwd.hubOwner(node)
	return p.identity
}

// Client is the API client set with SetClient (for tests).
func Client(m *Module) kubernetes.Interface { return m.client }
