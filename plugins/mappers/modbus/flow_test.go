package modbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/plugins/mappers/modbus"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// rig is the modbus mapper module (the SDK runtime around the Driver) beside the real edge side of
// DMI — dmi, devicetwin, metamanager — and a real libmodbus server.
type rig struct {
	h   *sdktest.Harness
	srv *mbserver.Server
}

// extra runs more modules beside (e.g. a codec).
func newRig(t *testing.T, extra ...sdktest.Option) *rig {
	t.Helper()
	dir, err := os.MkdirTemp("", "mb") // unix socket paths must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv := mbserver.Start(t)
	dmiSock := filepath.Join(dir, "dmi.sock")
	mmInfo, ok := sdk.Lookup(metamanager.Name)
	if !ok {
		t.Fatal("metamanager not registered")
	}
	opts := append([]sdktest.Option{
		sdktest.Beside(dmi.Info, map[string]any{"socket": dmiSock, "reconcileInterval": "50ms", "callTimeout": "2s"}),
		sdktest.Beside(mmInfo, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(devicetwin.Info, map[string]any{"flushInterval": "20ms"}),
		sdktest.Capture("edgehub", "eventbus")}, extra...)
	h := sdktest.Run(t, modbus.Info, map[string]any{
		"dmiSocket": dmiSock, "socket": filepath.Join(dir, "mappers", "modbus.sock"),
		"collectCycle": "20ms", "healthCycle": "50ms", "backoffMin": "10ms", "backoffMax": "100ms", "callTimeout": "2s"},
		opts...)
	return &rig{h: h, srv: srv}
}

func (r *rig) fromCloud(t *testing.T, op, resource, rv, content string) {
	t.Helper()
	m := message.New("edgehub", "resource", op, resource)
	m.Header.ResourceVersion = rv
	m.Content = json.RawMessage(content)
	if err := r.h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
		t.Fatal(err)
	}
}

const plcModel = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"plc","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"modbus","properties":[
  {"name":"pi","type":"FLOAT","accessMode":"ReadOnly"},
  {"name":"setpoint","type":"FLOAT","accessMode":"ReadWrite"},
  {"name":"pump","type":"BOOLEAN","accessMode":"ReadWrite"}]}}`

// plcDevice reads pi from input registers 12-13 (float32 CDAB), setpoint from holding registers
// 20-21 (float32 word-swapped, scale 0.1) and pump from coil 70; piAt moves pi elsewhere.
func plcDevice(name, rv, addr string, piAt int, setpoint, pump string) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"plc"},"nodeName":%q,"protocol":{"protocolName":"modbus","configData":{"address":%q,"unitID":1,"timeout":"500ms"}},
  "properties":[
   {"name":"pi","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"modbus","configData":{"register":"InputRegister","offset":%d,"limit":2,"dataType":"float32","swapWord":true}}},
   {"name":"setpoint","reportToCloud":true,"collectCycle":20,"desired":{"value":%q},"visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":20,"limit":2,"dataType":"float32","scale":0.1,"swapWord":true}}},
   {"name":"pump","reportToCloud":true,"collectCycle":20,"desired":{"value":%q},"visitors":{"protocolName":"modbus","configData":{"register":"Coil","offset":70}}}]}}`,
		name, rv, sdktest.NodeName, addr, piAt, setpoint, pump)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
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
		return "", fmt.Errorf("twin %s/%s has no actual value: %s", device, prop, o.Value)
	}
	return *tw.Actual.Value, nil
}

func (r *rig) waitTwin(t *testing.T, device, prop, want string) {
	t.Helper()
	waitFor(t, 15*time.Second, device+"/"+prop+" = "+want+" in devicetwin", func() error {
		v, err := r.twin(device, prop)
		if err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("value %q", v)
		}
		return nil
	})
}

func (r *rig) waitState(t *testing.T, device, want string) {
	t.Helper()
	waitFor(t, 15*time.Second, device+" "+want+" in devicetwin", func() error {
		o, err := r.h.DB.Objects(devicetwin.Name).Get(context.Background(), sdk.Key{Type: "devicestate", Namespace: "default", Name: device})
		if err != nil {
			return err
		}
		var s struct {
			State string `json:"state"`
		}
		if err := json.Unmarshal(o.Value, &s); err != nil {
			return err
		}
		if s.State != want {
			return fmt.Errorf("state %q", s.State)
		}
		return nil
	})
}

func TestModbusDeviceReportsAndWritesThroughTheMapperRuntime(t *testing.T) {
	r := newRig(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/plc", "1", plcModel)
	r.fromCloud(t, message.OpInsert, "default/device/plc-1", "2", plcDevice("plc-1", "2", r.srv.Addr(), 12, "21.5", "true"))
	r.waitState(t, "plc-1", "online")
	r.waitTwin(t, "plc-1", "pi", "3.141590118408203")
	r.waitTwin(t, "plc-1", "setpoint", "21.5")
	r.waitTwin(t, "plc-1", "pump", "true")

	// The desired values were written to the libmodbus server: read them back with a plain client.
	c := mbtcp.NewClient(r.srv.Addr(), mbtcp.Options{UnitID: 1})
	defer c.Close()
	check := func(wantRegs string, wantCoil bool) {
		t.Helper()
		waitFor(t, 15*time.Second, "the server holds the desired values", func() error {
			regs, err := c.ReadHoldingRegisters(context.Background(), 20, 2)
			if err != nil {
				return err
			}
			coil, err := c.ReadCoils(context.Background(), 70, 1)
			if err != nil {
				return err
			}
			if got := fmt.Sprintf("%04x", regs); got != wantRegs || coil[0] != wantCoil {
				return fmt.Errorf("holding registers 20-21 %s, coil 70 %v", got, coil[0])
			}
			return nil
		})
	}
	check("[0000 4357]", true) // float32 215 (21.5 / 0.1) word-swapped

	// A new desired value on the Device is written too.
	r.fromCloud(t, message.OpUpdate, "default/device/plc-1", "3", plcDevice("plc-1", "3", r.srv.Addr(), 12, "-3", "false"))
	r.waitTwin(t, "plc-1", "setpoint", "-3")
	r.waitTwin(t, "plc-1", "pump", "false")
	check("[0000 c1f0]", false) // float32 -30
}

func TestWrongAddressOrUnreachableDeviceIsOfflineWhileOthersReport(t *testing.T) {
	r := newRig(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/plc", "1", plcModel)
	r.fromCloud(t, message.OpInsert, "default/device/good", "2", plcDevice("good", "2", r.srv.Addr(), 12, "1", "true"))
	r.waitState(t, "good", "online")
	r.waitTwin(t, "good", "pi", "3.141590118408203")

	// A device whose properties all sit at addresses the server does not have (exception responses),
	// and one whose server does not exist.
	bad := func(name, rv, addr string) string {
		return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"plc"},"nodeName":%q,"protocol":{"protocolName":"modbus","configData":{"address":%q,"timeout":"200ms"}},
  "properties":[{"name":"pi","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"modbus","configData":{"register":"InputRegister","offset":4000,"dataType":"float32"}}}]}}`,
			name, rv, sdktest.NodeName, addr)
	}
	r.fromCloud(t, message.OpInsert, "default/device/wrong-address", "3", bad("wrong-address", "3", r.srv.Addr()))
	r.fromCloud(t, message.OpInsert, "default/device/unreachable", "4", bad("unreachable", "4", "127.0.0.1:1"))
	r.waitState(t, "wrong-address", "offline")
	r.waitState(t, "unreachable", "offline")

	// good keeps reporting: a value written behind the mapper's back shows up in its twin.
	c := mbtcp.NewClient(r.srv.Addr(), mbtcp.Options{UnitID: 1})
	defer c.Close()
	regs, _ := (mbtcp.ValueSpec{Type: mbtcp.Float32, Scale: 0.1, SwapWord: true}).Encode(12.5)
	if err := c.WriteMultipleRegisters(context.Background(), 20, regs); err != nil {
		t.Fatal(err)
	}
	r.waitTwin(t, "good", "setpoint", "12.5")
	r.waitState(t, "good", "online")
}

// A Device whose property cannot work with its model type (FLOAT in one register) is refused when it
// arrives: the mapper answers RegisterDevice with an error naming the device, the property and the
// fields, counts it, and runs nothing for it; edgecore's dmi counts the failed call (and retries).
func TestDeviceWithAnImpossibleVisitorIsRefusedWhenItArrives(t *testing.T) {
	r := newRig(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/plc", "1", plcModel)
	for deadline := time.Now().Add(20 * time.Second); metricSum(t, r.h, "kedge_dmi_mappers", "") < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the mapper did not register")
		}
	}
	bad := fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"plc-bad","namespace":"default","resourceVersion":"2"},
 "spec":{"deviceModelRef":{"name":"plc"},"nodeName":%q,"protocol":{"protocolName":"modbus","configData":{"address":%q}},
  "properties":[{"name":"pi","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":0,"limit":1}}}]}}`,
		sdktest.NodeName, r.srv.Addr())
	r.fromCloud(t, message.OpInsert, "default/device/plc-bad", "2", bad)
	deadline := time.Now().Add(20 * time.Second)
	for {
		refused, failed := metricSum(t, r.h, "kedge_mapper_refused_devices_total", ""), metricSum(t, r.h, "kedge_dmi_mapper_calls_total", "RegisterDevice")
		if refused >= 1 && failed >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refused %v, RegisterDevice errors %v: the device was not refused", refused, failed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := metricSum(t, r.h, "kedge_mapper_devices", ""); n != 0 {
		t.Fatalf("kedge_mapper_devices = %v: the refused device runs", n)
	}
}

// metricSum sums a metric's samples (only those with a label value equal to match, when given;
// for kedge_dmi_mapper_calls_total only result="error").
func metricSum(t *testing.T, h *sdktest.Harness, name, match string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := match == ""
			errorResult := name != "kedge_dmi_mapper_calls_total"
			for _, l := range m.GetLabel() {
				if l.GetValue() == match {
					ok = true
				}
				if l.GetName() == "result" && l.GetValue() == "error" {
					errorResult = true
				}
			}
			if !ok || !errorResult {
				continue
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			} else if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
	}
	return sum
}

// What edgecore refuses in a report is told to the mapper synchronously and counted apart from
// reports that did not get through: two devices of one name in two namespaces (twin topics carry the
// name only) make dmi answer FailedPrecondition, and kedge_mapper_reports_total{result="refused"}
// moves while result="failed" stays 0.
func TestReportsEdgecoreRefusesAreCountedAsRefusedNotFailed(t *testing.T) {
	r := newRig(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/plc", "1", plcModel)
	other := strings.ReplaceAll(plcModel, `"namespace":"default"`, `"namespace":"other"`)
	r.fromCloud(t, message.OpInsert, "other/devicemodel/plc", "1", other)
	r.fromCloud(t, message.OpInsert, "default/device/plc-1", "2", plcDevice("plc-1", "2", r.srv.Addr(), 0, "20", "false"))
	r.fromCloud(t, message.OpInsert, "other/device/plc-1", "2",
		strings.ReplaceAll(plcDevice("plc-1", "2", r.srv.Addr(), 0, "20", "false"), `"namespace":"default"`, `"namespace":"other"`))
	waitFor(t, 20*time.Second, "a refused report counted", func() error {
		if n := reportsWith(t, r.h, "refused"); n < 1 {
			return fmt.Errorf("refused %v", n)
		}
		return nil
	})
	if n := reportsWith(t, r.h, "failed"); n != 0 {
		t.Fatalf("kedge_mapper_reports_total{result=failed} = %v: refusals counted as failures", n)
	}
}

func reportsWith(t *testing.T, h *sdktest.Harness, result string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "kedge_mapper_reports_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
