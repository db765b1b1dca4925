package edgecontroller_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on edgecontroller's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.edgecontroller.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, edgecontroller.Name, []sdktest.SettingCase{
		sdktest.Case("zero workers", map[string]any{"workers": 0}, "workers", "must be positive, got 0"),
		sdktest.Case("zero qps", map[string]any{"qps": 0}, "qps", "must be positive, got 0"),
		sdktest.Case("zero burst", map[string]any{"burst": 0}, "burst", "must be positive, got 0"),
		sdktest.Case("zero nodeGracePeriod", map[string]any{"nodeGracePeriod": "0s"}, "nodeGracePeriod", "must be positive, got 0s"),
		sdktest.Case("renewal not shorter than the lease", map[string]any{"leaseDuration": "10s", "leaseRenewInterval": "10s"}, "leaseRenewInterval", "10s must be shorter than leaseDuration 10s"),
		sdktest.Case("empty hubModule", map[string]any{"hubModule": ""}, "hubModule", "must name the module"),
		sdktest.Case("leader election renew past lease", map[string]any{"leaderElection": map[string]any{"enable": true, "leaseDuration": "5s", "renewDeadline": "6s", "retryPeriod": "1s"}}, "leaderElection.renewDeadline", "must be less than leaseDuration (5s), got 6s"),
	})
}
