package dmi_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
	sdkmapper "github.com/kedge-io/kedge/sdk/mapper"
	"github.com/kedge-io/kedge/sdk/message"
)

// A mapper registers, gets its protocol's device and model, reports a value and a state; both reach
// devicetwin (stored there) and the device status metamanager keeps for the cloud.
func TestMapperRegistersGetsItsDevicesAndItsReportsReachDevicetwinAndTheCloudStatus(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "virtual")
	r.fromCloud(t, message.OpInsert, "default/device/other-1", "3", thermoDevice("other-1", "modbus", "1", "3"))
	ms := newMapperServer(t, r.dir)

	fi, err := os.Stat(r.socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v, want 0600", fi.Mode(), err)
	}
	resp := register(t, r, "virtual", ms.socket, true)
	if len(resp.DeviceList) != 1 || resp.DeviceList[0].GetName() != "thermo-1" || resp.DeviceList[0].GetNamespace() != "default" {
		t.Fatalf("deviceList = %v, want only default/thermo-1 (other-1 is modbus)", resp.DeviceList)
	}
	if len(resp.ModelList) != 1 || resp.ModelList[0].GetName() != "thermo" || len(resp.ModelList[0].GetSpec().GetProperties()) != 2 {
		t.Fatalf("modelList = %v", resp.ModelList)
	}
	d := resp.DeviceList[0]
	if d.GetSpec().GetDeviceModelReference() != "thermo" || d.GetSpec().GetProtocol().GetProtocolName() != "virtual" {
		t.Fatalf("device spec = %v", d.GetSpec())
	}
	cfg := d.GetSpec().GetProtocol().GetConfigData().GetData()
	var port wrapperspb.Int64Value
	var host wrapperspb.StringValue
	if err := cfg["port"].UnmarshalTo(&port); err != nil || port.Value != 502 {
		t.Fatalf("configData.port = %v (%v), want Int64Value 502", cfg["port"], err)
	}
	if err := cfg["host"].UnmarshalTo(&host); err != nil || host.Value != "10.0.0.7" {
		t.Fatalf("configData.host = %v (%v)", cfg["host"], err)
	}
	var target *dmiv1beta1.DeviceProperty
	for _, p := range d.GetSpec().GetProperties() {
		if p.GetName() == "target" {
			target = p
		}
	}
	if target.GetDesired().GetValue() != "42" {
		t.Fatalf("target desired = %v, want 42", target.GetDesired())
	}
	// spec.stateReport reaches the mapper as KubeEdge sends it: DeviceStatus reportToCloud and
	// reportCycle (without them a KubeEdge mapper never reports the device's state); methods and the
	// push methods (otel is field 4, anomalyDetection 5, as in KubeEdge) go along.
	if st := d.GetStatus(); !st.GetReportToCloud() || st.GetReportCycle() != 2000 {
		t.Fatalf("device status = %v, want reportToCloud true, reportCycle 2000", st)
	}
	if ms := d.GetSpec().GetMethods(); len(ms) != 1 || ms[0].GetName() != "setAll" || len(ms[0].GetPropertyNames()) != 1 {
		t.Fatalf("methods = %v", ms)
	}
	for _, p := range d.GetSpec().GetProperties() {
		if p.GetName() != "temperature" {
			continue
		}
		pm := p.GetPushMethod()
		var window wrapperspb.Int64Value
		if pm.GetOtel().GetEndpointURL() != "http://127.0.0.1:4318" || pm.GetDbMethod() != nil {
			t.Fatalf("pushMethod = %v, want otel only", pm)
		}
		if err := pm.GetAnomalyDetection().GetData()["window"].UnmarshalTo(&window); err != nil || window.Value != 5 {
			t.Fatalf("anomalyDetection = %v (%v)", pm.GetAnomalyDetection(), err)
		}
	}

	ctx := context.Background()
	if _, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "thermo-1", DeviceNamespace: "default",
		ReportedDevice: &dmiv1beta1.DeviceStatus{Twins: []*dmiv1beta1.Twin{{PropertyName: "temperature",
			Reported: &dmiv1beta1.TwinProperty{Value: "21.5", Metadata: map[string]string{"timestamp": fmt.Sprint(time.Now().UnixMilli()), "type": "FLOAT"}}}}}}); err != nil {
		t.Fatalf("ReportDeviceStatus: %v", err)
	}
	waitFor(t, 10*time.Second, "twin stored by devicetwin", func() error {
		o, err := r.h.DB.Objects(devicetwin.Name).Get(ctx, sdk.Key{Type: "twin", Namespace: "default", Name: "thermo-1/temperature"})
		if err != nil {
			return err
		}
		if !strings.Contains(string(o.Value), `"value":"21.5"`) {
			return fmt.Errorf("twin %s", o.Value)
		}
		return nil
	})
	cloudStatus := func(want string) func() error {
		return func() error {
			o, err := r.h.DB.Objects(metamanager.Name).Get(ctx, sdk.Key{Type: "devicestatus", Namespace: "default", Name: "thermo-1"})
			if err != nil {
				return err
			}
			if !strings.Contains(string(o.Value), want) {
				return fmt.Errorf("status %s", o.Value)
			}
			return nil
		}
	}
	waitFor(t, 10*time.Second, "reported value in the device status for the cloud", cloudStatus(`"value":"21.5"`))
	if _, err := r.client.ReportDeviceStates(ctx, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", DeviceNamespace: "default", State: "ok"}); err != nil {
		t.Fatalf("ReportDeviceStates: %v", err)
	}
	waitFor(t, 10*time.Second, "state (mapper's ok = online) in the device status for the cloud", cloudStatus(`"state":"online"`))
	// A Kedge mapper's failing properties (request metadata) reach the cloud status: the Healthy
	// condition and the twin's reported metadata.error, the device still online.
	md := metadata.AppendToOutgoingContext(ctx, sdkmapper.PropertyErrorsHeader, `{"temperature":{"read":"illegal data address"}}`)
	if _, err := r.client.ReportDeviceStates(md, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", DeviceNamespace: "default", State: "online"}); err != nil {
		t.Fatalf("ReportDeviceStates with property errors: %v", err)
	}
	waitFor(t, 10*time.Second, "the read error as condition ReadFailed in the device status for the cloud", cloudStatus(`"reason":"ReadFailed"`))
	waitFor(t, 10*time.Second, "the read error on the twin in the device status for the cloud", cloudStatus(`"error":"illegal data address"`))
	// Why the mapper says the device is offline becomes the condition's reason and message.
	md = metadata.AppendToOutgoingContext(ctx, sdkmapper.OfflineReasonHeader, `{"reason":"AuthenticationFailed","message":"the server refused user operator"}`)
	if _, err := r.client.ReportDeviceStates(md, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", DeviceNamespace: "default", State: "offline"}); err != nil {
		t.Fatalf("ReportDeviceStates with an offline reason: %v", err)
	}
	waitFor(t, 10*time.Second, "the offline reason as the condition in the device status for the cloud",
		cloudStatus(`"reason":"AuthenticationFailed","message":"the mapper reports the device offline: the server refused user operator`))
	if _, err := r.client.ReportDeviceStates(ctx, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", DeviceNamespace: "default", State: "online"}); err != nil {
		t.Fatalf("ReportDeviceStates online: %v", err)
	}
	waitFor(t, 10*time.Second, "state stored by devicetwin", func() error {
		o, err := r.h.DB.Objects(devicetwin.Name).Get(ctx, sdk.Key{Type: "devicestate", Namespace: "default", Name: "thermo-1"})
		if err != nil {
			return err
		}
		if !strings.Contains(string(o.Value), `"online"`) {
			return fmt.Errorf("state %s", o.Value)
		}
		return nil
	})
}

// The reconcile loop calls the registered mapper: a new device of its protocol is registered, a
// changed one updated, a deleted one removed; devices of other protocols never reach it.
func TestMapperIsToldWhenItsDevicesAreAddedChangedAndRemoved(t *testing.T) {
	r := newRig(t, nil)
	ms := newMapperServer(t, r.dir)
	register(t, r, "virtual", ms.socket, false)

	r.addThermo(t, "thermo-1", "virtual")
	waitFor(t, 10*time.Second, "RegisterDevice", func() error { return ms.has("RegisterDevice default/thermo-1") })
	if err := ms.has("CreateDeviceModel default/thermo"); err != nil {
		t.Fatalf("model not created before the device: %v", err)
	}
	r.fromCloud(t, message.OpInsert, "default/device/pump-1", "3", thermoDevice("pump-1", "modbus", "1", "3"))

	r.fromCloud(t, message.OpUpdate, "default/device/thermo-1", "4", thermoDevice("thermo-1", "virtual", "55", "4"))
	waitFor(t, 10*time.Second, "UpdateDevice", func() error { return ms.has("UpdateDevice default/thermo-1") })
	ms.mu.Lock()
	got := ms.last["default/thermo-1"]
	ms.mu.Unlock()
	if v := got.GetSpec().GetProperties()[1].GetDesired().GetValue(); v != "55" {
		t.Fatalf("updated desired = %q, want 55", v)
	}

	r.fromCloud(t, message.OpDelete, "default/device/thermo-1", "", `{}`)
	waitFor(t, 10*time.Second, "RemoveDevice", func() error { return ms.has("RemoveDevice default/thermo-1") })
	r.fromCloud(t, message.OpDelete, "default/devicemodel/thermo", "", `{}`)
	waitFor(t, 10*time.Second, "RemoveDeviceModel", func() error { return ms.has("RemoveDeviceModel default/thermo") })
	if err := ms.has("RegisterDevice default/pump-1"); err == nil {
		t.Fatal("a modbus device reached the virtual mapper")
	}
}

// Bad input gets a gRPC status naming what was wrong, and nothing reaches devicetwin.
func TestBadRequestsGetAStatusNamingTheProblem(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "virtual")
	ctx := context.Background()
	twin := func(p, v string, md map[string]string) *dmiv1beta1.DeviceStatus {
		return &dmiv1beta1.DeviceStatus{Twins: []*dmiv1beta1.Twin{{PropertyName: p, Reported: &dmiv1beta1.TwinProperty{Value: v, Metadata: md}}}}
	}
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"unknown device", func() error {
			_, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "nope", ReportedDevice: twin("temperature", "1", nil)})
			return err
		}, codes.NotFound, `device "nope" is not on this node`},
		{"no device name", func() error {
			_, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{ReportedDevice: twin("temperature", "1", nil)})
			return err
		}, codes.InvalidArgument, "deviceName is empty"},
		{"no twins", func() error {
			_, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "thermo-1"})
			return err
		}, codes.InvalidArgument, "no twins"},
		{"property not in the model", func() error {
			_, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "thermo-1", ReportedDevice: twin("humidity", "1", nil)})
			return err
		}, codes.InvalidArgument, `property "humidity" is not in its model "thermo"`},
		{"twin without a reported value", func() error {
			_, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "thermo-1",
				ReportedDevice: &dmiv1beta1.DeviceStatus{Twins: []*dmiv1beta1.Twin{{PropertyName: "temperature"}}}})
			return err
		}, codes.InvalidArgument, "no reported value"},
		{"timestamp not in milliseconds", func() error {
			_, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "thermo-1",
				ReportedDevice: twin("temperature", "1", map[string]string{"timestamp": "yesterday"})})
			return err
		}, codes.InvalidArgument, `metadata.timestamp "yesterday"`},
		{"unknown state", func() error {
			_, err := r.client.ReportDeviceStates(ctx, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", State: "sleepy"})
			return err
		}, codes.InvalidArgument, `state "sleepy"`},
		{"property errors metadata that is not a JSON object", func() error {
			md := metadata.AppendToOutgoingContext(ctx, sdkmapper.PropertyErrorsHeader, `["temperature"]`)
			_, err := r.client.ReportDeviceStates(md, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", State: "online"})
			return err
		}, codes.InvalidArgument, `metadata kedge-property-errors "[\"temperature\"]" is not a JSON object`},
		{"property errors metadata with an unknown key", func() error {
			md := metadata.AppendToOutgoingContext(ctx, sdkmapper.PropertyErrorsHeader, `{"temperature":{"reed":"x"}}`)
			_, err := r.client.ReportDeviceStates(md, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", State: "online"})
			return err
		}, codes.InvalidArgument, `unknown field "reed"`},
		{"offline reason metadata that is not a JSON object", func() error {
			md := metadata.AppendToOutgoingContext(ctx, sdkmapper.OfflineReasonHeader, `AuthenticationFailed`)
			_, err := r.client.ReportDeviceStates(md, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", State: "offline"})
			return err
		}, codes.InvalidArgument, `metadata kedge-offline-reason "AuthenticationFailed" is not a JSON object`},
		{"offline reason that is not a CamelCase word", func() error {
			md := metadata.AppendToOutgoingContext(ctx, sdkmapper.OfflineReasonHeader, `{"reason":"bad password!","message":"x"}`)
			_, err := r.client.ReportDeviceStates(md, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", State: "offline"})
			return err
		}, codes.InvalidArgument, `reason "bad password!" is not a CamelCase word`},
		{"state of an unknown device", func() error {
			_, err := r.client.ReportDeviceStates(ctx, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "ghost", DeviceNamespace: "default", State: "online"})
			return err
		}, codes.NotFound, "default/ghost"},
		{"register without a mapper", func() error {
			_, err := r.client.MapperRegister(ctx, &dmiv1beta1.MapperRegisterRequest{})
			return err
		}, codes.InvalidArgument, "mapper is missing"},
		{"register without a protocol", func() error {
			_, err := r.client.MapperRegister(ctx, &dmiv1beta1.MapperRegisterRequest{Mapper: &dmiv1beta1.MapperInfo{Name: "m", Address: []byte("/x.sock")}})
			return err
		}, codes.InvalidArgument, "protocol is empty"},
		{"register with a relative address", func() error {
			_, err := r.client.MapperRegister(ctx, &dmiv1beta1.MapperRegisterRequest{Mapper: &dmiv1beta1.MapperInfo{Name: "m", Protocol: "p", Address: []byte("x.sock")}})
			return err
		}, codes.InvalidArgument, "not an absolute unix socket path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.code, tc.want)
			}
		})
	}
	if _, err := r.h.DB.Objects(devicetwin.Name).Get(ctx, sdk.Key{Type: "twin", Namespace: "default", Name: "thermo-1/temperature"}); err == nil {
		t.Fatal("a refused report was stored")
	}
}

// A value of the wrong type passes dmi's checks but devicetwin refuses it (one place for value
// validation): the call fails with InvalidArgument naming the type (a success means stored), it is
// answered on the twin result topic too and not stored.
func TestValueOfTheWrongTypeIsRefusedByDevicetwinAndNotStored(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "virtual")
	_, err := r.client.ReportDeviceStatus(context.Background(), &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "thermo-1",
		ReportedDevice: &dmiv1beta1.DeviceStatus{Twins: []*dmiv1beta1.Twin{{PropertyName: "temperature", Reported: &dmiv1beta1.TwinProperty{Value: "warm"}}}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "not a number") {
		t.Fatalf("ReportDeviceStatus err = %v, want InvalidArgument naming the type", err)
	}
	res := r.awaitPublished(t, "$hw/events/device/thermo-1/twin/update/result")
	if res["code"] != float64(400) || !strings.Contains(fmt.Sprint(res["reason"]), "not a number") {
		t.Fatalf("result = %v, want code 400 naming the type", res)
	}
}

// Over the per-mapper limit the call gets ResourceExhausted; other mappers keep their own budget.
func TestRateLimitPerMapperAnswersResourceExhausted(t *testing.T) {
	r := newRig(t, map[string]any{"qps": 0.001, "burst": 3})
	r.addThermo(t, "thermo-1", "virtual")
	ms := newMapperServer(t, r.dir)
	register(t, r, "virtual", ms.socket, true) // 1 of 3
	ctx := context.Background()
	state := func() error {
		_, err := r.client.ReportDeviceStates(ctx, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", State: "online"})
		return err
	}
	for i := 0; i < 2; i++ {
		if err := state(); err != nil {
			t.Fatalf("call %d within the burst: %v", i+2, err)
		}
	}
	err := state()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), `protocol "virtual"`) {
		t.Fatalf("4th call: %v, want ResourceExhausted naming the mapper", err)
	}
	other := newMapperServer(t, sockDir(t))
	if _, err := r.client.MapperRegister(ctx, &dmiv1beta1.MapperRegisterRequest{Mapper: &dmiv1beta1.MapperInfo{Name: "m2", Protocol: "modbus", Address: []byte(other.socket)}}); err != nil {
		t.Fatalf("another mapper was limited by the first one's budget: %v", err)
	}
}

// A ReportDeviceStatus that succeeded is in devicetwin's store when the call returns: no waiting.
func TestReportDeviceStatusReturnsOnlyOnceTheValueIsStored(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "virtual")
	ctx := context.Background()
	for i := range 20 {
		v := fmt.Sprintf("%d.5", i)
		if _, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "thermo-1", DeviceNamespace: "default",
			ReportedDevice: &dmiv1beta1.DeviceStatus{Twins: []*dmiv1beta1.Twin{{PropertyName: "temperature",
				Reported: &dmiv1beta1.TwinProperty{Value: v}}}}}); err != nil {
			t.Fatalf("ReportDeviceStatus %s: %v", v, err)
		}
		o, err := r.h.DB.Objects(devicetwin.Name).Get(ctx, sdk.Key{Type: "twin", Namespace: "default", Name: "thermo-1/temperature"})
		if err != nil || !strings.Contains(string(o.Value), `"value":"`+v+`"`) {
			t.Fatalf("report %s succeeded but the store holds %s (%v)", v, o.Value, err)
		}
	}
}

// A mapper registers once, at its start (KubeEdge's mappers do not register again): after edgecore
// restarts on the same store, the registration is restored from it, the mapper is told about a new
// device without registering again, is not sent again what it already holds, and kedge_dmi_mappers
// counts it.
func TestMapperRegistrationSurvivesAnEdgecoreRestart(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "edge.db")
	r := newRigOn(t, dbPath, nil, "edgehub", "eventbus")
	r.addThermo(t, "thermo-1", "virtual")
	ms := newMapperServer(t, r.dir)
	if resp := register(t, r, "virtual", ms.socket, true); len(resp.DeviceList) != 1 {
		t.Fatalf("deviceList = %v, want thermo-1", resp.DeviceList)
	}
	if err := r.h.Stop(); err != nil {
		t.Fatal(err)
	}

	r2 := newRigOn(t, dbPath, nil, "edgehub", "eventbus")
	waitFor(t, 10*time.Second, "kedge_dmi_mappers 1 after the restart", func() error {
		if n := gauge(t, r2.h, "kedge_dmi_mappers"); n != 1 {
			return fmt.Errorf("kedge_dmi_mappers = %v", n)
		}
		return nil
	})
	r2.fromCloud(t, message.OpInsert, "default/device/thermo-2", "5", thermoDevice("thermo-2", "virtual", "7", "5"))
	waitFor(t, 10*time.Second, "RegisterDevice of a device added after the restart", func() error { return ms.has("RegisterDevice default/thermo-2") })
	r2.fromCloud(t, message.OpDelete, "default/device/thermo-1", "", `{}`)
	waitFor(t, 10*time.Second, "RemoveDevice of a device given before the restart", func() error { return ms.has("RemoveDevice default/thermo-1") })
	if err := ms.has("RegisterDevice default/thermo-1"); err == nil {
		t.Fatal("thermo-1 was sent again after the restart although the mapper holds it")
	}
}

// gauge reads a metric's value from the harness's registry.
func gauge(t testing.TB, h *sdktest.Harness, name string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetGauge().GetValue()
			}
			return v
		}
	}
	return -1
}

// kubectl delete device removes every edge-side record of it from the real store: devicetwin's
// device, twins and state, metamanager's device and its last devicestatus report, and the device in
// the mapper registration dmi keeps (after RemoveDevice to the mapper).
func TestDeletedDeviceLeavesNoRecordInTheEdgeStore(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "virtual")
	ms := newMapperServer(t, r.dir)
	register(t, r, "virtual", ms.socket, true)
	ctx := context.Background()
	if _, err := r.client.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "thermo-1", DeviceNamespace: "default",
		ReportedDevice: &dmiv1beta1.DeviceStatus{Twins: []*dmiv1beta1.Twin{{PropertyName: "temperature",
			Reported: &dmiv1beta1.TwinProperty{Value: "21.5", Metadata: map[string]string{"timestamp": fmt.Sprint(time.Now().UnixMilli()), "type": "FLOAT"}}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.ReportDeviceStates(ctx, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: "thermo-1", DeviceNamespace: "default", State: "online"}); err != nil {
		t.Fatal(err)
	}
	// records names every stored object of every module that mentions the device.
	records := func() []string {
		var out []string
		for _, mod := range []string{devicetwin.Name, metamanager.Name, dmi.Name} {
			objs, err := r.h.DB.Objects(mod).List(ctx, sdk.Query{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if strings.Contains(o.Name, "thermo-1") || (o.Type == "mapper" && strings.Contains(string(o.Value), "thermo-1")) {
					out = append(out, mod+" "+o.Key.String())
				}
			}
		}
		return out
	}
	waitFor(t, 10*time.Second, "twin, state and devicestatus stored", func() error {
		got := strings.Join(records(), " ")
		for _, want := range []string{"devicetwin twin/default/thermo-1/temperature", "devicetwin devicestate/default/thermo-1",
			"metamanager devicestatus/default/thermo-1", "metamanager device/default/thermo-1", "dmi mapper/virtual"} {
			if !strings.Contains(got, want) {
				return fmt.Errorf("%s missing from %s", want, got)
			}
		}
		return nil
	})
	r.fromCloud(t, message.OpDelete, "default/device/thermo-1", "", `{}`)
	waitFor(t, 10*time.Second, "RemoveDevice", func() error { return ms.has("RemoveDevice default/thermo-1") })
	waitFor(t, 10*time.Second, "no record of thermo-1 left", func() error {
		if left := records(); len(left) > 0 {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
}
