package cloudstream

import "k8s.io/client-go/kubernetes"

// SetClient sets the API client before Start (for tests and embedders that already have one).
func SetClient(m *Module, c kubernetes.Interface) { m.client = c }
