package nodestatus_test

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/nodestatus"
	"github.com/kedge-io/kedge/sdk"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on nodestatus's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.nodestatus.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	info, ok := sdk.Lookup(nodestatus.Name)
	if !ok {
		t.Fatal("nodestatus is not registered")
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
		{"interval below 1s", map[string]any{"interval": "500ms"}, "interval", "must be at least 1s, got 500ms"},
		{"negative maxPods", map[string]any{"maxPods": -1}, "maxPods", "must not be negative, got -1"},
		{"empty storagePath", map[string]any{"storagePath": ""}, "storagePath", "must not be empty"},
		{"empty metaManager", map[string]any{"metaManager": ""}, "metaManager", "must name the module"},
		{"reserved cpu not a quantity", map[string]any{"systemReserved": map[string]any{"cpu": "lots"}}, "systemReserved.cpu", `value "lots" is not a quantity`},
		{"threshold over 100%", map[string]any{"pressure": map[string]any{"diskAvailable": "120%"}}, "pressure.diskAvailable", `value "120%" is not a percentage`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := sdktest.Validate(t, info, tc.settings)
			want := path + ": modules." + nodestatus.Name + "." + tc.key + ": " + tc.problem
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v\nwant an error containing %q", err, want)
			}
		})
	}
}
