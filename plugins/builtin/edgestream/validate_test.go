package edgestream_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/edgestream"
)

// TestBadSettingsFailValidationNamingFileAndKey proves each constraint on edgestream's settings is
// checked before anything starts (sdk.Validator, as `validate` and startup run it), reported as
// "<file>: modules.edgestream.<key>: <problem>". The defaults name no tunnel (edgestream is off by
// default), so a block that names one and the node's files is the good base each case changes.
func TestBadSettingsFailValidationNamingFileAndKey(t *testing.T) {
	base := map[string]any{"server": "cloud.example:10004", "caFile": "/var/lib/kedge/certs/ca.crt",
		"certFile": "/var/lib/kedge/certs/node.crt", "keyFile": "/var/lib/kedge/certs/node.key"}
	sdktest.ValidateSettingsOver(t, edgestream.Name, base, []sdktest.SettingCase{
		sdktest.Case("no server (the defaults)", map[string]any{"server": ""}, "server", "must be set"),
		sdktest.Case("server without port", map[string]any{"server": "cloud.example"}, "server", `"cloud.example": want host:port`),
		sdktest.Case("no caFile", map[string]any{"caFile": ""}, "caFile", "must be set"),
		sdktest.Case("no certFile", map[string]any{"certFile": ""}, "certFile", "must be set"),
		sdktest.Case("no keyFile", map[string]any{"keyFile": ""}, "keyFile", "must be set"),
		sdktest.Case("tcp criEndpoint", map[string]any{"criEndpoint": "tcp://127.0.0.1:3000"}, "criEndpoint", `"tcp://127.0.0.1:3000": want unix:///path/to.sock`),
		sdktest.Case("zero heartbeat", map[string]any{"heartbeat": "0s"}, "heartbeat", "must be positive, got 0s"),
		sdktest.Case("zero backoffMin", map[string]any{"backoffMin": "0s"}, "backoffMin", "must be positive, got 0s"),
		sdktest.Case("backoffMax below backoffMin", map[string]any{"backoffMin": "10s", "backoffMax": "1s"}, "backoffMax", "1s must not be below backoffMin 10s"),
		sdktest.Case("zero dialTimeout", map[string]any{"dialTimeout": "0s"}, "dialTimeout", "must be positive, got 0s"),
		sdktest.Case("zero logPoll", map[string]any{"logPoll": "0s"}, "logPoll", "must be positive, got 0s"),
	})
}
