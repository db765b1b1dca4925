package edged

import (
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
// Whether the runtime answers at criEndpoint is found out at Start (it is retried), not here.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(strings.HasPrefix(m.CRIEndpoint, "unix://") || strings.HasPrefix(m.CRIEndpoint, "/"), "criEndpoint",
		"%q: want unix:///path/to.sock or an absolute socket path", m.CRIEndpoint)
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"syncPeriod", m.SyncPeriod}, {"statusPeriod", m.StatusPeriod}, {"queryTimeout", m.QueryTimeout},
		{"backoff.base", m.Backoff.Base}, {"backoff.max", m.Backoff.Max}, {"backoff.resetAfter", m.Backoff.ResetAfter},
		{"images.pullTimeout", m.Images.PullTimeout}, {"probeTimeUnit", m.ProbeTimeUnit}} {
		c.Check(d.v > 0, d.key, "must be positive, got %s", d.v)
	}
	c.Check(m.Backoff.Max >= m.Backoff.Base, "backoff.max", "%s is below backoff.base %s", m.Backoff.Max, m.Backoff.Base)
	c.Check(filepath.IsAbs(m.RootDir), "rootDir", "%q: must be an absolute path", m.RootDir)
	c.Check(m.PodSandboxImage != "", "podSandboxImage", "must not be empty: name the pause image")
	c.Check(m.NodeIP == "" || net.ParseIP(m.NodeIP) != nil, "nodeIP", "%q is not an IP address (leave it empty to pick the first non-loopback IPv4 address)", m.NodeIP)
	c.Check(m.MetaManager != "", "metaManager", "must name the module pods, configmaps and secrets are read from")
	return c.Err()
}
