package pluginmanager

import (
	"strings"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
// The key and certificate files are read, and pluginsDir created, at Start.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.RegistryURL != "", "registryURL", "must be set (https://<cloudcore>:10002/registry)")
	c.Check(len(m.TrustedKeys) > 0, "trustedKeys", "must name at least one registry public key file")
	for i, p := range m.TrustedKeys {
		c.Check(p != "", "trustedKeys", "entry %d is empty", i)
	}
	c.Check(m.PluginsDir != "", "pluginsDir", "must be set")
	c.Check(m.Hub != "", "hub", "must name the module that carries reports to the cloud")
	c.Check(m.SwapTimeout > 0, "swapTimeout", "must be positive, got %s", m.SwapTimeout)
	c.Check(m.HealthTimeout > 0, "healthTimeout", "must be positive, got %s", m.HealthTimeout)
	c.Check(m.HealthStable > 0, "healthStable", "must be positive, got %s", m.HealthStable)
	c.Check(m.FetchTimeout > 0, "fetchTimeout", "must be positive, got %s", m.FetchTimeout)
	c.Check(m.HealthStable < m.HealthTimeout, "healthStable", "%s must be shorter than healthTimeout %s", m.HealthStable, m.HealthTimeout)
	m.Inventory.check(&c)
	if strings.HasPrefix(m.RegistryURL, "https://") {
		for _, f := range []struct{ key, v string }{{"caFile", m.CAFile}, {"certFile", m.CertFile}, {"keyFile", m.KeyFile}} {
			c.Check(f.v != "", f.key, "must be set for an https registryURL (the node's certificate files)")
		}
	}
	return c.Err()
}
