package edged_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/edged"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on edged's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.edged.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, edged.Name, []sdktest.SettingCase{
		sdktest.Case("tcp criEndpoint", map[string]any{"criEndpoint": "tcp://127.0.0.1:3000"}, "criEndpoint", `"tcp://127.0.0.1:3000": want unix:///path/to.sock or an absolute socket path`),
		sdktest.Case("relative criEndpoint", map[string]any{"criEndpoint": "run/containerd.sock"}, "criEndpoint", `"run/containerd.sock": want unix:///path/to.sock`),
		sdktest.Case("zero syncPeriod", map[string]any{"syncPeriod": "0s"}, "syncPeriod", "must be positive, got 0s"),
		sdktest.Case("negative statusPeriod", map[string]any{"statusPeriod": "-1s"}, "statusPeriod", "must be positive, got -1s"),
		sdktest.Case("zero queryTimeout", map[string]any{"queryTimeout": "0s"}, "queryTimeout", "must be positive, got 0s"),
		sdktest.Case("zero probeTimeUnit", map[string]any{"probeTimeUnit": "0s"}, "probeTimeUnit", "must be positive, got 0s"),
		sdktest.Case("zero backoff.base", map[string]any{"backoff": map[string]any{"base": "0s"}}, "backoff.base", "must be positive, got 0s"),
		sdktest.Case("zero backoff.resetAfter", map[string]any{"backoff": map[string]any{"resetAfter": "0s"}}, "backoff.resetAfter", "must be positive, got 0s"),
		sdktest.Case("backoff.max below base", map[string]any{"backoff": map[string]any{"base": "1m", "max": "10s"}}, "backoff.max", "10s is below backoff.base 1m0s"),
		sdktest.Case("zero images.pullTimeout", map[string]any{"images": map[string]any{"pullTimeout": "0s"}}, "images.pullTimeout", "must be positive, got 0s"),
		sdktest.Case("relative rootDir", map[string]any{"rootDir": "var/lib/kedge/edged"}, "rootDir", `"var/lib/kedge/edged": must be an absolute path`),
		sdktest.Case("empty rootDir", map[string]any{"rootDir": ""}, "rootDir", `"": must be an absolute path`),
		sdktest.Case("empty podSandboxImage", map[string]any{"podSandboxImage": ""}, "podSandboxImage", "must not be empty"),
		sdktest.Case("nodeIP not an IP", map[string]any{"nodeIP": "edge-1"}, "nodeIP", `"edge-1" is not an IP address`),
		sdktest.Case("empty metaManager", map[string]any{"metaManager": ""}, "metaManager", "must name the module"),
	})
}
