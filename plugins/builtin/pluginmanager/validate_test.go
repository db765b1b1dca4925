package pluginmanager_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/pluginmanager"
	"github.com/kedge-io/kedge/sdk"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on pluginmanager's settings
// is checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.pluginmanager.<key>: <problem>". The defaults name no registry (pluginmanager is
// off by default), so a block that names one is the good base each case changes.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	info, ok := sdk.Lookup(pluginmanager.Name)
	if !ok {
		t.Fatal("pluginmanager is not registered")
	}
	base := map[string]any{"registryURL": "https://127.0.0.1:10002/registry", "trustedKeys": []string{"/etc/kedge/registry.pub"}}
	sdktest.ValidateSettingsOver(t, pluginmanager.Name, base, []sdktest.SettingCase{
		sdktest.Case("no registryURL (the defaults)", map[string]any{"registryURL": ""}, "registryURL", "must be set"),
		sdktest.Case("no trustedKeys", map[string]any{"trustedKeys": []string{}}, "trustedKeys", "must name at least one registry public key file"),
		sdktest.Case("an empty trustedKeys entry", map[string]any{"trustedKeys": []string{"/etc/kedge/registry.pub", ""}}, "trustedKeys", "entry 1 is empty"),
		sdktest.Case("empty pluginsDir", map[string]any{"pluginsDir": ""}, "pluginsDir", "must be set"),
		sdktest.Case("empty hub", map[string]any{"hub": ""}, "hub", "must name the module"),
		sdktest.Case("zero swapTimeout", map[string]any{"swapTimeout": "0s"}, "swapTimeout", "must be positive, got 0s"),
		sdktest.Case("zero healthTimeout", map[string]any{"healthTimeout": "0s"}, "healthTimeout", "must be positive, got 0s"),
		sdktest.Case("negative healthStable", map[string]any{"healthStable": "-1s"}, "healthStable", "must be positive, got -1s"),
		sdktest.Case("zero fetchTimeout", map[string]any{"fetchTimeout": "0s"}, "fetchTimeout", "must be positive, got 0s"),
		sdktest.Case("healthStable not below healthTimeout", map[string]any{"healthStable": "30s", "healthTimeout": "30s"}, "healthStable", "30s must be shorter than healthTimeout 30s"),
		sdktest.Case("negative inventory.interval", map[string]any{"inventory": map[string]any{"interval": "-1m"}}, "inventory.interval", "must be positive (0: no report), got -1m0s"),
		sdktest.Case("inventory.check below 1s", map[string]any{"inventory": map[string]any{"check": "100ms"}}, "inventory.check", "must be at least 1s, got 100ms"),
		sdktest.Case("inventory.check longer than interval", map[string]any{"inventory": map[string]any{"interval": "1m", "check": "2m"}}, "inventory.check", "2m0s must not be longer than inventory.interval 1m0s"),
		sdktest.Case("https registry without caFile", map[string]any{"caFile": ""}, "caFile", "must be set for an https registryURL"),
		sdktest.Case("https registry without keyFile", map[string]any{"keyFile": ""}, "keyFile", "must be set for an https registryURL"),
	})
	// An http registry needs no certificate files.
	if _, err := sdktest.Validate(t, info, map[string]any{"registryURL": "http://127.0.0.1:10002/registry", "trustedKeys": []string{"/k.pub"},
		"caFile": "", "certFile": "", "keyFile": ""}); err != nil {
		t.Fatalf("an http registry without certificate files is refused: %v", err)
	}
}
