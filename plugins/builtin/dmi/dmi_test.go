package dmi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
)

// sockDir is a temporary directory short enough for unix socket paths (108 bytes).
func sockDir(t testing.TB) string {
	t.Helper()
	if d := t.TempDir(); len(d) < 80 {
		return d
	}
	d, err := os.MkdirTemp("", "dmi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// rig is dmi with the real devicetwin and metamanager beside it; eventbus (devicetwin's MQTT answers)
// and edgehub (metamanager's upstream) are captured.
type rig struct {
	h      *sdktest.Harness
	socket string
	dir    string
	client dmiv1beta1.DeviceManagerServiceClient
}

func newRig(t testing.TB, cfg map[string]any) *rig {
	t.Helper()
	return newRigCapturing(t, cfg, "edgehub", "eventbus")
}

// newRigCapturing captures only the names given (a benchmark leaves eventbus out: devicetwin's
// answers are then dropped and counted instead of filling a mailbox nobody reads).
func newRigCapturing(t testing.TB, cfg map[string]any, captures ...string) *rig {
	t.Helper()
	return newRigOn(t, "", cfg, captures...)
}

// newRigOn is newRigCapturing on the store file dbPath ("" for a fresh one): a second rig on the
// same file is edgecore restarted.
func newRigOn(t testing.TB, dbPath string, cfg map[string]any, captures ...string) *rig {
	t.Helper()
	dir := sockDir(t)
	socket := filepath.Join(dir, "run", "dmi.sock")
	mmInfo, ok := sdk.Lookup(metamanager.Name)
	if !ok {
		t.Fatal("metamanager not registered")
	}
	c := map[string]any{"socket": socket, "reconcileInterval": "50ms", "callTimeout": "2s"}
	for k, v := range cfg {
		c[k] = v
	}
	h := sdktest.Run(t, dmi.Info, c,
		sdktest.Beside(mmInfo, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(devicetwin.Info, map[string]any{"flushInterval": "20ms"}),
		sdktest.Capture(captures...), sdktest.StorePath(dbPath))
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rig{h: h, socket: socket, dir: dir, client: dmiv1beta1.NewDeviceManagerServiceClient(conn)}
}

// fromCloud gives metamanager a change as the cloud sends it (metamanager stores it, then tells devicetwin).
func (r *rig) fromCloud(t testing.TB, op, resource, rv, content string) {
	t.Helper()
	m := message.New("edgehub", "resource", op, resource)
	m.Header.ResourceVersion = rv
	m.Content = json.RawMessage(content)
	if err := r.h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
		t.Fatal(err)
	}
}

const thermoModel = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"thermo","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"virtual","properties":[
  {"name":"temperature","type":"FLOAT","accessMode":"ReadOnly","minimum":"-40","maximum":"125","unit":"C"},
  {"name":"target","type":"INT","accessMode":"ReadWrite","minimum":"0","maximum":"100"}]}}`

func thermoDevice(name, protocol, desired, rv string) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"thermo"},"nodeName":%q,"stateReport":{"reportToCloud":true,"reportCycle":2000},
  "methods":[{"name":"setAll","description":"set the target","propertyNames":["target"]}],"protocol":{"protocolName":%q,"configData":{"port":502,"host":"10.0.0.7","ratio":0.5,"tls":true,"extra":{"a":1}}},
  "properties":[{"name":"temperature","reportToCloud":true,"collectCycle":1000,"pushMethod":{"otel":{"endpointURL":"http://127.0.0.1:4318"},"anomalyDetection":{"window":5}},"visitors":{"protocolName":%q,"configData":{"register":"HoldingRegister","offset":2}}},
   {"name":"target","desired":{"value":%q}}]}}`, name, rv, sdktest.NodeName, protocol, protocol, desired)
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// addThermo stores the model and a device and waits until devicetwin and metamanager hold them.
func (r *rig) addThermo(t testing.TB, name, protocol string) {
	t.Helper()
	r.fromCloud(t, message.OpInsert, "default/devicemodel/thermo", "1", thermoModel)
	r.fromCloud(t, message.OpInsert, "default/device/"+name, "2", thermoDevice(name, protocol, "42", "2"))
	waitFor(t, 10*time.Second, "device stored by devicetwin", func() error {
		_, err := r.h.DB.Objects(devicetwin.Name).Get(context.Background(), sdk.Key{Type: "device", Namespace: "default", Name: name})
		return err
	})
}

// mapperServer is a real DeviceMapperService on a unix socket, recording what edgecore calls.
type mapperServer struct {
	dmiv1beta1.UnimplementedDeviceMapperServiceServer
	socket string
	mu     sync.Mutex
	calls  []string // "RegisterDevice default/thermo-1", ...
	last   map[string]*dmiv1beta1.Device
}

func newMapperServer(t testing.TB, dir string) *mapperServer {
	t.Helper()
	ms := &mapperServer{socket: filepath.Join(dir, "mapper.sock"), last: map[string]*dmiv1beta1.Device{}}
	lis, err := net.Listen("unix", ms.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	dmiv1beta1.RegisterDeviceMapperServiceServer(srv, ms)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return ms
}

func (ms *mapperServer) record(call string) {
	ms.mu.Lock()
	ms.calls = append(ms.calls, call)
	ms.mu.Unlock()
}

func (ms *mapperServer) has(call string) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, c := range ms.calls {
		if c == call {
			return nil
		}
	}
	return fmt.Errorf("calls so far: %v", ms.calls)
}

func (ms *mapperServer) RegisterDevice(_ context.Context, req *dmiv1beta1.RegisterDeviceRequest) (*dmiv1beta1.RegisterDeviceResponse, error) {
	d := req.GetDevice()
	ms.mu.Lock()
	ms.last[d.GetNamespace()+"/"+d.GetName()] = d
	ms.mu.Unlock()
	ms.record("RegisterDevice " + d.GetNamespace() + "/" + d.GetName())
	return &dmiv1beta1.RegisterDeviceResponse{DeviceName: d.GetName(), DeviceNamespace: d.GetNamespace()}, nil
}

func (ms *mapperServer) UpdateDevice(_ context.Context, req *dmiv1beta1.UpdateDeviceRequest) (*dmiv1beta1.UpdateDeviceResponse, error) {
	d := req.GetDevice()
	ms.mu.Lock()
	ms.last[d.GetNamespace()+"/"+d.GetName()] = d
	ms.mu.Unlock()
	ms.record("UpdateDevice " + d.GetNamespace() + "/" + d.GetName())
	return &dmiv1beta1.UpdateDeviceResponse{}, nil
}

func (ms *mapperServer) RemoveDevice(_ context.Context, req *dmiv1beta1.RemoveDeviceRequest) (*dmiv1beta1.RemoveDeviceResponse, error) {
	ms.record("RemoveDevice " + req.GetDeviceNamespace() + "/" + req.GetDeviceName())
	return &dmiv1beta1.RemoveDeviceResponse{}, nil
}

func (ms *mapperServer) CreateDeviceModel(_ context.Context, req *dmiv1beta1.CreateDeviceModelRequest) (*dmiv1beta1.CreateDeviceModelResponse, error) {
	ms.record("CreateDeviceModel " + req.GetModel().GetNamespace() + "/" + req.GetModel().GetName())
	return &dmiv1beta1.CreateDeviceModelResponse{DeviceModelName: req.GetModel().GetName(), DeviceModelNamespace: req.GetModel().GetNamespace()}, nil
}

func (ms *mapperServer) RemoveDeviceModel(_ context.Context, req *dmiv1beta1.RemoveDeviceModelRequest) (*dmiv1beta1.RemoveDeviceModelResponse, error) {
	ms.record("RemoveDeviceModel " + req.GetModelNamespace() + "/" + req.GetModelName())
	return &dmiv1beta1.RemoveDeviceModelResponse{}, nil
}

func (ms *mapperServer) UpdateDeviceModel(_ context.Context, req *dmiv1beta1.UpdateDeviceModelRequest) (*dmiv1beta1.UpdateDeviceModelResponse, error) {
	ms.record("UpdateDeviceModel " + req.GetModel().GetNamespace() + "/" + req.GetModel().GetName())
	return &dmiv1beta1.UpdateDeviceModelResponse{}, nil
}

func register(t testing.TB, r *rig, protocol, socket string, withData bool) *dmiv1beta1.MapperRegisterResponse {
	t.Helper()
	resp, err := r.client.MapperRegister(context.Background(), &dmiv1beta1.MapperRegisterRequest{WithData: withData,
		Mapper: &dmiv1beta1.MapperInfo{Name: protocol + "-mapper", Version: "v1", ApiVersion: "v1beta1", Protocol: protocol, Address: []byte(socket), State: "ok"}})
	if err != nil {
		t.Fatalf("MapperRegister: %v", err)
	}
	return resp
}

// awaitPublished returns the next message devicetwin published to eventbus on topic.
func (r *rig) awaitPublished(t testing.TB, topic string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m, err := r.h.Captured("eventbus").Receive(time.Until(deadline))
		if err != nil {
			break
		}
		if m.Route.Resource == topic {
			var v map[string]any
			if err := json.Unmarshal(m.Content, &v); err != nil {
				t.Fatalf("%s: %v", topic, err)
			}
			return v
		}
	}
	t.Fatalf("nothing published on %s", topic)
	return nil
}
