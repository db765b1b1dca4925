package virtual_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/mappers/virtual"
)

// TestBadSettingsFailValidationNamingFileAndKey proves virtual checks its settings with the mapper
// runtime's shared Validate (sdk/mapper) before anything starts, as `validate` and startup run it,
// reported as "<file>: modules.virtual.<key>: <problem>", and that the defaults pass. The whole table of
// the shared checks runs once, for modbus (plugins/mappers/modbus/validate_test.go).
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, virtual.Name, []sdktest.SettingCase{
		sdktest.Case("relative dmiSocket", map[string]any{"dmiSocket": "dmi.sock"}, "dmiSocket", `"dmi.sock" is not an absolute path`),
		sdktest.Case("backoffMax below backoffMin", map[string]any{"backoffMin": "2s", "backoffMax": "1s"}, "backoffMax", "1s is below backoffMin 2s"),
	})
}
