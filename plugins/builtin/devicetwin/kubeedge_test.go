package devicetwin_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk/message"
)

// goldenMembership returns KubeEdge v1.23.1 cloudcore's membership updates (added, then removed) from
// the flow recorded between the real binaries (devicecontroller/testdata).
func goldenMembership(t *testing.T) []message.Message {
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
	var out []message.Message
	for _, f := range frames {
		m, err := hub.UnmarshalJSONLane(f.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if f.Dir == "down" && m.Route.Resource == "membership" {
			out = append(out, m)
		}
	}
	if len(out) != 2 {
		t.Fatalf("%d membership updates in the golden flow, want 2", len(out))
	}
	return out
}

// KubeEdge's cloud sends the membership as a change ({added_devices, removed_devices}, ids
// <namespace>/<name>) on resource "membership": devicetwin applies it to the node's list, announcing
// it on membership/updated and answering membership/get from it.
func TestKubeEdgeMembershipChangesFromTheGoldenFlowAddAndRemoveTheDevice(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "1h"})
	node := sdktest.NodeName
	g := goldenMembership(t)
	// The golden device is ke-pair/thermometer-1.
	dev := strings.ReplaceAll(thermoDevice("thermometer-1", "20", "2"), `"namespace":"default"`, `"namespace":"ke-pair"`)
	r.send(t, message.OpInsert, "ke-pair/devicemodel/thermo", "1", json.RawMessage(strings.ReplaceAll(thermoModel, `"namespace":"default"`, `"namespace":"ke-pair"`)))
	r.send(t, message.OpInsert, "ke-pair/device/thermometer-1", "2", json.RawMessage(dev))

	send := func(m message.Message) {
		t.Helper()
		m.Route.Source = "edgehub"
		if err := r.h.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	send(g[0])
	up := r.mapper.await(t, "$hw/events/node/"+node+"/membership/updated", `"added_devices"`)
	if !strings.Contains(fmt.Sprint(up["added_devices"]), "thermometer-1") || !strings.Contains(fmt.Sprint(up["added_devices"]), "ke-pair") {
		t.Fatalf("membership/updated %v", up)
	}
	r.mapper.publish(t, "$hw/events/node/"+node+"/membership/get", `{"event_id":"m1"}`)
	mg := r.mapper.await(t, "$hw/events/node/"+node+"/membership/get/result", `"m1"`)
	if devs, _ := mg["devices"].([]any); len(devs) != 1 || path(devs[0], "namespace") != "ke-pair" {
		t.Fatalf("membership/get/result %v", mg)
	}
	send(g[1])
	rm := r.mapper.await(t, "$hw/events/node/"+node+"/membership/updated", `"removed_devices":[`)
	if !strings.Contains(fmt.Sprint(rm["removed_devices"]), "thermometer-1") {
		t.Fatalf("membership/updated %v", rm)
	}
}

func TestAKubeEdgeMembershipChangeWithABadDeviceIDIsRefusedNamingIt(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "1h"})
	m, _ := message.New("devicecontroller", "twin", message.OpUpdate, "membership").WithContent(map[string]any{
		"added_devices": []map[string]string{{"id": "a/b/c", "name": "c"}}})
	m.Header.Sync = true
	reply, err := r.h.SendSync(m, 10*time.Second)
	if err == nil && reply.Route.Operation != message.OpError {
		t.Fatalf("accepted: %s", reply.Content)
	}
	msg := fmt.Sprint(err)
	if err == nil {
		var e struct{ Error string }
		_ = json.Unmarshal(reply.Content, &e)
		msg = e.Error
	}
	if !strings.Contains(msg, `"a/b/c" is not <namespace>/<name>`) {
		t.Fatalf("error %q does not name the bad id", msg)
	}
}
