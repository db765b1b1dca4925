package cloudstream_test

import (
	"maps"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/cloudstream"
	"github.com/kedge-io/kedge/sdk"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on cloudstream's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.cloudstream.<key>: <problem>". The defaults carry no clientCAFile, which an enabled
// cloudstream refuses (the stream server would serve every edge pod to anyone); with one they pass,
// and so do the optional parts (caSecret, forward, metricsAPI) switched on with their defaults.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	info, ok := sdk.Lookup(cloudstream.Name)
	if !ok {
		t.Fatal("cloudstream is not registered")
	}
	base := map[string]any{"clientCAFile": "/etc/kubernetes/pki/ca.crt"}
	for _, extra := range []map[string]any{nil,
		{"caSecret": map[string]any{"enable": true}, "forward": map[string]any{"enable": true}, "metricsAPI": map[string]any{"enable": true}},
		{"clientCAFile": "", "insecureAllowUnauthenticated": true}} {
		settings := maps.Clone(base)
		maps.Copy(settings, extra)
		if _, err := sdktest.Validate(t, info, settings); err != nil {
			t.Fatalf("the defaults with %v are refused: %v", settings, err)
		}
	}
	on := func(block string, kv ...any) map[string]any {
		m := map[string]any{"enable": true}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return map[string]any{block: m}
	}
	sdktest.ValidateSettingsOver(t, cloudstream.Name, base, []sdktest.SettingCase{
		sdktest.Case("defaults without clientCAFile", map[string]any{"clientCAFile": ""}, "clientCAFile", "no client authentication for the stream server"),
		sdktest.Case("zero sessionTimeout", map[string]any{"sessionTimeout": "0s"}, "sessionTimeout", "must be positive, got 0s"),
		sdktest.Case("negative heartbeat", map[string]any{"heartbeat": "-1s"}, "heartbeat", "must be positive, got -1s"),
		sdktest.Case("advertisePort out of range", map[string]any{"advertisePort": 70000}, "advertisePort", "must be in 0..65535, got 70000"),
		sdktest.Case("an empty allowed name", map[string]any{"clientAllowedNames": []any{"a", ""}}, "clientAllowedNames[1]", "is empty"),
		sdktest.Case("caSecret without a name", on("caSecret", "name", ""), "caSecret.name", "must be set when caSecret is enabled"),
		sdktest.Case("caSecret without a namespace", on("caSecret", "namespace", ""), "caSecret.namespace", "must be set when caSecret is enabled"),
		sdktest.Case("forward with a zero dialTimeout", on("forward", "dialTimeout", "0s"), "forward.dialTimeout", "must be positive, got 0s"),
		sdktest.Case("metricsAPI with a zero scrapeInterval", on("metricsAPI", "scrapeInterval", "0s"), "metricsAPI.scrapeInterval", "must be positive, got 0s"),
		sdktest.Case("metricsAPI with a zero scrapeTimeout", on("metricsAPI", "scrapeTimeout", "0s"), "metricsAPI.scrapeTimeout", "must be positive, got 0s"),
		sdktest.Case("metricsAPI with a zero authRefresh", on("metricsAPI", "authRefresh", "0s"), "metricsAPI.authRefresh", "must be positive, got 0s"),
		sdktest.Case("metricsAPI with zero concurrency", on("metricsAPI", "concurrency", 0), "metricsAPI.concurrency", "must be positive, got 0"),
		sdktest.Case("metricsAPI without a serviceName", on("metricsAPI", "serviceName", ""), "metricsAPI.serviceName", "must name the APIService's Service"),
		sdktest.Case("metricsAPI without a serviceNamespace", on("metricsAPI", "serviceNamespace", ""), "metricsAPI.serviceNamespace", "must name the namespace"),
	})
}
