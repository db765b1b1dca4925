package dmi_test

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on dmi's settings is checked
// before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.dmi.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	long := "/var/lib/kedge/" + strings.Repeat("d", 100) + ".sock"
	sdktest.ValidateSettings(t, dmi.Name, []sdktest.SettingCase{
		sdktest.Case("empty socket", map[string]any{"socket": ""}, "socket", "must not be empty"),
		sdktest.Case("socket path too long", map[string]any{"socket": long}, "socket", `"`+long+`": 120 bytes is longer than a unix socket path may be (107)`),
		sdktest.Case("zero qps", map[string]any{"qps": 0}, "qps", "must be positive, got 0"),
		sdktest.Case("negative burst", map[string]any{"burst": -1}, "burst", "must be positive, got -1"),
		sdktest.Case("zero reconcileInterval", map[string]any{"reconcileInterval": "0s"}, "reconcileInterval", "must be positive, got 0s"),
		sdktest.Case("zero callTimeout", map[string]any{"callTimeout": "0s"}, "callTimeout", "must be positive, got 0s"),
		sdktest.Case("empty deviceTwin", map[string]any{"deviceTwin": ""}, "deviceTwin", "must name the module"),
		sdktest.Case("empty metaManager", map[string]any{"metaManager": ""}, "metaManager", "must name the module"),
	})
}
