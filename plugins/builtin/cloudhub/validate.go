package cloudhub

import (
	"path"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.Window > 0, "window", "must be positive, got %d", m.Window)
	c.Check(m.Heartbeat > 0, "heartbeat", "must be positive, got %s", m.Heartbeat)
	c.Check(m.AckTimeout > 0, "ackTimeout", "must be positive, got %s", m.AckTimeout)
	c.Check(m.HandleTimeout > 0, "handleTimeout", "must be positive, got %s", m.HandleTimeout)
	c.Check(m.QPS > 0, "qps", "must be positive, got %v", m.QPS)
	c.Check(m.Burst > 0, "burst", "must be positive, got %d", m.Burst)
	c.Check(m.ForgetAfter > 0, "forgetAfter", "must be positive, got %s", m.ForgetAfter)
	c.Check(m.RecordCacheTTL > 0, "recordCacheTTL", "must be positive, got %s", m.RecordCacheTTL)
	c.Check(m.MaxHandshakes > 0, "maxHandshakes", "must be positive, got %d", m.MaxHandshakes)
	for _, p := range m.KubeEdgeNodes {
		_, err := path.Match(p, "")
		c.Check(err == nil, "kubeedgeNodes", "%q is not a valid name pattern: %v", p, err)
	}
	return c.Err()
}
