package cloudhub_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on cloudhub's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.cloudhub.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, cloudhub.Name, []sdktest.SettingCase{
		sdktest.Case("zero window", map[string]any{"window": 0}, "window", "must be positive, got 0"),
		sdktest.Case("zero heartbeat", map[string]any{"heartbeat": "0s"}, "heartbeat", "must be positive, got 0s"),
		sdktest.Case("zero qps", map[string]any{"qps": 0}, "qps", "must be positive, got 0"),
		sdktest.Case("negative burst", map[string]any{"burst": -1}, "burst", "must be positive, got -1"),
		sdktest.Case("zero maxHandshakes", map[string]any{"maxHandshakes": 0}, "maxHandshakes", "must be positive, got 0"),
		sdktest.Case("zero recordCacheTTL", map[string]any{"recordCacheTTL": "0s"}, "recordCacheTTL", "must be positive, got 0s"),
		sdktest.Case("bad node pattern", map[string]any{"kubeedgeNodes": []any{"ke-["}}, "kubeedgeNodes", `"ke-[" is not a valid name pattern`),
	})
}
