package devicecontroller_test

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on devicecontroller's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.devicecontroller.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	info, ok := sdk.Lookup(devicecontroller.Name)
	if !ok {
		t.Fatal("devicecontroller is not registered")
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
		{"negative burst", map[string]any{"burst": -5}, "burst", "must be positive, got -5"},
		{"zero syncTimeout", map[string]any{"syncTimeout": "0s"}, "syncTimeout", "must be positive, got 0s"},
		{"zero inventoryWait", map[string]any{"inventoryWait": "0s"}, "inventoryWait", "must be positive, got 0s"},
		{"zero eventInterval", map[string]any{"eventInterval": "0s"}, "eventInterval", "must be positive, got 0s"},
		{"empty hubModule", map[string]any{"hubModule": ""}, "hubModule", "must name the module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := sdktest.Validate(t, info, tc.settings)
			want := path + ": modules." + devicecontroller.Name + "." + tc.key + ": " + tc.problem
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v\nwant an error containing %q", err, want)
			}
		})
	}
}
