package devicetwin_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on devicetwin's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.devicetwin.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, devicetwin.Name, []sdktest.SettingCase{
		sdktest.Case("zero flushInterval", map[string]any{"flushInterval": "0s"}, "flushInterval", "must be positive, got 0s"),
		sdktest.Case("negative resyncTimeout", map[string]any{"resyncTimeout": "-1s"}, "resyncTimeout", "must be positive, got -1s"),
		sdktest.Case("empty eventBus", map[string]any{"eventBus": ""}, "eventBus", "must name the module that publishes to MQTT"),
		sdktest.Case("empty metaManager", map[string]any{"metaManager": ""}, "metaManager", "must name the module device status is sent to"),
	})
}
