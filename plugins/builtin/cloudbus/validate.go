package cloudbus

import (
	"strings"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator); each problem names its key.
// Whether tokenFile and the TLS files can be read is Start's to find out.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.Timeout > 0, "timeout", "must be positive, got %s", m.Timeout)
	c.Check(m.MaxRequestBytes > 0 && m.MaxRequestBytes <= message.MaxSize/2, "maxRequestBytes", "must be in 1..%d, got %d", message.MaxSize/2, m.MaxRequestBytes)
	c.Check(m.HubModule != "", "hubModule", "must name the module that carries messages to edge nodes")
	hasToken := strings.TrimSpace(m.Token) != ""
	c.Check(!hasToken || m.TokenFile == "", "tokenFile", "set token or tokenFile, not both")
	c.Check(hasToken || m.TokenFile != "" || m.InsecureNoAuth, "token",
		"no token or tokenFile: set one (the endpoint reaches into edge nodes), or insecureNoAuth: true to serve without")
	c.Check(!m.InsecureNoAuth || (!hasToken && m.TokenFile == ""), "insecureNoAuth", "is set together with a token: choose one")
	c.Check((m.TLSCertFile == "") == (m.TLSKeyFile == ""), "tlsKeyFile", "tlsCertFile and tlsKeyFile go together")
	return c.Err()
}
