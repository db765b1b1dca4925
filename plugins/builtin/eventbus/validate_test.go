package eventbus_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/eventbus"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on eventbus's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.eventbus.<key>: <problem>", and that the defaults pass.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	sdktest.ValidateSettings(t, eventbus.Name, []sdktest.SettingCase{
		sdktest.Case("unknown mqttMode", map[string]any{"mqttMode": "cloud"}, "mqttMode", `"cloud": want internal, external or both`),
		sdktest.Case("internalAddress without port", map[string]any{"internalAddress": "127.0.0.1"}, "internalAddress", `"127.0.0.1" is not host:port`),
		sdktest.Case("externalURL not tcp", map[string]any{"mqttMode": "external", "externalURL": "http://broker:1883"}, "externalURL", `"http://broker:1883": want tcp://host:port`),
		sdktest.Case("externalURL without host", map[string]any{"mqttMode": "both", "externalURL": "tcp://"}, "externalURL", `"tcp://": want tcp://host:port`),
		sdktest.Case("no topics", map[string]any{"topics": []string{}}, "topics", "at least one topic filter is needed"),
		sdktest.Case("# not last", map[string]any{"topics": []string{"a/#", "a/#/b"}}, "topics[1]", `topic filter "a/#/b": # must be the last level`),
		sdktest.Case("partial wildcard in userTopics", map[string]any{"userTopics": []string{"x/user+"}}, "userTopics[0]", `topic filter "x/user+": a wildcard must fill a whole level`),
		sdktest.Case("empty userTopic", map[string]any{"userTopics": []string{""}}, "userTopics[0]", "topic filter is empty"),
		sdktest.Case("zero keepAlive", map[string]any{"keepAlive": "0s"}, "keepAlive", "must be positive, got 0s"),
		sdktest.Case("negative connectTimeout", map[string]any{"connectTimeout": "-1s"}, "connectTimeout", "must be positive, got -1s"),
		sdktest.Case("zero maxReconnectInterval", map[string]any{"maxReconnectInterval": "0s"}, "maxReconnectInterval", "must be positive"),
		sdktest.Case("zero writeTimeout", map[string]any{"writeTimeout": "0s"}, "writeTimeout", "must be positive"),
		sdktest.Case("zero sendTimeout", map[string]any{"sendTimeout": "0s"}, "sendTimeout", "must be positive"),
		sdktest.Case("zero ackTimeout", map[string]any{"ackTimeout": "0s"}, "ackTimeout", "must be positive"),
		sdktest.Case("empty twinModule", map[string]any{"twinModule": ""}, "twinModule", "must name the module"),
		sdktest.Case("certFile without keyFile", map[string]any{"broker": map[string]any{"certFile": "/etc/kedge/mqtt.crt"}}, "broker.keyFile", `"" with broker.certFile "/etc/kedge/mqtt.crt": set both for TLS, or neither`),
		sdktest.Case("clientCAFile without TLS", map[string]any{"broker": map[string]any{"clientCAFile": "/etc/kedge/ca.crt"}}, "broker.clientCAFile", `"/etc/kedge/ca.crt" needs broker.certFile and broker.keyFile`),
	})
}
