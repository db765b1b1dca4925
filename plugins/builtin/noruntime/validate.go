package noruntime

import "github.com/kedge-io/kedge/sdk"

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator): metaManager is its only
// setting, and without it every status and deletion confirmation would fail to send.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.MetaManager != "", "metaManager", "must name the module pod status and deletion confirmations are sent to")
	return c.Err()
}
