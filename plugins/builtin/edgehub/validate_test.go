package edgehub_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/edgehub"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on edgehub's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.edgehub.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, edgehub.Name, []sdktest.SettingCase{
		sdktest.Case("zero window", map[string]any{"window": 0}, "window", "must be positive, got 0"),
		sdktest.Case("zero heartbeat", map[string]any{"heartbeat": "0s"}, "heartbeat", "must be positive, got 0s"),
		sdktest.Case("negative ackTimeout", map[string]any{"ackTimeout": "-1s"}, "ackTimeout", "must be positive, got -1s"),
		sdktest.Case("zero handleTimeout", map[string]any{"handleTimeout": "0s"}, "handleTimeout", "must be positive, got 0s"),
		sdktest.Case("backoffMax below backoffMin", map[string]any{"backoffMin": "10s", "backoffMax": "1s"}, "backoffMax", "1s must not be below backoffMin 10s"),
		sdktest.Case("lease too short", map[string]any{"leaseDuration": "2s"}, "leaseDuration", "want 0 (no Lease) or at least 4s"),
		sdktest.Case("quic without server", map[string]any{"quic": map[string]any{"enable": true}}, "quic.server", "must be the cloud"),
		sdktest.Case("inventory without metaManager", map[string]any{"metaManager": ""}, "metaManager", "must name the module"),
	})
}
