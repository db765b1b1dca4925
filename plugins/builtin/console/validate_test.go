package console_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/console"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on the console's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.console.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	caSecret := func(kv ...string) map[string]any {
		m := map[string]any{"enable": true}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return map[string]any{"caSecret": m}
	}
	sdktest.ValidateSettings(t, console.Name, []sdktest.SettingCase{
		sdktest.Case("zero sessionMaxAge", map[string]any{"sessionMaxAge": "0s"}, "sessionMaxAge", "must be positive, got 0s"),
		sdktest.Case("negative authCacheTTL", map[string]any{"authCacheTTL": "-1s"}, "authCacheTTL", "must be positive, got -1s"),
		sdktest.Case("zero pushInterval", map[string]any{"pushInterval": "0s"}, "pushInterval", "must be positive, got 0s"),
		sdktest.Case("pageSize below 10", map[string]any{"pageSize": 9}, "pageSize", "must be 10 to 5000, got 9"),
		sdktest.Case("pageSize above 5000", map[string]any{"pageSize": 5001}, "pageSize", "must be 10 to 5000, got 5001"),
		sdktest.Case("zero loginRate", map[string]any{"loginRate": 0}, "loginRate", "must be positive, got 0"),
		sdktest.Case("zero loginBurst", map[string]any{"loginBurst": 0}, "loginBurst", "must be at least 1, got 0"),
		sdktest.Case("caSecret without a name", caSecret("name", ""), "caSecret.name", "must be set when caSecret is enabled"),
		sdktest.Case("caSecret without a namespace", caSecret("namespace", ""), "caSecret.namespace", "must be set when caSecret is enabled"),
	})
}
