package devicecontroller_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on devicecontroller's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.devicecontroller.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, devicecontroller.Name, []sdktest.SettingCase{
		sdktest.Case("zero workers", map[string]any{"workers": 0}, "workers", "must be positive, got 0"),
		sdktest.Case("zero qps", map[string]any{"qps": 0}, "qps", "must be positive, got 0"),
		sdktest.Case("negative burst", map[string]any{"burst": -5}, "burst", "must be positive, got -5"),
		sdktest.Case("zero syncTimeout", map[string]any{"syncTimeout": "0s"}, "syncTimeout", "must be positive, got 0s"),
		sdktest.Case("zero inventoryWait", map[string]any{"inventoryWait": "0s"}, "inventoryWait", "must be positive, got 0s"),
		sdktest.Case("zero eventInterval", map[string]any{"eventInterval": "0s"}, "eventInterval", "must be positive, got 0s"),
		sdktest.Case("empty hubModule", map[string]any{"hubModule": ""}, "hubModule", "must name the module"),
	})
}
