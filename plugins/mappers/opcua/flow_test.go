package opcua_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	gopcua "github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/plugins/mappers/opcua"
	"github.com/kedge-io/kedge/plugins/mappers/opcua/uaserver"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// rig is the opcua mapper module (the SDK runtime around the Driver) beside edgecore's real dmi,
// devicetwin and metamanager, and a node-opcua server.
type rig struct {
	h   *sdktest.Harness
	srv *uaserver.Server
}

func newRig(t testing.TB) *rig {
	t.Helper()
	srv := uaserver.Start(t)
	dir, err := os.MkdirTemp("", "ua") // unix socket paths must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	dmiSock := filepath.Join(dir, "dmi.sock")
	mmInfo, ok := sdk.Lookup(metamanager.Name)
	if !ok {
		t.Fatal("metamanager not registered")
	}
	h := sdktest.Run(t, opcua.Info, map[string]any{
		"dmiSocket": dmiSock, "socket": filepath.Join(dir, "mappers", "opcua.sock"),
		"collectCycle": "20ms", "healthCycle": "200ms", "backoffMin": "50ms", "backoffMax": "1s", "callTimeout": "10s"},
		sdktest.Beside(dmi.Info, map[string]any{"socket": dmiSock, "reconcileInterval": "50ms", "callTimeout": "10s"}),
		sdktest.Beside(mmInfo, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(devicetwin.Info, map[string]any{"flushInterval": "20ms"}),
		sdktest.Capture("edgehub", "eventbus"))
	return &rig{h: h, srv: srv}
}

func (r *rig) fromCloud(t testing.TB, op, resource, rv, content string) {
	t.Helper()
	m := message.New("edgehub", "resource", op, resource)
	m.Header.ResourceVersion = rv
	m.Content = json.RawMessage(content)
	if err := r.h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) twin(device, prop string) (string, error) {
	o, err := r.h.DB.Objects(devicetwin.Name).Get(context.Background(), sdk.Key{Type: "twin", Namespace: "default", Name: device + "/" + prop})
	if err != nil {
		return "", err
	}
	var tw struct {
		Actual *struct {
			Value *string `json:"value"`
		} `json:"actual"`
	}
	if err := json.Unmarshal(o.Value, &tw); err != nil {
		return "", err
	}
	if tw.Actual == nil || tw.Actual.Value == nil {
		return "", fmt.Errorf("twin %s/%s has no actual value", device, prop)
	}
	return *tw.Actual.Value, nil
}

func (r *rig) waitTwin(t testing.TB, device, prop, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		v, err := r.twin(device, prop)
		if err == nil && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s = %q (%v), want %q", device, prop, v, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const boilerModel = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"boiler","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"opcua","properties":[
  {"name":"temperature","type":"FLOAT","accessMode":"ReadOnly"},
  {"name":"setpoint","type":"FLOAT","accessMode":"ReadWrite"},
  {"name":"label","type":"STRING","accessMode":"ReadOnly"}]}}`

func boilerDevice(name, rv, url, setpoint string) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"boiler"},"nodeName":%q,"protocol":{"protocolName":"opcua","configData":{"url":%q,"publishingInterval":"20ms","timeout":"10s"}},
  "properties":[
   {"name":"temperature","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"opcua","configData":{"nodeID":"ns=1;s=Temperature"}}},
   {"name":"setpoint","reportToCloud":true,"collectCycle":20,"desired":{"value":%q},"visitors":{"protocolName":"opcua","configData":{"nodeID":"ns=1;s=Setpoint"}}},
   {"name":"label","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"opcua","configData":{"nodeID":"ns=1;s=Label","browseName":"Label"}}}]}}`,
		name, rv, sdktest.NodeName, url, setpoint)
}

// A KubeEdge-shaped OPC-UA Device through the mapper runtime and edgecore's real dmi, devicetwin and
// metamanager: live values reach the twins, the desired setpoint is written to the server, a new
// desired value too.
func TestOPCUADeviceReportsAndWritesThroughTheMapperRuntime(t *testing.T) {
	r := newRig(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/boiler", "1", boilerModel)
	r.fromCloud(t, message.OpInsert, "default/device/boiler-1", "2", boilerDevice("boiler-1", "2", r.srv.URL(), "42.5"))
	r.waitTwin(t, "boiler-1", "label", "boiler-1")
	r.waitTwin(t, "boiler-1", "setpoint", "42.5")
	if got := r.srv.Value("Setpoint"); got != "42.5" {
		t.Fatalf("server Setpoint = %s, want the desired 42.5", got)
	}
	first, err := r.twin("boiler-1", "temperature")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if v, _ := r.twin("boiler-1", "temperature"); v != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("temperature twin stuck at %s", first)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.fromCloud(t, message.OpUpdate, "default/device/boiler-1", "3", boilerDevice("boiler-1", "3", r.srv.URL(), "-3.25"))
	r.waitTwin(t, "boiler-1", "setpoint", "-3.25")
	if got := r.srv.Value("Setpoint"); got != "-3.25" {
		t.Fatalf("server Setpoint = %s, want -3.25", got)
	}
}

// BenchmarkSubscriptionChangeToTwin: a second client writes Setpoint on the server; the time until
// devicetwin stores the new value (monitored item → mapper → DMI report → devicetwin), p50/p99.
func BenchmarkSubscriptionChangeToTwin(b *testing.B) {
	r := newRig(b)
	r.fromCloud(b, message.OpInsert, "default/devicemodel/boiler", "1", boilerModel)
	r.fromCloud(b, message.OpInsert, "default/device/boiler-1", "2", boilerDevice("boiler-1", "2", r.srv.URL(), ""))
	r.waitTwin(b, "boiler-1", "label", "boiler-1")
	ctx := context.Background()
	c, err := gopcua.NewClient(r.srv.URL(), gopcua.SecurityMode(ua.MessageSecurityModeNone))
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	node, _ := ua.ParseNodeID("ns=1;s=Setpoint")
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := float64(1000 + i)
		variant, _ := ua.NewVariant(v)
		start := time.Now()
		if _, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{NodeID: node, AttributeID: ua.AttributeIDValue,
			Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: variant}}}}); err != nil {
			b.Fatal(err)
		}
		r.waitTwin(b, "boiler-1", "setpoint", strconv.FormatFloat(v, 'f', -1, 64))
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// secretDevice is boilerDevice with a user-name login whose password came from a Secret, as
// devicecontroller delivers it to the device's node ("value" beside the reference).
func secretDevice(name, rv, url, password string) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"boiler"},"nodeName":%q,"protocol":{"protocolName":"opcua","configData":{"url":%q,"timeout":"10s",
  "userName":"operator","password":{"secretKeyRef":{"name":"plc-login","key":"password"},"value":%q}}},
  "properties":[{"name":"label","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"opcua","configData":{"nodeID":"ns=1;s=Label"}}}]}}`,
		name, rv, sdktest.NodeName, url, password)
}

// cloudTap is a mailbox in the hub group: what metamanager sends towards the cloud.
func (r *rig) cloudTap(t testing.TB) *router.Mailbox {
	t.Helper()
	mb, err := r.h.Router.Register("cloudtap", "hub", router.Options{Capacity: 4096, Policy: router.Block})
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

// waitCondition waits for a devicestatus report to the cloud whose Healthy condition has reason and
// returns its message.
func waitCondition(t testing.TB, tap *router.Mailbox, device, reason string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var seen []string
	for {
		m, err := tap.Receive(ctx)
		if err != nil {
			break
		}
		if !strings.HasSuffix(m.Route.Resource, "/devicestatus/"+device) {
			seen = append(seen, m.Route.Operation+" "+m.Route.Resource)
			continue
		}
		var st struct {
			Condition *struct{ Status, Reason, Message string } `json:"condition"`
		}
		if json.Unmarshal(m.Content, &st) != nil || st.Condition == nil {
			continue
		}
		seen = append(seen, st.Condition.Reason)
		if st.Condition.Reason == reason {
			return st.Condition.Message
		}
	}
	t.Fatalf("no Healthy condition with reason %s for %s within 2m; saw %v", reason, device, seen)
	return ""
}

// A wrong password (delivered from a Secret) shows in the cloud as the device's Healthy condition with
// reason AuthenticationFailed and a message naming the Secret, not the password; the right one
// (the Secret changed: a newer Device copy) brings the device online with values.
func TestWrongSecretPasswordBecomesAnAuthenticationFailedConditionAndTheRightOneRecovers(t *testing.T) {
	r := newRig(t)
	tap := r.cloudTap(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/boiler", "1", boilerModel)
	r.fromCloud(t, message.OpInsert, "default/device/plc", "2", secretDevice("plc", "2", r.srv.URL(), "guess-1234"))
	msg := waitCondition(t, tap, "plc", opcua.ReasonAuthenticationFailed)
	if !strings.Contains(msg, "secret plc-login key password") || strings.Contains(msg, "guess-1234") {
		t.Fatalf("condition message %q: want the Secret named and the password absent", msg)
	}
	r.fromCloud(t, message.OpUpdate, "default/device/plc", "5", secretDevice("plc", "5", r.srv.URL(), "secret"))
	r.waitTwin(t, "plc", "label", "boiler-1")
	waitCondition(t, tap, "plc", "ReadingsAccepted")
}
