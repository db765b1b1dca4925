package edgestream

import (
	"net"
	"strings"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
// The certificate files are read at Start (and again on every dial).
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	if m.Server == "" {
		c.Check(false, "server", "must be set: cloudstream's tunnel address, host:10004")
	} else if _, _, err := net.SplitHostPort(m.Server); err != nil {
		c.Check(false, "server", "%q: want host:port: %v", m.Server, err)
	}
	for _, f := range []struct{ key, v string }{{"caFile", m.CAFile}, {"certFile", m.CertFile}, {"keyFile", m.KeyFile}} {
		c.Check(f.v != "", f.key, "must be set (the node certificate files edgecore join wrote)")
	}
	c.Check(strings.HasPrefix(m.CRIEndpoint, "unix://") || strings.HasPrefix(m.CRIEndpoint, "/"), "criEndpoint",
		"%q: want unix:///path/to.sock or an absolute socket path", m.CRIEndpoint)
	c.Check(m.Heartbeat > 0, "heartbeat", "must be positive, got %s", m.Heartbeat)
	c.Check(m.BackoffMin > 0, "backoffMin", "must be positive, got %s", m.BackoffMin)
	c.Check(m.BackoffMax >= m.BackoffMin, "backoffMax", "%s must not be below backoffMin %s", m.BackoffMax, m.BackoffMin)
	c.Check(m.DialTimeout > 0, "dialTimeout", "must be positive, got %s", m.DialTimeout)
	c.Check(m.LogPoll > 0, "logPoll", "must be positive, got %s", m.LogPoll)
	return c.Err()
}
