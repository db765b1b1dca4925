package edgecontroller_test

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on edgecontroller's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.edgecontroller.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	info, ok := sdk.Lookup(edgecontroller.Name)
	if !ok {
		t.Fatal("edgecontroller is not registered")
	}
	if _, err := sdktest.Validate(t, info, nil); err != nil {
		t.Fatalf("the defaults are refused: %v", err)
	}
	for _, tc := range []struct {
		name     string
		settings map[string]any
		key      string
		problem  string
	}{
		{"zero workers", map[string]any{"workers": 0}, "workers", "must be positive, got 0"},
		{"zero qps", map[string]any{"qps": 0}, "qps", "must be positive, got 0"},
		{"zero burst", map[string]any{"burst": 0}, "burst", "must be positive, got 0"},
		{"zero nodeGracePeriod", map[string]any{"nodeGracePeriod": "0s"}, "nodeGracePeriod", "must be positive, got 0s"},
		{"renewal not shorter than the lease", map[string]any{"leaseDuration": "10s", "leaseRenewInterval": "10s"}, "leaseRenewInterval", "10s must be shorter than leaseDuration 10s"},
		{"empty hubModule", map[string]any{"hubModule": ""}, "hubModule", "must name the module"},
		{"leader election renew past lease", map[string]any{"leaderElection": map[string]any{"enable": true, "leaseDuration": "5s", "renewDeadline": "6s", "retryPeriod": "1s"}}, "leaderElection.renewDeadline", "must be less than leaseDuration (5s), got 6s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := sdktest.Validate(t, info, tc.settings)
			want := path + ": modules." + edgecontroller.Name + "." + tc.key + ": " + tc.problem
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v\nwant an error containing %q", err, want)
			}
		})
	}
}
