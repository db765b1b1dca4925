package devicetwin

import "github.com/kedge-io/kedge/sdk"

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.FlushInterval > 0, "flushInterval", "must be positive, got %s", m.FlushInterval)
	c.Check(m.ResyncTimeout > 0, "resyncTimeout", "must be positive, got %s", m.ResyncTimeout)
	c.Check(m.EventBus != "", "eventBus", "must name the module that publishes to MQTT")
	c.Check(m.MetaManager != "", "metaManager", "must name the module device status is sent to")
	return c.Err()
}
