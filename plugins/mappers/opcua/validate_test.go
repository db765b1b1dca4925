package opcua_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/mappers/opcua"
)

// TestBadSettingsFailValidationNamingFileAndKey proves the mapper runtime's settings (sdk/mapper's
// Validate, shared by every mapper) are checked for opcua before anything starts, as `validate` and
// startup run it, reported as "<file>: modules.opcua.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, opcua.Name, []sdktest.SettingCase{
		sdktest.Case("empty protocol", map[string]any{"protocol": " "}, "protocol", "must not be empty"),
		sdktest.Case("relative dmiSocket", map[string]any{"dmiSocket": "dmi.sock"}, "dmiSocket", `"dmi.sock" is not an absolute path`),
		sdktest.Case("relative socket", map[string]any{"socket": "m.sock"}, "socket", `"m.sock" is not an absolute path`),
		sdktest.Case("zero callTimeout", map[string]any{"callTimeout": "0s"}, "callTimeout", "must be positive, got 0s"),
		sdktest.Case("zero collectCycle", map[string]any{"collectCycle": "0s"}, "collectCycle", "must be positive, got 0s"),
		sdktest.Case("negative healthCycle", map[string]any{"healthCycle": "-1s"}, "healthCycle", "must be positive, got -1s"),
		sdktest.Case("zero backoffMin", map[string]any{"backoffMin": "0s"}, "backoffMin", "must be positive, got 0s"),
		sdktest.Case("backoffMax below backoffMin", map[string]any{"backoffMin": "2s", "backoffMax": "1s"}, "backoffMax", "1s is below backoffMin 2s"),
		sdktest.Case("negative reportCycle", map[string]any{"reportCycle": "-1s"}, "reportCycle", "must not be negative, got -1s"),
		sdktest.Case("zero pushQueue", map[string]any{"pushQueue": 0}, "pushQueue", "must be positive, got 0"),
	})
}
