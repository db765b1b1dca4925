package devicecontroller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
	"github.com/kedge-io/kedge/test/k8senv"
)

var (
	api   *rest.RESTClient // devices.kubeedge.io/v1beta1
	repo  = k8senv.Repo()
	devGR = v1beta1.GroupVersion.WithResource(v1beta1.ResourceDevices)
	modGR = v1beta1.GroupVersion.WithResource(v1beta1.ResourceDeviceModels)
)

func TestMain(m *testing.M) {
	os.Exit(ctrlrig.Main(m, "devicecontroller", true, func(e *k8senv.Env) (err error) {
		api, err = devicecontroller.NewRESTClient(e.Config)
		return err
	}))
}

// rig runs the controller against the real API server, with cloudhub captured (test/ctrlrig).
type rig struct{ *ctrlrig.Rig }

func newRig(t *testing.T) *rig {
	t.Helper()
	ns := ctrlrig.Namespace(t, 45)
	return &rig{ctrlrig.Start(t, devicecontroller.Name, map[string]any{"inventoryWait": "300ms"}, ns)}
}

// join connects node with an empty inventory and waits for its (empty) membership.
func (r *rig) join(node string) {
	r.T.Helper()
	r.Event(node, message.OpConnected, nil)
	r.Event(node, message.OpInventory, []devicecontroller.InventoryItem{})
	r.WaitSent(message.OpUpdate, res(node, "default", "membership", node))
}

// report sends a devicestatus update as cloudhub hands it over (group twin, sync) and returns the answer.
func (r *rig) report(node, name string, content any) sdk.Message {
	r.T.Helper()
	return r.Request("twin", node, message.OpUpdate, r.NS, "devicestatus", name, content)
}

var res = ctrlrig.Res

func members(t *testing.T, m sdk.Message) []string {
	t.Helper()
	var mem devicecontroller.Membership
	if err := json.Unmarshal(m.Content, &mem); err != nil {
		t.Fatalf("membership content %s: %v", m.Content, err)
	}
	var out []string
	for _, d := range mem.Devices {
		out = append(out, d.Namespace+"/"+d.Name)
	}
	return out
}

// waitMembership waits until the latest membership queued for node lists exactly want (namespace/name, sorted).
func (r *rig) waitMembership(node string, want ...string) {
	r.T.Helper()
	resource := res(node, "default", "membership", node)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var latest *sdk.Message
		for _, m := range r.Seen() {
			if m.Route.Operation == message.OpUpdate && m.Route.Resource == resource {
				latest = &m
			}
		}
		var got []string
		if latest != nil {
			got = members(r.T, *latest)
			if strings.Join(got, ",") == strings.Join(want, ",") {
				return
			}
		}
		if time.Now().After(deadline) {
			r.T.Fatalf("membership of %s: latest %v, want %v", node, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var eventually = ctrlrig.Eventually

// model creates a thermometer-like DeviceModel: temperature FLOAT ReadOnly, setpoint FLOAT ReadWrite.
func (r *rig) model(name string) *v1beta1.DeviceModel {
	r.T.Helper()
	dm := &v1beta1.DeviceModel{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.NS}, Spec: v1beta1.DeviceModelSpec{
		Protocol: "virtualProtocol",
		Properties: []v1beta1.ModelProperty{
			{Name: "temperature", Type: v1beta1.TypeFloat, AccessMode: v1beta1.ReadOnly, Minimum: "-40", Maximum: "125", Unit: "Celsius"},
			{Name: "setpoint", Type: v1beta1.TypeFloat, AccessMode: v1beta1.ReadWrite, Minimum: "5", Maximum: "30"},
		}}}
	out := &v1beta1.DeviceModel{}
	if err := api.Post().Namespace(r.NS).Resource(v1beta1.ResourceDeviceModels).Body(dm).Do(context.Background()).Into(out); err != nil {
		r.T.Fatal(err)
	}
	return out
}

// device creates a device of model on node, its setpoint desired at desired.
func (r *rig) device(name, model, node, desired string) *v1beta1.Device {
	r.T.Helper()
	d := &v1beta1.Device{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.NS}, Spec: v1beta1.DeviceSpec{
		DeviceModelRef: &v1beta1.DeviceModelReference{Name: model}, NodeName: node,
		Protocol: v1beta1.ProtocolConfig{ProtocolName: "virtualProtocol", ConfigData: &v1beta1.CustomizedValue{Data: map[string]any{"deviceID": 1.0}}},
		Properties: []v1beta1.DeviceProperty{
			{Name: "temperature", ReportCycle: 1000, CollectCycle: 1000, ReportToCloud: true},
			{Name: "setpoint", Desired: v1beta1.TwinProperty{Value: desired}, ReportToCloud: true},
		}}}
	out := &v1beta1.Device{}
	if err := api.Post().Namespace(r.NS).Resource(v1beta1.ResourceDevices).Body(d).Do(context.Background()).Into(out); err != nil {
		r.T.Fatal(err)
	}
	return out
}

func (r *rig) get(name string) *v1beta1.Device {
	r.T.Helper()
	d := &v1beta1.Device{}
	if err := api.Get().Namespace(r.NS).Resource(v1beta1.ResourceDevices).Name(name).Do(context.Background()).Into(d); err != nil {
		r.T.Fatal(err)
	}
	return d
}

// change reads a device, applies f to it and writes it back (retrying on conflict).
func (r *rig) change(name string, f func(*v1beta1.Device)) {
	r.T.Helper()
	for {
		d := r.get(name)
		f(d)
		err := api.Put().Namespace(r.NS).Resource(v1beta1.ResourceDevices).Name(name).Body(d).Do(context.Background()).Error()
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			r.T.Fatal(err)
		}
		return
	}
}

func (r *rig) deleteDevice(name string) {
	r.T.Helper()
	if err := api.Delete().Namespace(r.NS).Resource(v1beta1.ResourceDevices).Name(name).Do(context.Background()).Error(); err != nil {
		r.T.Fatal(err)
	}
}

// create decodes a YAML manifest and creates it through the dynamic client, as kubectl create does.
func create(t *testing.T, ns, manifest string) error {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatal(err)
	}
	obj.SetNamespace(ns)
	gvr := devGR
	if obj.GetKind() == "DeviceModel" {
		gvr = modGR
	}
	_, err := ctrlrig.Dynamic.Resource(gvr).Namespace(ns).Create(context.Background(), obj, metav1.CreateOptions{})
	return err
}

func TestCRDsRefuseBadObjectsWith422NamingTheFieldAndAcceptTheExamples(t *testing.T) {
	r := newRig(t)
	const head = "apiVersion: devices.kubeedge.io/v1beta1\n"
	tests := []struct {
		name, manifest, wantField string
	}{
		{"a device without a spec", head + "kind: Device\nmetadata: {name: d0}\n", "spec"},
		{"a device without a model reference", head + "kind: Device\nmetadata: {name: d1}\nspec: {nodeName: edge-1}\n", "spec.deviceModelRef"},
		{"a device model reference without a name", head + "kind: Device\nmetadata: {name: d2}\nspec: {deviceModelRef: {}}\n", "spec.deviceModelRef.name"},
		{"a device property without a name", head + "kind: Device\nmetadata: {name: d3}\nspec: {deviceModelRef: {name: m}, properties: [{reportCycle: 5}]}\n", "spec.properties[0].name"},
		{"a negative reportCycle", head + "kind: Device\nmetadata: {name: d4}\nspec: {deviceModelRef: {name: m}, properties: [{name: p, reportCycle: -1}]}\n", "spec.properties[0].reportCycle"},
		{"a model property of an unknown type", head + "kind: DeviceModel\nmetadata: {name: m1}\nspec: {properties: [{name: p, type: FLOATY, accessMode: ReadOnly}]}\n", "spec.properties[0].type"},
		{"a model property with an unknown access mode", head + "kind: DeviceModel\nmetadata: {name: m2}\nspec: {properties: [{name: p, type: INT, accessMode: WriteOnly}]}\n", "spec.properties[0].accessMode"},
		{"a model property without a type", head + "kind: DeviceModel\nmetadata: {name: m3}\nspec: {properties: [{name: p, accessMode: ReadOnly}]}\n", "spec.properties[0].type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := create(t, r.NS, tt.manifest)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("created or refused otherwise (%v); want 422 Invalid", err)
			}
			if st, ok := err.(apierrors.APIStatus); !ok || st.Status().Code != 422 || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("error %v does not name %s with code 422", err, tt.wantField)
			}
		})
	}
	for _, f := range []string{"thermometer-model.yaml", "thermometer-device.yaml"} {
		b, err := os.ReadFile(filepath.Join(repo, "examples", "devices", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := create(t, r.NS, string(b)); err != nil {
			t.Fatalf("example %s refused: %v", f, err)
		}
	}
	d := r.get("thermometer-1")
	if d.Spec.Properties[1].Desired.Value != "21.5" || d.Spec.Protocol.ConfigData == nil || d.Spec.Protocol.ConfigData.Data["deviceID"] != 1.0 {
		t.Fatalf("example device not stored as written (configData kept?): %+v", d.Spec)
	}
	out, err := ctrlrig.Env.Kubectl("get", "devices", "-n", r.NS)
	if err != nil {
		t.Fatalf("kubectl get devices: %v: %s", err, out)
	}
	for _, col := range []string{"NODE", "MODEL", "STATE", "AGE", "edge-1", "thermometer"} {
		if !strings.Contains(out, col) {
			t.Errorf("kubectl get devices does not show %s:\n%s", col, out)
		}
	}
	if out, err := ctrlrig.Env.Kubectl("get", "devicemodels", "-n", r.NS); err != nil || !strings.Contains(out, "PROTOCOL") || !strings.Contains(out, "virtualProtocol") {
		t.Errorf("kubectl get devicemodels: %v:\n%s", err, out)
	}
}

func TestDevicesModelsAndMembershipReachOnlyTheirNodeModelFirst(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	r.model("ma")
	r.model("mb")
	r.device("da", "ma", a, "20")
	r.device("db", "mb", b, "20")
	r.waitMembership(a, r.NS+"/da") // sent after the device, so the model and device are in by now
	order := strings.Join(r.SentTo(a), "\n")
	if mi, di := strings.Index(order, "/devicemodel/ma"), strings.Index(order, "/device/da"); mi < 0 || di < 0 || mi > di {
		t.Errorf("the model must reach the node before its device:\n%s", order)
	}
	mod := r.WaitSent(message.OpInsert, res(a, r.NS, "devicemodel", "ma"))
	dev := r.WaitSent(message.OpInsert, res(a, r.NS, "device", "da"))
	var got v1beta1.Device
	if err := json.Unmarshal(dev.Content, &got); err != nil || got.Kind != "Device" || got.APIVersion != "devices.kubeedge.io/v1beta1" || got.Spec.NodeName != a || got.Spec.Properties[1].Desired.Value != "20" {
		t.Fatalf("device content: %v %+v", err, got)
	}
	if dev.Header.ResourceVersion != got.ResourceVersion || got.ResourceVersion == "" {
		t.Fatalf("header resourceversion %q, object %q", dev.Header.ResourceVersion, got.ResourceVersion)
	}
	var gotModel v1beta1.DeviceModel
	if err := json.Unmarshal(mod.Content, &gotModel); err != nil || gotModel.Kind != "DeviceModel" || len(gotModel.Spec.Properties) != 2 {
		t.Fatalf("model content: %v %+v", err, gotModel)
	}
	r.WaitSent(message.OpInsert, res(b, r.NS, "devicemodel", "mb"))
	r.WaitSent(message.OpInsert, res(b, r.NS, "device", "db"))
	r.waitMembership(b, r.NS+"/db")
	// A desired value change reaches its node only.
	r.change("da", func(d *v1beta1.Device) { d.Spec.Properties[1].Desired.Value = "23" })
	upd := r.WaitSent(message.OpUpdate, res(a, r.NS, "device", "da"))
	if !strings.Contains(string(upd.Content), `"value":"23"`) {
		t.Fatalf("update does not carry the new desired value: %s", upd.Content)
	}
	for _, s := range r.SentTo(b) {
		if strings.HasSuffix(s, "/da") || strings.HasSuffix(s, "/ma") {
			t.Errorf("node b was sent node a's object: %s", s)
		}
	}
	for _, s := range r.SentTo(a) {
		if strings.HasSuffix(s, "/db") || strings.HasSuffix(s, "/mb") {
			t.Errorf("node a was sent node b's object: %s", s)
		}
	}
}

func TestModelLeavesANodeWithItsLastDeviceAndDeletedDevicesLeaveTheMembership(t *testing.T) {
	r := newRig(t)
	a := r.Node("a")
	r.join(a)
	r.model("m")
	r.device("d1", "m", a, "20")
	r.device("d2", "m", a, "20")
	r.WaitSent(message.OpInsert, res(a, r.NS, "devicemodel", "m"))
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d1"))
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d2"))
	r.waitMembership(a, r.NS+"/d1", r.NS+"/d2")
	r.deleteDevice("d1")
	r.WaitSent(message.OpDelete, res(a, r.NS, "device", "d1"))
	r.waitMembership(a, r.NS+"/d2")
	for _, s := range r.SentTo(a) {
		if s == message.OpDelete+" "+res(a, r.NS, "devicemodel", "m") {
			t.Fatalf("model removed while d2 still uses it")
		}
	}
	r.deleteDevice("d2")
	r.WaitSent(message.OpDelete, res(a, r.NS, "device", "d2"))
	r.WaitSent(message.OpDelete, res(a, r.NS, "devicemodel", "m"))
	r.waitMembership(a)
}

func TestMovedDeviceIsDeletedOnTheOldNodeAndSentWholeToTheNew(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	r.model("m")
	r.device("d", "m", a, "20")
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d"))
	r.change("d", func(d *v1beta1.Device) { d.Spec.NodeName = b })
	r.WaitSent(message.OpDelete, res(a, r.NS, "device", "d"))
	r.WaitSent(message.OpDelete, res(a, r.NS, "devicemodel", "m"))
	r.WaitSent(message.OpInsert, res(b, r.NS, "devicemodel", "m"))
	moved := r.WaitSent(message.OpInsert, res(b, r.NS, "device", "d"))
	if !strings.Contains(string(moved.Content), `"nodeName":"`+b+`"`) || !strings.Contains(string(moved.Content), `"properties"`) {
		t.Fatalf("the new node did not get the whole device: %s", moved.Content)
	}
	r.waitMembership(a)
	r.waitMembership(b, r.NS+"/d")
}

func twin(prop, value string, ts int64) v1beta1.Twin {
	return v1beta1.Twin{PropertyName: prop, Reported: v1beta1.TwinProperty{Value: value,
		Metadata: map[string]string{"timestamp": strconv.FormatInt(ts, 10), "type": "FLOAT"}}}
}

func reported(d *v1beta1.Device, prop string) string {
	for _, t := range d.Status.Twins {
		if t.PropertyName == prop {
			return t.Reported.Value
		}
	}
	return ""
}

func TestStatusFromItsNodeLandsInTheDeviceNewestReportedValueWinning(t *testing.T) {
	r := newRig(t)
	a := r.Node("a")
	r.join(a)
	r.model("m")
	r.device("d", "m", a, "20")
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d"))
	steps := []struct {
		name           string
		report         devicecontroller.DeviceStatusReport
		wantTemp       string
		wantSetpoint   string
		wantState      string
		wantLastOnline string
	}{
		{"first values, state and last online time",
			devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", "21.5", 2000)}, State: "online", LastOnlineTime: "2026-01-02T10:00:00Z"},
			"21.5", "", "online", "2026-01-02T10:00:00Z"},
		{"an older value is ignored, another property merged beside",
			devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", "10", 1000), twin("setpoint", "20", 1500)}},
			"21.5", "20", "online", "2026-01-02T10:00:00Z"},
		{"a newer value replaces it; an earlier last online time is kept out",
			devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", "22.25", 3000)}, State: "offline", LastOnlineTime: "2026-01-01T10:00:00Z"},
			"22.25", "20", "offline", "2026-01-02T10:00:00Z"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if resp := r.report(a, "d", s.report); resp.Route.Operation == message.OpError {
				t.Fatalf("refused: %s", resp.Content)
			}
			d := r.get("d")
			if reported(d, "temperature") != s.wantTemp || reported(d, "setpoint") != s.wantSetpoint || d.Status.State != s.wantState || d.Status.LastOnlineTime != s.wantLastOnline {
				t.Fatalf("status %+v; want temperature %s setpoint %s state %s lastOnlineTime %s", d.Status, s.wantTemp, s.wantSetpoint, s.wantState, s.wantLastOnline)
			}
		})
	}
	d := r.get("d")
	for _, tw := range d.Status.Twins {
		if tw.PropertyName == "temperature" && (tw.Reported.Metadata["timestamp"] != "3000" || tw.Reported.Metadata["type"] != "FLOAT") {
			t.Errorf("reported metadata not kept: %v", tw.Reported.Metadata)
		}
	}
	// Status writes are not echoed to the edge: the next device update it gets is the spec change.
	r.change("d", func(d *v1beta1.Device) { d.Spec.Properties[1].Desired.Value = "24" })
	if upd := r.WaitSent(message.OpUpdate, res(a, r.NS, "device", "d")); !strings.Contains(string(upd.Content), `"value":"24"`) {
		t.Fatalf("a status write was sent to the edge as a device update: %s", upd.Content)
	}
}

func TestStatusReportsForAnotherNodesDeviceOrWithBadContentAreRefusedAndNothingWritten(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	r.model("m")
	r.device("d", "m", a, "20")
	good := devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", "21", 1000)}, State: "online"}
	tests := []struct {
		name, node, device string
		content            any
		wantErr            string
	}{
		{"another node's device", b, "d", good, "forbidden"},
		{"malformed JSON", a, "d", []byte(`{"twins": [`), "not a device status report"},
		{"twins of the wrong shape", a, "d", []byte(`{"twins": {"temperature": 1}}`), "not a device status report"},
		{"an empty report", a, "d", []byte(`{}`), "no twins, state, lastOnlineTime or condition"},
		{"an unknown device", a, "nope", good, "no device " + r.NS + "/nope"},
		{"an unknown property", a, "d", devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("humidity", "40", 1000)}}, `no property "humidity"`},
		{"a timestamp that is not a number", a, "d", devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: "temperature", Reported: v1beta1.TwinProperty{Value: "1", Metadata: map[string]string{"timestamp": "yesterday"}}}}}, "timestamp"},
		{"a lastOnlineTime that is not RFC 3339", a, "d", devicecontroller.DeviceStatusReport{State: "online", LastOnlineTime: "10:00"}, "lastOnlineTime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.report(tt.node, tt.device, tt.content)
			var e struct{ Error string }
			_ = json.Unmarshal(resp.Content, &e)
			if resp.Route.Operation != message.OpError || !strings.Contains(e.Error, tt.wantErr) {
				t.Fatalf("answer %s %s, want an error containing %q", resp.Route.Operation, resp.Content, tt.wantErr)
			}
		})
	}
	if d := r.get("d"); len(d.Status.Twins) != 0 || d.Status.State != "" {
		t.Fatalf("a refused report was written: %+v", d.Status)
	}
	if n := metricValue(t, r.H, "kedge_devicecontroller_denied_total"); n != 1 {
		t.Errorf("kedge_devicecontroller_denied_total = %v, want 1", n)
	}
}

func metricValue(t *testing.T, h *sdktest.Harness, name string) float64 {
	t.Helper()
	fams, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestReconnectingNodeGetsOnlyTheDevicesItLacksAndLosesWhatItShouldNotHold(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.join(node)
	r.model("m")
	r.device("d1", "m", node, "20")
	r.device("d2", "m", node, "20")
	rv := func(m sdk.Message) uint64 { v, _ := strconv.ParseUint(m.Header.ResourceVersion, 10, 64); return v }
	mrv := rv(r.WaitSent(message.OpInsert, res(node, r.NS, "devicemodel", "m")))
	d1 := rv(r.WaitSent(message.OpInsert, res(node, r.NS, "device", "d1")))
	d2 := rv(r.WaitSent(message.OpInsert, res(node, r.NS, "device", "d2")))
	// A status write changes d1's resourceVersion but not what the edge holds: its copy stays current.
	if resp := r.report(node, "d1", devicecontroller.DeviceStatusReport{State: "online"}); resp.Route.Operation == message.OpError {
		t.Fatalf("status refused: %s", resp.Content)
	}
	r.Event(node, message.OpDisconnected, nil)
	r.Event(node, message.OpConnected, nil)
	r.Event(node, message.OpInventory, []devicecontroller.InventoryItem{
		{Resource: r.NS + "/device/d1", ResourceVersion: d1},
		{Resource: r.NS + "/devicemodel/m", ResourceVersion: mrv},
		{Resource: r.NS + "/device/d2", ResourceVersion: d2 - 1},
		{Resource: r.NS + "/device/gone", ResourceVersion: 5},
		{Resource: r.NS + "/devicemodel/oldmodel", ResourceVersion: 5},
		{Resource: r.NS + "/pod/p", ResourceVersion: 3},
		{Resource: "default/membership/" + node, ResourceVersion: 0},
	})
	r.WaitSent(message.OpUpdate, res(node, r.NS, "device", "d2"))
	r.WaitSent(message.OpDelete, res(node, r.NS, "device", "gone"))
	r.WaitSent(message.OpDelete, res(node, r.NS, "devicemodel", "oldmodel"))
	r.waitMembership(node, r.NS+"/d1", r.NS+"/d2")
	for _, s := range r.SentTo(node) {
		if strings.HasSuffix(s, "/device/d1") || strings.HasSuffix(s, "/devicemodel/m") || strings.Contains(s, "/pod/") {
			t.Errorf("sent although the node holds it at the current version (or it is not ours): %s", s)
		}
	}
}

func TestNodeWithoutInventoryGetsEverythingItShouldHold(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.model("m")
	r.device("d", "m", node, "20")
	r.Event(node, message.OpConnected, nil)
	// after inventoryWait, from the reconciliation
	r.WaitSent(message.OpUpdate, res(node, r.NS, "devicemodel", "m"))
	r.WaitSent(message.OpUpdate, res(node, r.NS, "device", "d"))
	r.waitMembership(node, r.NS+"/d")
}

func TestDeviceWhoseModelIsCreatedLaterGetsTheModelOnItsNode(t *testing.T) {
	r := newRig(t)
	a := r.Node("a")
	r.join(a)
	r.device("d", "late", a, "20")
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d"))
	r.model("late")
	// The node's first copy of the model is an insert, as when the model existed before the device.
	r.WaitSent(message.OpInsert, res(a, r.NS, "devicemodel", "late"))
}

// KubeEdge v1.23 keeps what the edge reports in a DeviceStatus object per Device: it is created with
// the Device (owned by it), follows every status report (twins, state), and goes with the Device.
func TestDeviceStatusObjectIsCreatedWithTheDeviceFollowsItsReportsAndGoesWithIt(t *testing.T) {
	r := newRig(t)
	a := r.Node("a")
	r.join(a)
	r.model("m")
	dev := r.device("d", "m", a, "20")
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d"))
	getStatus := func() (*v1beta1.DeviceStatus, error) {
		ds := &v1beta1.DeviceStatus{}
		err := api.Get().Namespace(r.NS).Resource(v1beta1.ResourceDeviceStatuses).Name("d").Do(context.Background()).Into(ds)
		return ds, err
	}
	eventually(t, "DeviceStatus d created, owned by Device d", func() (bool, string) {
		ds, err := getStatus()
		if err != nil {
			return false, err.Error()
		}
		owned := len(ds.OwnerReferences) == 1 && ds.OwnerReferences[0].UID == dev.UID && ds.OwnerReferences[0].Kind == "Device" &&
			ds.OwnerReferences[0].Controller != nil && *ds.OwnerReferences[0].Controller
		return owned, fmt.Sprintf("owners %+v", ds.OwnerReferences)
	})
	if resp := r.report(a, "d", devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", "21.5", 2000)}, State: "online"}); resp.Route.Operation == message.OpError {
		t.Fatalf("refused: %s", resp.Content)
	}
	eventually(t, "the report in DeviceStatus d", func() (bool, string) {
		ds, err := getStatus()
		if err != nil {
			return false, err.Error()
		}
		ok := ds.Status.State == "online" && len(ds.Status.Twins) == 1 && ds.Status.Twins[0].PropertyName == "temperature" &&
			ds.Status.Twins[0].Reported.Value == "21.5" && ds.Status.Twins[0].Reported.Metadata["timestamp"] == "2000"
		return ok, fmt.Sprintf("%+v", ds.Status)
	})
	r.deleteDevice("d")
	eventually(t, "DeviceStatus d deleted with the Device", func() (bool, string) {
		_, err := getStatus()
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}
