package edgehub_test

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/edgehub"
	"github.com/kedge-io/kedge/sdk"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on edgehub's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.edgehub.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	info, ok := sdk.Lookup(edgehub.Name)
	if !ok {
		t.Fatal("edgehub is not registered")
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
		{"negative ackTimeout", map[string]any{"ackTimeout": "-1s"}, "ackTimeout", "must be positive, got -1s"},
		{"zero handleTimeout", map[string]any{"handleTimeout": "0s"}, "handleTimeout", "must be positive, got 0s"},
		{"backoffMax below backoffMin", map[string]any{"backoffMin": "10s", "backoffMax": "1s"}, "backoffMax", "1s must not be below backoffMin 10s"},
		{"lease too short", map[string]any{"leaseDuration": "2s"}, "leaseDuration", "want 0 (no Lease) or at least 4s"},
		{"quic without server", map[string]any{"quic": map[string]any{"enable": true}}, "quic.server", "must be the cloud"},
		{"inventory without metaManager", map[string]any{"metaManager": ""}, "metaManager", "must name the module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := sdktest.Validate(t, info, tc.settings)
			want := path + ": modules." + edgehub.Name + "." + tc.key + ": " + tc.problem
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v\nwant an error containing %q", err, want)
			}
		})
	}
}
