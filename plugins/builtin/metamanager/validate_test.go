package metamanager_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on metamanager's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.metamanager.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, metamanager.Name, []sdktest.SettingCase{
		sdktest.Case("zero queryTimeout", map[string]any{"queryTimeout": "0s"}, "queryTimeout", "must be positive, got 0s"),
		sdktest.Case("negative queryTimeout", map[string]any{"queryTimeout": "-5s"}, "queryTimeout", "must be positive, got -5s"),
		sdktest.Case("metaServer address without port", map[string]any{"metaServer": map[string]any{"enable": true, "address": "127.0.0.1"}},
			"metaServer.address", `"127.0.0.1": want host:port`),
		sdktest.Case("metaServer certFile without keyFile", map[string]any{"metaServer": map[string]any{"enable": true, "certFile": "/var/lib/kedge/metaserver.crt"}},
			"metaServer.keyFile", `"" with metaServer.certFile "/var/lib/kedge/metaserver.crt": set both for HTTPS, or neither`),
	})
}
