package devicecontroller

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
)

// goldenFrame is one message of testdata/kubeedge-v1.23.1-device-flow.json: what KubeEdge v1.23.1's
// cloudcore and edgecore sent each other (recorded by the e2e test
// TestCaptureKubeEdgeDeviceMessagesBetweenUpstreamCloudcoreAndEdgecore with KEDGE_CAPTURE_GOLDEN=1).
type goldenFrame struct {
	Dir string          `json:"dir"`
	Msg json.RawMessage `json:"msg"`
}

// golden returns the recorded messages whose resource ends with suffix, decoded as KubeEdge's
// websocket lane decodes them (a string content stands for its text).
func golden(t *testing.T, dir, suffix string) []message.Message {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "kubeedge-v1.23.1-device-flow.json"))
	if err != nil {
		t.Fatal(err)
	}
	var frames []goldenFrame
	if err := json.Unmarshal(b, &frames); err != nil {
		t.Fatal(err)
	}
	var out []message.Message
	for _, f := range frames {
		if f.Dir != dir {
			continue
		}
		m, err := hub.UnmarshalJSONLane(f.Msg)
		if err != nil {
			t.Fatalf("golden frame: %v", err)
		}
		if strings.HasSuffix(m.Route.Resource, suffix) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s message on %s in the golden flow", dir, suffix)
	}
	return out
}

func thermometer() *v1beta1.Device {
	return &v1beta1.Device{ObjectMeta: metav1.ObjectMeta{Namespace: "ke-pair", Name: "thermometer-1"},
		Spec: v1beta1.DeviceSpec{Properties: []v1beta1.DeviceProperty{{Name: "temperature"}, {Name: "setpoint"}}}}
}

func TestKubeEdgeTwinEdgeUpdatedFromTheGoldenFlowBecomesAReportedValueWithItsTimestampAndType(t *testing.T) {
	msgs := golden(t, "up", "/twin/edge_updated")
	if r := msgs[0].Route; r.Group != "resource" || r.Source != "twin" || r.Operation != "update" || r.Resource != "device/ke-pair/thermometer-1/twin/edge_updated" {
		t.Fatalf("golden route %+v: the shape this decoder assumes changed", r)
	}
	rep, dropped, err := ReportFromKubeEdgeTwin(msgs[0].Content, thermometer())
	if err != nil || len(dropped) != 0 {
		t.Fatalf("ReportFromKubeEdgeTwin: %v (dropped %v)", err, dropped)
	}
	want := []v1beta1.Twin{{PropertyName: "temperature", Reported: v1beta1.TwinProperty{Value: "23.25",
		Metadata: map[string]string{"timestamp": "1796535198375", "type": "float"}}}}
	if !reflect.DeepEqual(rep.Twins, want) {
		t.Fatalf("report twins %+v, want %+v", rep.Twins, want)
	}
	// What the report becomes in Device.status passes Kedge's own checks.
	raw, _ := json.Marshal(rep)
	if _, err := decodeReport(raw, thermometer()); err != nil {
		t.Fatalf("converted report refused: %v", err)
	}
}

func TestKubeEdgeStateUpdateFromTheGoldenFlowBecomesTheDeviceState(t *testing.T) {
	msgs := golden(t, "up", "/state/update")
	rep, err := ReportFromKubeEdgeState(msgs[0].Content)
	if err != nil {
		t.Fatal(err)
	}
	if rep.State != "online" || rep.LastOnlineTime != "2026-12-06T05:33:18Z" {
		t.Fatalf("state %q lastOnlineTime %q, want online 2026-12-06T05:33:18Z", rep.State, rep.LastOnlineTime)
	}
	if _, err := parseOnline(rep.LastOnlineTime); err != nil {
		t.Fatalf("lastOnlineTime: %v", err)
	}
}

// jsonShape lists the key paths of a JSON value (array elements merged), the "shape" two encoders
// must share.
func jsonShape(prefix string, v any, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			out[prefix+"."+k] = true
			jsonShape(prefix+"."+k, e, out)
		}
	case []any:
		for _, e := range x {
			jsonShape(prefix+"[]", e, out)
		}
	}
}

func shapeOf(t *testing.T, raw []byte) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	jsonShape("", v, set)
	var keys []string
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestKubeEdgeMembershipUpdatesMatchTheGoldenFlowForAnAddedAndARemovedDevice(t *testing.T) {
	msgs := golden(t, "down", "membership")
	if len(msgs) != 2 {
		t.Fatalf("%d membership updates in the golden flow, want 2 (added, removed)", len(msgs))
	}
	dev := Membership{Devices: []MemberRef{{Namespace: "ke-pair", Name: "thermometer-1"}}}
	now := time.Now()
	for i, c := range []struct{ prev, cur Membership }{{Membership{}, dev}, {dev, Membership{}}} {
		up := KubeEdgeMembershipChange(c.prev, c.cur, now)
		msg, err := kubeEdgeMembershipMessage("ke-pair-29132", up)
		if err != nil {
			t.Fatal(err)
		}
		g := msgs[i]
		_, edge, _ := strings.Cut(strings.TrimPrefix(msg.Route.Resource, "node/"), "/")
		if msg.Route.Group != g.Route.Group || msg.Route.Operation != g.Route.Operation || msg.Route.Source != g.Route.Source || edge != g.Route.Resource {
			t.Errorf("update %d: route %+v (edge resource %q), golden %+v", i, msg.Route, edge, g.Route)
		}
		if got, want := shapeOf(t, msg.Content), shapeOf(t, g.Content); !reflect.DeepEqual(got, want) {
			t.Errorf("update %d: content shape %v, golden %v", i, got, want)
		}
		var gu, mu KubeEdgeMembershipUpdate
		_ = json.Unmarshal(g.Content, &gu)
		_ = json.Unmarshal(msg.Content, &mu)
		if !reflect.DeepEqual(gu.AddDevices, mu.AddDevices) || !reflect.DeepEqual(gu.RemovedDevices, mu.RemovedDevices) {
			t.Errorf("update %d: added %v removed %v, golden added %v removed %v", i, mu.AddDevices, mu.RemovedDevices, gu.AddDevices, gu.RemovedDevices)
		}
	}
}

func TestKubeEdgeDeviceReportsRefuseBadContentNamingWhatIsWrong(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
		state               bool
	}{
		{"empty twin update", ``, "empty content", false},
		{"twin update not JSON", `{"twin":`, "not KubeEdge's twin update", false},
		{"twin update without twins", `{"event_id":"e","twin":{}}`, "without twins", false},
		{"a twin that is null", `{"twin":{"temperature":null}}`, `twin "temperature" is null`, false},
		{"state update not JSON", `[1]`, "not KubeEdge's state update", true},
		{"state update without state", `{"device":{"name":"d"}}`, "without device.state", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.state {
				_, err = ReportFromKubeEdgeState([]byte(tc.content))
			} else {
				_, _, err = ReportFromKubeEdgeTwin([]byte(tc.content), thermometer())
			}
			if err == nil || !errors.Is(err, errInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want invalid naming %q", err, tc.want)
			}
		})
	}
}

func TestKubeEdgeTwinUpdateDropsPropertiesTheDeviceDoesNotHaveAsKubeEdgeDoes(t *testing.T) {
	rep, dropped, err := ReportFromKubeEdgeTwin([]byte(`{"twin":{"humidity":{"actual":{"value":"40"}},"setpoint":{"expected":{"value":"22","metadata":{"timestamp":5}}}}}`), thermometer())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dropped, []string{"humidity"}) || len(rep.Twins) != 1 || rep.Twins[0].ObservedDesired.Value != "22" || rep.Twins[0].ObservedDesired.Metadata[MetaTimestamp] != "5" {
		t.Fatalf("dropped %v twins %+v: want humidity dropped and setpoint's observedDesired 22 at 5", dropped, rep.Twins)
	}
}
