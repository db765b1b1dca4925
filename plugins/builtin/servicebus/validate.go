package servicebus

import (
	"fmt"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.Concurrency > 0, "concurrency", "must be positive, got %d", m.Concurrency)
	c.Check(m.Timeout > 0, "timeout", "must be positive, got %s", m.Timeout)
	c.Check(m.MaxResponseBytes > 0 && m.MaxResponseBytes <= maxBody, "maxResponseBytes", "must be in 1..%d, got %d", maxBody, m.MaxResponseBytes)
	c.Check(m.MaxClockSkew >= 0, "maxClockSkew", "must not be negative, got %s", m.MaxClockSkew)
	for i, p := range m.AllowedPorts {
		c.Check(p >= 1 && p <= 65535, fmt.Sprintf("allowedPorts[%d]", i), "%d is not a TCP port (1..65535)", p)
	}
	return c.Err()
}
