package servicebus_test

import (
	"fmt"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/servicebus"
	"github.com/kedge-io/kedge/sdk/message"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on servicebus's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.servicebus.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	limit := fmt.Sprintf("must be in 1..%d", message.MaxSize/2)
	sdktest.ValidateSettings(t, servicebus.Name, []sdktest.SettingCase{
		sdktest.Case("a port out of range", map[string]any{"allowedPorts": []int{8080, 0}}, "allowedPorts[1]", "0 is not a TCP port (1..65535)"),
		sdktest.Case("a port above 65535", map[string]any{"allowedPorts": []int{70000}}, "allowedPorts[0]", "70000 is not a TCP port"),
		sdktest.Case("a zero timeout", map[string]any{"timeout": "0s"}, "timeout", "must be positive, got 0s"),
		sdktest.Case("a zero size limit", map[string]any{"maxResponseBytes": 0}, "maxResponseBytes", limit+", got 0"),
		sdktest.Case("a size limit beyond the hub's message", map[string]any{"maxResponseBytes": message.MaxSize}, "maxResponseBytes", limit),
		sdktest.Case("a negative clock skew", map[string]any{"maxClockSkew": "-1s"}, "maxClockSkew", "must not be negative, got -1s"),
		sdktest.Case("zero concurrency", map[string]any{"concurrency": 0}, "concurrency", "must be positive, got 0"),
	})
}
