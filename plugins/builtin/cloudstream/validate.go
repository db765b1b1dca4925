package cloudstream

import (
	"fmt"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
// Whether clientCAFile, pkiDir or the CA Secret can be read is Start's to find out.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.SessionTimeout > 0, "sessionTimeout", "must be positive, got %s", m.SessionTimeout)
	c.Check(m.Heartbeat > 0, "heartbeat", "must be positive, got %s", m.Heartbeat)
	c.Check(m.AdvertisePort >= 0 && m.AdvertisePort <= 65535, "advertisePort", "must be in 0..65535, got %d", m.AdvertisePort)
	c.Check(m.ClientCAFile != "" || m.InsecureAllowUnauthenticated, "clientCAFile", "no client authentication for the stream server "+
		"(it serves logs, exec, attach and port-forward of every edge pod): set it to the CA of the kube-apiserver's kubelet client "+
		"certificate (its --kubelet-client-certificate; kubeadm: /etc/kubernetes/pki/ca.crt, with clientAllowedNames: "+
		"[kube-apiserver-kubelet-client]), or, for development only, insecureAllowUnauthenticated: true")
	for i, n := range m.ClientAllowedNames {
		c.Check(n != "", fmt.Sprintf("clientAllowedNames[%d]", i), "is empty")
	}
	if m.CASecret.Enable {
		c.Check(m.CASecret.Namespace != "", "caSecret.namespace", "must be set when caSecret is enabled")
		c.Check(m.CASecret.Name != "", "caSecret.name", "must be set when caSecret is enabled")
	}
	if f := m.Forward; f.Enable {
		c.Check(f.DialTimeout > 0, "forward.dialTimeout", "must be positive, got %s", f.DialTimeout)
	}
	if a := m.MetricsAPI; a.Enable {
		c.Check(a.ScrapeInterval > 0, "metricsAPI.scrapeInterval", "must be positive, got %s", a.ScrapeInterval)
		c.Check(a.ScrapeTimeout > 0, "metricsAPI.scrapeTimeout", "must be positive, got %s", a.ScrapeTimeout)
		c.Check(a.AuthRefresh > 0, "metricsAPI.authRefresh", "must be positive, got %s", a.AuthRefresh)
		c.Check(a.Concurrency > 0, "metricsAPI.concurrency", "must be positive, got %d", a.Concurrency)
		c.Check(a.ServiceName != "", "metricsAPI.serviceName", "must name the APIService's Service")
		c.Check(a.ServiceNamespace != "", "metricsAPI.serviceNamespace", "must name the namespace of the APIService's Service")
	}
	return c.Err()
}
