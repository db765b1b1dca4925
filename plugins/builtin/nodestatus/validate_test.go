package nodestatus_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/nodestatus"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on nodestatus's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.nodestatus.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, nodestatus.Name, []sdktest.SettingCase{
		sdktest.Case("interval below 1s", map[string]any{"interval": "500ms"}, "interval", "must be at least 1s, got 500ms"),
		sdktest.Case("negative maxPods", map[string]any{"maxPods": -1}, "maxPods", "must not be negative, got -1"),
		sdktest.Case("empty storagePath", map[string]any{"storagePath": ""}, "storagePath", "must not be empty"),
		sdktest.Case("empty metaManager", map[string]any{"metaManager": ""}, "metaManager", "must name the module"),
		sdktest.Case("reserved cpu not a quantity", map[string]any{"systemReserved": map[string]any{"cpu": "lots"}}, "systemReserved.cpu", `value "lots" is not a quantity`),
		sdktest.Case("threshold over 100%", map[string]any{"pressure": map[string]any{"diskAvailable": "120%"}}, "pressure.diskAvailable", `value "120%" is not a percentage`),
	})
}
