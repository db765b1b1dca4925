package edgehub

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/sdk/message"
)

// goldenUp returns the message KubeEdge v1.23.1's edgecore sent its cloudcore on a resource ending in
// suffix (devicecontroller/testdata/kubeedge-v1.23.1-device-flow.json, recorded between the real
// binaries).
func goldenUp(t *testing.T, suffix string) message.Message {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "devicecontroller", "testdata", "kubeedge-v1.23.1-device-flow.json"))
	if err != nil {
		t.Fatal(err)
	}
	var frames []struct {
		Dir string          `json:"dir"`
		Msg json.RawMessage `json:"msg"`
	}
	if err := json.Unmarshal(b, &frames); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		m, err := hub.UnmarshalJSONLane(f.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if f.Dir == "up" && strings.HasSuffix(m.Route.Resource, suffix) {
			return m
		}
	}
	t.Fatalf("no upstream %s in the golden flow", suffix)
	return message.Message{}
}

// shape lists a JSON value's key paths (array elements merged), leaving out keys under skip.
func shape(t *testing.T, raw []byte, skip ...string) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	var walk func(string, any)
	walk = func(p string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				skipped := false
				for _, s := range skip {
					skipped = skipped || k == s
				}
				if !skipped {
					set[p+"."+k] = true
					walk(p+"."+k, e)
				}
			}
		case []any:
			for _, e := range x {
				walk(p+"[]", e)
			}
		}
	}
	walk("", v)
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestDeviceStatusReportBecomesKubeEdgesTwinEdgeUpdatedAndStateUpdateAsTheGoldenFlowHasThem(t *testing.T) {
	report := message.New("devicetwin", "twin", message.OpUpdate, "ke-pair/devicestatus/thermometer-1")
	report.Header.Sync = true
	report.Content = json.RawMessage(`{"twins":[{"propertyName":"temperature","reported":{"value":"23.25","metadata":{"timestamp":"1796535198375","type":"float"}}}],
		"state":"online","lastOnlineTime":"2026-12-06 05:33:18","condition":{"type":"Healthy","status":"True","reason":"ReadingsAccepted"}}`)
	outs, err := newKubeEdgeCloud("n1").translateAll(report, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 {
		t.Fatalf("%d messages, want twin/edge_updated and state/update", len(outs))
	}
	if outs[0].Header.ID != report.Header.ID || !outs[0].Header.Sync || outs[1].Header.Sync {
		t.Errorf("the first message keeps the report's ID and sync flag (an answer reaches its sender), the second is its own: %+v %+v", outs[0].Header, outs[1].Header)
	}
	for i, suffix := range []string{"/twin/edge_updated", "/state/update"} {
		g, got := goldenUp(t, suffix), outs[i]
		if got.Route.Group != g.Route.Group || got.Route.Source != g.Route.Source || got.Route.Operation != g.Route.Operation || got.Route.Resource != g.Route.Resource {
			t.Errorf("%s: route %+v, golden %+v", suffix, got.Route, g.Route)
		}
		// KubeEdge's edge also sends the twin's version counters; its cloud reads none of them.
		if a, b := shape(t, got.Content, "actual_version", "expected_version"), shape(t, g.Content, "actual_version", "expected_version"); !reflect.DeepEqual(a, b) {
			t.Errorf("%s: content shape %v, golden %v", suffix, a, b)
		}
	}
	var su keStateUpdate
	if err := json.Unmarshal(outs[1].Content, &su); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 12, 6, 5, 33, 18, 0, time.Local).UTC().Format(time.RFC3339); su.Device.State != "online" || su.Device.Name != "thermometer-1" || su.Device.LastOnlineTime != want {
		t.Fatalf("state update %+v, want online, thermometer-1, %s (RFC 3339, as KubeEdge's edge sends it)", su.Device, want)
	}
	var up keTwinUpdate
	if err := json.Unmarshal(outs[0].Content, &up); err != nil {
		t.Fatal(err)
	}
	if tw := up.Twin["temperature"]; tw == nil || *tw.Actual.Value != "23.25" || tw.Actual.Metadata.Timestamp != 1796535198375 || tw.Metadata.Type != "float" {
		t.Fatalf("twin %+v", up.Twin["temperature"])
	}
}

func TestDeviceStatusReportOfOnlyAConditionSendsNothingToKubeEdgeAndABadOneIsRefusedNamingIt(t *testing.T) {
	only := message.New("devicetwin", "twin", message.OpUpdate, "ns/devicestatus/d")
	only.Content = json.RawMessage(`{"condition":{"type":"Healthy","status":"False","reason":"ReadingRefused"}}`)
	if outs, err := newKubeEdgeCloud("n1").translateAll(only, time.Now()); err != nil || len(outs) != 0 {
		t.Fatalf("%d messages, %v: a condition has no place in KubeEdge's messages", len(outs), err)
	}
	bad := message.New("devicetwin", "twin", message.OpUpdate, "ns/devicestatus/d")
	bad.Content = json.RawMessage(`{"twins":[{"propertyName":"t","reported":{"value":"1","metadata":{"timestamp":"soon"}}}]}`)
	if _, err := newKubeEdgeCloud("n1").translateAll(bad, time.Now()); err == nil || !strings.Contains(err.Error(), `timestamp "soon"`) {
		t.Fatalf("err %v, want the bad timestamp named", err)
	}
}
