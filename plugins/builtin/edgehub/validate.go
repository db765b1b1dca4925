package edgehub

import (
	"time"

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
	c.Check(m.HealthyAfter > 0, "healthyAfter", "must be positive, got %s", m.HealthyAfter)
	c.Check(m.BackoffMin > 0, "backoffMin", "must be positive, got %s", m.BackoffMin)
	c.Check(m.BackoffMax >= m.BackoffMin, "backoffMax", "%s must not be below backoffMin %s", m.BackoffMax, m.BackoffMin)
	c.Check(m.AsyncLimit > 0 || len(m.AsyncGroups) == 0, "asyncLimit", "must be positive when asyncGroups are set, got %d", m.AsyncLimit)
	c.Check(m.LeaseDuration == 0 || m.LeaseDuration >= 4*time.Second, "leaseDuration",
		"want 0 (no Lease) or at least 4s (it is renewed every quarter of it, in whole seconds), got %s", m.LeaseDuration)
	c.Check(!m.QUIC.Enable || m.QUIC.Server != "", "quic.server", "must be the cloud's host:10001 when quic.enable is set")
	c.Check(!m.SendInventory || m.MetaManager != "", "metaManager", "must name the module asked for the inventory when sendInventory is set")
	return c.Err()
}
