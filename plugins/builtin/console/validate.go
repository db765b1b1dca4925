package console

import "github.com/kedge-io/kedge/sdk"

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
// Whether pkiDir or the CA Secret holds the cluster CA is Start's to find out.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.SessionMaxAge > 0, "sessionMaxAge", "must be positive, got %s", m.SessionMaxAge)
	c.Check(m.AuthCacheTTL > 0, "authCacheTTL", "must be positive, got %s", m.AuthCacheTTL)
	c.Check(m.PushInterval > 0, "pushInterval", "must be positive, got %s", m.PushInterval)
	c.Check(m.PageSize >= 10 && m.PageSize <= 5000, "pageSize", "must be 10 to 5000, got %d", m.PageSize)
	c.Check(m.LoginRate > 0, "loginRate", "must be positive, got %v", m.LoginRate)
	c.Check(m.LoginBurst >= 1, "loginBurst", "must be at least 1, got %d", m.LoginBurst)
	if m.CASecret.Enable {
		c.Check(m.CASecret.Namespace != "", "caSecret.namespace", "must be set when caSecret is enabled")
		c.Check(m.CASecret.Name != "", "caSecret.name", "must be set when caSecret is enabled")
	}
	return c.Err()
}
