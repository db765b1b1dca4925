package cloudbus_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/cloudbus"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on cloudbus's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.cloudbus.<key>: <problem>". The defaults carry no token, which an enabled cloudbus
// refuses (the endpoint reaches into edge nodes); with a token they pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	base := map[string]any{"token": "t"}
	sdktest.ValidateSettingsOver(t, cloudbus.Name, base, []sdktest.SettingCase{
		sdktest.Case("defaults without a token", map[string]any{"token": ""}, "token", "no token or tokenFile"),
		sdktest.Case("token and tokenFile together", map[string]any{"tokenFile": "/x"}, "tokenFile", "set token or tokenFile, not both"),
		sdktest.Case("token and insecureNoAuth together", map[string]any{"insecureNoAuth": true}, "insecureNoAuth", "is set together with a token: choose one"),
		sdktest.Case("tokenFile and insecureNoAuth together", map[string]any{"token": "", "tokenFile": "/x", "insecureNoAuth": true}, "insecureNoAuth", "is set together with a token"),
		sdktest.Case("a TLS cert without its key", map[string]any{"tlsCertFile": "/x.crt"}, "tlsKeyFile", "tlsCertFile and tlsKeyFile go together"),
		sdktest.Case("zero timeout", map[string]any{"timeout": "0s"}, "timeout", "must be positive, got 0s"),
		sdktest.Case("zero maxRequestBytes", map[string]any{"maxRequestBytes": 0}, "maxRequestBytes", "must be in 1.."),
		sdktest.Case("maxRequestBytes over half a message", map[string]any{"maxRequestBytes": 1 << 40}, "maxRequestBytes", "must be in 1.."),
		sdktest.Case("empty hubModule", map[string]any{"hubModule": ""}, "hubModule", "must name the module"),
	})
}
