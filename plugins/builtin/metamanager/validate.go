package metamanager

import (
	"net"

	"github.com/kedge-io/kedge/sdk"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
// The MetaServer's files (certificate, admin token) are read, or created, at Start.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.QueryTimeout > 0, "queryTimeout", "must be positive, got %s", m.QueryTimeout)
	if ms := m.MetaServer; ms.Enable {
		c.Check(startMetaServer != nil, "metaServer.enable",
			"is true, but this build has no MetaServer (built with the tag kedge_nometaserver, as the minimal class is): set it to false or use a build that has it")
		if _, _, err := net.SplitHostPort(ms.Address); err != nil {
			c.Check(false, "metaServer.address", "%q: want host:port: %v", ms.Address, err)
		}
		c.Check((ms.CertFile == "") == (ms.KeyFile == ""), "metaServer.keyFile",
			"%q with metaServer.certFile %q: set both for HTTPS, or neither", ms.KeyFile, ms.CertFile)
	}
	return c.Err()
}
