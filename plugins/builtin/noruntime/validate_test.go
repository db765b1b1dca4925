package noruntime_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/noruntime"
)

// TestBadSettingsFailValidationNamingFileAndKey proves noruntime's setting is checked before
// anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.noruntime.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, noruntime.Name, []sdktest.SettingCase{
		sdktest.Case("empty metaManager", map[string]any{"metaManager": ""}, "metaManager", "must name the module pod status and deletion confirmations are sent to"),
	})
}
