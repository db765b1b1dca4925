package devicetwin_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk/message"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/payloads.golden.json from what devicetwin publishes")

// normalize replaces what changes from run to run — answer timestamps (ms now), generated event
// IDs, last_online (checked against KubeEdge's layout first) — by placeholders.
func normalize(t *testing.T, v any, key string) any {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(t, e, k)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(t, e, key)
		}
	case float64:
		if key == "timestamp" && x > 1.7e12 && x != 1700000000000 {
			return "<now ms>"
		}
	case string:
		switch {
		case key == "event_id" && !regexp.MustCompile(`^g-`).MatchString(x):
			return "<generated>"
		case key == "last_online" || key == "lastOnlineTime":
			if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(x) {
				t.Fatalf("%s %q is not KubeEdge v1.23.1's RFC 3339 in UTC (2026-12-06T05:46:13Z)", key, x)
			}
			return "<RFC 3339 UTC>"
		}
	}
	return v
}

// The MQTT payloads devicetwin publishes, field by field, against a golden file reviewed against
// KubeEdge's devicetwin (edge/pkg/devicetwin/dttype: Device, MsgTwin, TwinValue, TypeMetadata,
// DeviceTwinResult, DeviceTwinDocument, DeviceTwinDelta, MembershipUpdate, MembershipGetResult,
// DeviceMsg, Result; the README's "Payloads compared with KubeEdge" lists what differs and why). A
// change of any field name, nesting or format fails here; `go test -run Golden -update` rewrites
// the file for review.
func TestMQTTPayloadsMatchTheGoldenKubeEdgeShapes(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "1h"})
	r.addThermo(t, "thermo-1", "20") // desired target 20: document + delta from the cloud
	node := sdktest.NodeName
	got := map[string]any{}
	take := func(name, topic, want string) {
		t.Helper()
		got[name] = normalize(t, r.mapper.await(t, topic, want), "")
	}
	take("cloud desired: twin/update/document", doc, `"target"`)
	take("cloud desired: twin/update/delta", delta, `"delta"`)

	r.mapper.publish(t, upd, `{"event_id":"g-update","timestamp":1700000000000,"twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":1700000000000}}}}}`)
	take("twin/update/result", result, `"g-update"`)
	take("twin/update/document", doc, `"g-update"`)
	r.mapper.publish(t, upd, `{"event_id":"g-bad","twin":{"temperature":{"actual":{"value":"hot"}}}}`)
	take("twin/update/result (refused)", result, `"g-bad"`)
	r.mapper.publish(t, "$hw/events/device/thermo-1/twin/get", `{"event_id":"g-get"}`)
	take("twin/get/result", "$hw/events/device/thermo-1/twin/get/result", `"g-get"`)
	r.mapper.publish(t, "$hw/events/device/thermo-1/state/update", `{"event_id":"g-state","state":"online"}`)
	take("state/update/result", "$hw/events/device/thermo-1/state/update/result", `"g-state"`)
	r.send(t, message.OpUpdate, "default/membership/"+node, "", map[string]any{"devices": []map[string]string{{"namespace": "default", "name": "thermo-1"}}})
	take("membership/updated", "$hw/events/node/"+node+"/membership/updated", `"added_devices"`)
	r.mapper.publish(t, "$hw/events/node/"+node+"/membership/get", `{"event_id":"g-members"}`)
	take("membership/get/result", "$hw/events/node/"+node+"/membership/get/result", `"g-members"`)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // map keys sorted: a stable file
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(got); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	file := filepath.Join("testdata", "payloads.golden.json")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (create it with -update and review it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("devicetwin's MQTT payloads differ from %s (review, then -update if intended):\n--- got\n%s", file, b)
	}
}
