package dmi

import "github.com/kedge-io/kedge/sdk"

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.Socket != "", "socket", "must not be empty; want a unix socket path such as /var/lib/kedge/dmi.sock")
	c.Check(len(m.Socket) <= maxSocketPath, "socket", "%q: %d bytes is longer than a unix socket path may be (%d)", m.Socket, len(m.Socket), maxSocketPath)
	c.Check(m.QPS > 0, "qps", "must be positive, got %v", m.QPS)
	c.Check(m.Burst > 0, "burst", "must be positive, got %d", m.Burst)
	c.Check(m.ReconcileInterval > 0, "reconcileInterval", "must be positive, got %s", m.ReconcileInterval)
	c.Check(m.CallTimeout > 0, "callTimeout", "must be positive, got %s", m.CallTimeout)
	c.Check(m.DeviceTwin != "", "deviceTwin", "must name the module that receives the twin and state updates")
	c.Check(m.MetaManager != "", "metaManager", "must name the module asked for the node's devices")
	return c.Err()
}
