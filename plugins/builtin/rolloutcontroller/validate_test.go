package rolloutcontroller_test

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/rolloutcontroller"
	"github.com/kedge-io/kedge/sdk"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on rolloutcontroller's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.rolloutcontroller.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	info, ok := sdk.Lookup(rolloutcontroller.Name)
	if !ok {
		t.Fatal("rolloutcontroller is not registered")
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
		{"zero syncTimeout", map[string]any{"syncTimeout": "0s"}, "syncTimeout", "must be positive, got 0s"},
		{"empty hubModule", map[string]any{"hubModule": ""}, "hubModule", "must name the module"},
		{"leader election retry past renew", map[string]any{"leaderElection": map[string]any{"enable": true, "retryPeriod": "20s"}}, "leaderElection.retryPeriod", "must be less than renewDeadline (10s), got 20s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := sdktest.Validate(t, info, tc.settings)
			want := path + ": modules." + rolloutcontroller.Name + "." + tc.key + ": " + tc.problem
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v\nwant an error containing %q", err, want)
			}
		})
	}
}
