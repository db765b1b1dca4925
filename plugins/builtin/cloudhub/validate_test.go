package cloudhub_test

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/sdk"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on cloudhub's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.cloudhub.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	info, ok := sdk.Lookup(cloudhub.Name)
	if !ok {
		t.Fatal("cloudhub is not registered")
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
		{"zero window", map[string]any{"window": 0}, "window", "must be positive, got 0"},
		{"zero heartbeat", map[string]any{"heartbeat": "0s"}, "heartbeat", "must be positive, got 0s"},
		{"zero qps", map[string]any{"qps": 0}, "qps", "must be positive, got 0"},
		{"negative burst", map[string]any{"burst": -1}, "burst", "must be positive, got -1"},
		{"zero maxHandshakes", map[string]any{"maxHandshakes": 0}, "maxHandshakes", "must be positive, got 0"},
		{"zero recordCacheTTL", map[string]any{"recordCacheTTL": "0s"}, "recordCacheTTL", "must be positive, got 0s"},
		{"bad node pattern", map[string]any{"kubeedgeNodes": []any{"ke-["}}, "kubeedgeNodes", `"ke-[" is not a valid name pattern`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := sdktest.Validate(t, info, tc.settings)
			want := path + ": modules." + cloudhub.Name + "." + tc.key + ": " + tc.problem
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v\nwant an error containing %q", err, want)
			}
		})
	}
}
