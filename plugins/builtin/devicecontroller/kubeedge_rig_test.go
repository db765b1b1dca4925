package devicecontroller_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
)

// goldenRoutes returns the routes of the messages KubeEdge v1.23.1's cloudcore sent its edgecore in
// the recorded device flow (testdata), by the edge resource's type: "membership", "devicemodel",
// "device".
func goldenRoutes(t *testing.T) map[string]message.Route {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "kubeedge-v1.23.1-device-flow.json"))
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
	out := map[string]message.Route{}
	for _, f := range frames {
		m, err := hub.UnmarshalJSONLane(f.Msg)
		if err != nil || f.Dir != "down" || m.IsReply() {
			continue
		}
		typ := m.Route.Resource
		if r, err := message.ParseEdge(m.Route.Resource); err == nil {
			typ = r.Type
		}
		if _, ok := out[typ]; !ok {
			out[typ] = m.Route
		}
	}
	return out
}

// A KubeEdge edgecore (cloudhub says so at connect) gets its devices as upstream cloudcore sends them:
// KubeEdge's membership change, then the model and device in the recorded route shape; its
// twin/edge_updated lands in the Device status and is answered "OK" on resource twin; a deleted device
// leaves its membership as a removed_devices change.
func TestAKubeEdgeNodeGetsDevicesInUpstreamsShapeAndItsTwinUpdatesLand(t *testing.T) {
	r := newRig(t)
	n := r.Node("ke")
	golden := goldenRoutes(t)
	r.Event(n, message.OpConnected, map[string]bool{"kubeedge": true}) // no inventory follows
	r.model("m1")
	r.device("d1", "m1", n, "20")
	mem := r.WaitSent(message.OpUpdate, "node/"+n+"/membership")
	var up devicecontroller.KubeEdgeMembershipUpdate
	if err := json.Unmarshal(mem.Content, &up); err != nil {
		t.Fatal(err)
	}
	if want := []devicecontroller.KubeEdgeDevice{{ID: r.NS + "/d1", Name: "d1"}}; !reflect.DeepEqual(up.AddDevices, want) || up.EventID == "" || up.Timestamp == 0 {
		t.Fatalf("membership change %+v, want added %v", up, want)
	}
	mod := r.WaitSent(message.OpInsert, res(n, r.NS, "devicemodel", "m1"))
	dev := r.WaitSent(message.OpInsert, res(n, r.NS, "device", "d1"))
	for typ, m := range map[string]message.Message{"membership": mem, "devicemodel": mod, "device": dev} {
		g := golden[typ]
		if m.Route.Group != g.Group || m.Route.Source != g.Source {
			t.Errorf("%s: group %q source %q, upstream sends group %q source %q", typ, m.Route.Group, m.Route.Source, g.Group, g.Source)
		}
	}
	if dev.Header.ResourceVersion == "" {
		t.Error("device insert without resourceversion (upstream sends it)")
	}

	// Its devicetwin's report, as cloudhub renames it.
	rep := message.New("cloudhub", "twin", message.OpUpdate, res(n, r.NS, devicecontroller.TypeKubeEdgeTwinEdgeUpdated, "d1"))
	rep.Content = json.RawMessage(`{"event_id":"e","timestamp":1796535198379,"twin":{"temperature":{"actual":{"metadata":{"timestamp":1796535198375},"value":"23.25"},"actual_version":{"cloud":0,"edge":1},"metadata":{"type":"float"},"optional":true}}}`)
	resp, err := r.H.SendSync(rep, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Route.Operation != message.OpResponse || resp.Route.Resource != "twin" || resp.Route.Group != "twin" || strings.TrimSpace(string(resp.Content)) != `"OK"` {
		t.Fatalf("answer %+v %s, want KubeEdge's: response on resource twin, group twin, \"OK\"", resp.Route, resp.Content)
	}
	var tw v1beta1.Twin
	for _, x := range r.get("d1").Status.Twins {
		if x.PropertyName == "temperature" {
			tw = x
		}
	}
	if tw.Reported.Value != "23.25" || tw.Reported.Metadata["timestamp"] != "1796535198375" || tw.Reported.Metadata["type"] != "float" {
		t.Fatalf("Device status twin %+v", tw)
	}

	r.deleteDevice("d1")
	gone := r.WaitSent(message.OpUpdate, "node/"+n+"/membership")
	up = devicecontroller.KubeEdgeMembershipUpdate{}
	_ = json.Unmarshal(gone.Content, &up)
	if len(up.AddDevices) != 0 || len(up.RemovedDevices) != 1 || up.RemovedDevices[0].ID != r.NS+"/d1" {
		t.Fatalf("membership change after the delete: %+v", up)
	}
	r.WaitSent(message.OpDelete, res(n, r.NS, "device", "d1"))
}
