package rolloutcontroller_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/rolloutcontroller"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on rolloutcontroller's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.rolloutcontroller.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, rolloutcontroller.Name, []sdktest.SettingCase{
		sdktest.Case("zero workers", map[string]any{"workers": 0}, "workers", "must be positive, got 0"),
		sdktest.Case("zero qps", map[string]any{"qps": 0}, "qps", "must be positive, got 0"),
		sdktest.Case("zero burst", map[string]any{"burst": 0}, "burst", "must be positive, got 0"),
		sdktest.Case("zero syncTimeout", map[string]any{"syncTimeout": "0s"}, "syncTimeout", "must be positive, got 0s"),
		sdktest.Case("empty hubModule", map[string]any{"hubModule": ""}, "hubModule", "must name the module"),
		sdktest.Case("leader election retry past renew", map[string]any{"leaderElection": map[string]any{"enable": true, "retryPeriod": "20s"}}, "leaderElection.retryPeriod", "must be less than renewDeadline (10s), got 20s"),
	})
}
