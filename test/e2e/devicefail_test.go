package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
	"github.com/kedge-io/kedge/test/k8senv"
	"github.com/kedge-io/kedge/test/slow"
)

// Issue 16's failure acceptance with the real binaries (cloudcore + edgecore with the modbus mapper,
// a real kube-apiserver, libmodbus servers as the devices): each way a device fails shows where users
// look — the Device's Healthy condition and a Warning Event in `kubectl describe device` — and moves
// the metric that counts it on the edge's /metrics:
//   - a reading outside the model's range (devicetwin refuses it; the mapper counts the report refused),
//   - a reading of the wrong type (a KubeEdge-style mapper reporting "warm" for a FLOAT over DMI;
//     and a register holding 23.75 for an INT property, which the modbus mapper cannot give as an INT),
//   - an unreachable device (its libmodbus server killed),
//   - a property whose reads fail while the device stays online (per-twin error in the status),
//   - desired values that do not reach the device: out of the model's range (devicetwin refuses)
//     and on a ReadOnly property (the mapper refuses).
//
// Each failure's latency from its cause to the condition and the Event being visible is measured
// and logged; the deadline to see them is generous (a loaded machine), the promise is 5 s.
func TestDeviceFailuresShowAsConditionAndWarningEventInKubectlDescribeAndMoveTheMetrics(t *testing.T) {
	needBinaries(t)
	srv, dead := startLibmodbusServer(t), startLibmodbus(t)
	dev := mbtcp.NewClient(srv, mbtcp.Options{UnitID: 1})
	t.Cleanup(func() { dev.Close() })
	deadDev := mbtcp.NewClient(dead.addr, mbtcp.Options{UnitID: 1})
	t.Cleanup(func() { deadDev.Close() })
	setFloatOn := func(t *testing.T, cl *mbtcp.Client, addr uint16, v float64) {
		t.Helper()
		regs, err := mbtcp.ValueSpec{Type: mbtcp.Float32}.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cl.WriteMultipleRegisters(ctx, addr, regs); err != nil {
			t.Fatalf("writing %v at holding register %d of the libmodbus server: %v", v, addr, err)
		}
	}
	setFloat := func(t *testing.T, addr uint16, v float64) { t.Helper(); setFloatOn(t, dev, addr, v) }
	setFloatOn(t, deadDev, 0, 21.25)
	setFloat(t, 0, 21.25) // temperature
	setFloat(t, 20, 42)   // count: an INT the registers hold as a float32 (explicit dataType)
	// setpoint (int16 tenths at holding register 10): 21.5, inside the model's 5..30
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := dev.WriteMultipleRegisters(ctx, 10, []uint16{215}); err != nil {
			t.Fatalf("writing the setpoint into the libmodbus server: %v", err)
		}
	}()

	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	api, err := devicecontroller.NewRESTClient(k8s.Config)
	if err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "kd") // unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	dmiSock := filepath.Join(sockDir, "dmi.sock")
	c := newDeviceCluster(t, k8s, "e2e-devfail", []string{
		"KEDGE_MODULES__DMI__SOCKET=" + dmiSock,
		"KEDGE_MODULES__DMI__RECONCILEINTERVAL=300ms",
		"KEDGE_MODULES__MODBUS__ENABLE=true",
		"KEDGE_MODULES__MODBUS__DMISOCKET=" + dmiSock,
		"KEDGE_MODULES__MODBUS__SOCKET=" + filepath.Join(sockDir, "mappers", "modbus.sock"),
		"KEDGE_MODULES__MODBUS__CALLTIMEOUT=2s",
		"KEDGE_MODULES__MODBUS__HEALTHCYCLE=1s",
		"KEDGE_MODULES__MODBUS__BACKOFFMIN=100ms",
		"KEDGE_MODULES__MODBUS__BACKOFFMAX=1s",
	})
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
	waitFor(t, "the modbus mapper registered with edgecore's DMI", 60*time.Second, func() (bool, string) {
		v := c.edge.metric("kedge_dmi_mappers")
		return v >= 1, fmt.Sprint(v)
	})

	ns := "devfail"
	c.kubectl("create", "namespace", ns)
	applyJSON := func(t *testing.T, objs ...map[string]any) {
		t.Helper()
		for i, o := range objs {
			b, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), fmt.Sprintf("obj-%d.json", i))
			if err := os.WriteFile(f, b, 0o644); err != nil {
				t.Fatal(err)
			}
			c.kubectl("apply", "-f", f)
		}
	}
	visitor := func(cfg map[string]any) map[string]any {
		return map[string]any{"protocolName": "modbus", "configData": cfg}
	}
	// Read every 200 ms, reported every 2 s: a refused reading is found at its report, a failing read
	// or write within a read; and the node's reports stay few (cloudcore handles one node's reports in
	// order, two API writes each — at 200 ms per device the queue grows on a loaded machine).
	prop := func(name string, cfg map[string]any) map[string]any {
		return map[string]any{"name": name, "collectCycle": 200, "reportCycle": 2000, "reportToCloud": true, "visitors": visitor(cfg)}
	}
	device := func(name, model, proto, addr string, props ...map[string]any) map[string]any {
		return map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{"deviceModelRef": map[string]any{"name": model}, "nodeName": c.node,
				"protocol":   map[string]any{"protocolName": proto, "configData": map[string]any{"address": addr, "unitID": 1, "timeout": "500ms"}},
				"properties": props}}
	}
	// KubeEdge-shaped: no dataType on temperature (the model's FLOAT decides: float32 over 2 registers).
	temperature := prop("temperature", map[string]any{"register": "HoldingRegister", "offset": 0, "limit": 2})
	model := map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
		"metadata": map[string]any{"name": "fail-thermo", "namespace": ns},
		"spec": map[string]any{"protocol": "modbus", "properties": []any{
			map[string]any{"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly", "minimum": "-40", "maximum": "125"},
			map[string]any{"name": "count", "type": "INT", "accessMode": "ReadOnly"},
			map[string]any{"name": "setpoint", "type": "FLOAT", "accessMode": "ReadWrite", "minimum": "5", "maximum": "30"},
		}}}
	applyJSON(t, model,
		device("range-1", "fail-thermo", "modbus", srv, temperature),
		device("type-1", "fail-thermo", "modbus", srv, temperature,
			prop("count", map[string]any{"register": "HoldingRegister", "offset": 20, "limit": 2, "dataType": "float32"})),
		device("dead-1", "fail-thermo", "modbus", dead.addr, temperature),
		device("write-1", "fail-thermo", "modbus", srv, temperature,
			prop("setpoint", map[string]any{"register": "HoldingRegister", "offset": 10, "dataType": "int16", "scale": 0.1})),
		// served by no mapper of its protocol: the test reports for it over DMI as a KubeEdge mapper would
		device("foreign-1", "fail-thermo", "acme", "127.0.0.1:1", map[string]any{"name": "temperature", "reportToCloud": true}),
	)
	healthy := func(name string) (metav1.Condition, bool) {
		d := getDevice(t, api, ns, name)
		for _, cd := range d.Status.Conditions {
			if cd.Type == v1beta1.ConditionHealthy {
				return cd, true
			}
		}
		return metav1.Condition{}, false
	}
	for _, name := range []string{"range-1", "type-1", "dead-1", "write-1"} {
		waitFor(t, name+" healthy with temperature 21.25", 90*time.Second, func() (bool, string) {
			cd, _ := healthy(name)
			tw, _ := findTwin(getDevice(t, api, ns, name).Status, "temperature")
			return cd.Status == metav1.ConditionTrue && tw.Reported.Value == "21.25", fmt.Sprintf("%+v %+v", cd, tw.Reported)
		})
	}

	type latency struct{ condition, event time.Duration }
	latencies := map[string]latency{}
	// visible waits from since until the Device's Healthy condition is False with reason (and its
	// message has every part) and `kubectl describe device` shows a Warning Event with that reason;
	// it records when each was first seen (the Event's time includes one kubectl run, ~1 s here).
	visible := func(t *testing.T, what, name, reason string, since time.Time, parts ...string) {
		t.Helper()
		waitFor(t, name+": Healthy False "+reason+" in the Device status", 60*time.Second, func() (bool, string) {
			cd, _ := healthy(name)
			ok := cd.Status == metav1.ConditionFalse && cd.Reason == reason
			for _, p := range parts {
				ok = ok && strings.Contains(cd.Message, p)
			}
			return ok, fmt.Sprintf("%+v", cd)
		})
		l := latency{condition: time.Since(since)}
		var out string
		waitFor(t, name+": a Warning "+reason+" Event in kubectl describe device", 60*time.Second, func() (bool, string) {
			out = c.kubectl("describe", "device", name, "-n", ns)
			return logHas(out, "Warning", reason), out
		})
		l.event = time.Since(since)
		latencies[what] = l
		t.Logf("%s: condition in the Device status after %v, Warning Event in kubectl describe after %v", what,
			l.condition.Round(10*time.Millisecond), l.event.Round(10*time.Millisecond))
		if !strings.Contains(out, "Healthy") || !strings.Contains(out, reason) {
			t.Fatalf("kubectl describe device %s does not show the condition:\n%s", name, out)
		}
	}

	t.Run("a reading outside the model's range", func(t *testing.T) {
		refused := c.edge.metric("kedge_mapper_reports_total", `device="`+ns+`/range-1"`, `result="refused"`)
		begin := time.Now()
		setFloat(t, 0, 500.5)
		visible(t, "out of range", "range-1", v1beta1.ReasonReadingRefused, begin, `property "temperature": 500.5 is above the maximum 125`)
		waitFor(t, "the mapper counts the refused report", 30*time.Second, func() (bool, string) {
			v := c.edge.metric("kedge_mapper_reports_total", `device="`+ns+`/range-1"`, `result="refused"`)
			return v > refused, fmt.Sprint(refused, " -> ", v)
		})
		if s := getDevice(t, api, ns, "range-1").Status.State; s != "online" {
			t.Fatalf("range-1 is %q: a refused reading is not an offline device", s)
		}
		setFloat(t, 0, 21.25)
		waitFor(t, "range-1 healthy again after a reading in range", 60*time.Second, func() (bool, string) {
			cd, _ := healthy("range-1")
			return cd.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", cd)
		})
	})

	t.Run("a reading of the wrong type reported over DMI", func(t *testing.T) {
		conn, err := grpc.NewClient("unix://"+dmiSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cl := dmiv1beta1.NewDeviceManagerServiceClient(conn)
		before := c.edge.metric("kedge_devicetwin_refused_total", `kind="reading"`)
		begin := time.Now()
		var callErr error
		waitFor(t, "DMI ReportDeviceStatus answers for foreign-1", 30*time.Second, func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, callErr = cl.ReportDeviceStatus(ctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: "foreign-1", DeviceNamespace: ns,
				ReportedDevice: &dmiv1beta1.DeviceStatus{Twins: []*dmiv1beta1.Twin{{PropertyName: "temperature", Reported: &dmiv1beta1.TwinProperty{Value: "warm"}}}}})
			return callErr != nil && strings.Contains(callErr.Error(), "not a number"), fmt.Sprint(callErr)
		})
		t.Logf("the DMI caller is answered synchronously: %s: %s", status.Code(callErr), status.Convert(callErr).Message())
		visible(t, "wrong type (DMI)", "foreign-1", v1beta1.ReasonReadingRefused, begin, `property "temperature" is FLOAT: "warm" is not a number`)
		if v := c.edge.metric("kedge_devicetwin_refused_total", `kind="reading"`); v <= before {
			t.Fatalf("kedge_devicetwin_refused_total{kind=reading} %v -> %v: the refusal is not counted", before, v)
		}
	})

	t.Run("a register that does not hold the model's type fails that property while the device stays online", func(t *testing.T) {
		waitFor(t, "type-1 count = 42", 60*time.Second, func() (bool, string) {
			tw, _ := findTwin(getDevice(t, api, ns, "type-1").Status, "count")
			return tw.Reported.Value == "42", fmt.Sprintf("%+v", tw.Reported)
		})
		errs := c.edge.metric("kedge_mapper_read_errors_total", `device="`+ns+`/type-1"`)
		begin := time.Now()
		setFloat(t, 20, 23.75)
		visible(t, "wrong type (register)", "type-1", v1beta1.ReasonReadFailed, begin, `property "count"`, "23.75")
		if v := c.edge.metric("kedge_mapper_read_errors_total", `device="`+ns+`/type-1"`); v <= errs {
			t.Fatalf("kedge_mapper_read_errors_total for type-1 %v -> %v", errs, v)
		}
		st := getDevice(t, api, ns, "type-1").Status
		if st.State != "online" {
			t.Fatalf("type-1 is %q while only count fails: %+v", st.State, st)
		}
		waitFor(t, "the per-twin error on count next to its last value", 30*time.Second, func() (bool, string) {
			tw, _ := findTwin(getDevice(t, api, ns, "type-1").Status, "count")
			return tw.Reported.Value == "42" && strings.Contains(tw.Reported.Metadata["error"], "23.75"), fmt.Sprintf("%+v", tw.Reported)
		})
		setFloat(t, 0, 22.5)
		waitFor(t, "type-1 temperature keeps reporting", 60*time.Second, func() (bool, string) {
			tw, _ := findTwin(getDevice(t, api, ns, "type-1").Status, "temperature")
			return tw.Reported.Value == "22.5", fmt.Sprintf("%+v", tw.Reported)
		})
		out := c.kubectl("get", "device", "type-1", "-n", ns, "-o", "yaml")
		if !strings.Contains(out, "error:") || !strings.Contains(out, "ReadFailed") {
			t.Fatalf("kubectl get device -o yaml shows no per-twin error and ReadFailed:\n%s", out)
		}
		setFloat(t, 20, 7)
		waitFor(t, "count readable again: the error is gone and the device healthy", 60*time.Second, func() (bool, string) {
			d := getDevice(t, api, ns, "type-1")
			tw, _ := findTwin(d.Status, "count")
			cd, _ := healthy("type-1")
			return tw.Reported.Value == "7" && tw.Reported.Metadata["error"] == "" && cd.Status == metav1.ConditionTrue, fmt.Sprintf("%+v %+v", tw.Reported, cd)
		})
	})

	t.Run("an unreachable device", func(t *testing.T) {
		begin := time.Now()
		dead.kill()
		visible(t, "unreachable", "dead-1", v1beta1.ReasonDeviceOffline, begin)
		if v := c.edge.metric("kedge_mapper_device_online", `device="`+ns+`/dead-1"`); v != 0 {
			t.Fatalf("kedge_mapper_device_online for dead-1 = %v, want 0", v)
		}
		if s := getDevice(t, api, ns, "dead-1").Status.State; s != "offline" {
			t.Fatalf("dead-1 state %q, want offline", s)
		}
	})

	t.Run("desired values that do not reach the device", func(t *testing.T) {
		begin := time.Now()
		c.kubectl("patch", "device", "write-1", "-n", ns, "--type=json", "-p",
			`[{"op":"add","path":"/spec/properties/1/desired","value":{"value":"99"}}]`)
		visible(t, "desired out of range", "write-1", v1beta1.ReasonWriteRefused, begin, `property "setpoint": 99 is above the maximum 30`)
		c.kubectl("patch", "device", "write-1", "-n", ns, "--type=json", "-p",
			`[{"op":"replace","path":"/spec/properties/1/desired/value","value":"21.5"}]`)
		waitFor(t, "write-1 healthy after an acceptable setpoint", 60*time.Second, func() (bool, string) {
			cd, _ := healthy("write-1")
			tw, _ := findTwin(getDevice(t, api, ns, "write-1").Status, "setpoint")
			return cd.Status == metav1.ConditionTrue && tw.Reported.Value == "21.5", fmt.Sprintf("%+v %+v", cd, tw.Reported)
		})
		refusedWrites := c.edge.metric("kedge_mapper_writes_total", `device="`+ns+`/write-1"`, `result="refused"`)
		begin = time.Now()
		c.kubectl("patch", "device", "write-1", "-n", ns, "--type=json", "-p",
			`[{"op":"add","path":"/spec/properties/0/desired","value":{"value":"20"}}]`)
		visible(t, "desired on a ReadOnly property", "write-1", v1beta1.ReasonWriteRefused, begin, `property "temperature"`, "read-only")
		if v := c.edge.metric("kedge_mapper_writes_total", `device="`+ns+`/write-1"`, `result="refused"`); v <= refusedWrites {
			t.Fatalf("kedge_mapper_writes_total{result=refused} for write-1 %v -> %v", refusedWrites, v)
		}
		if s := getDevice(t, api, ns, "write-1").Status.State; s != "online" {
			t.Fatalf("write-1 is %q: a refused write is not an offline device", s)
		}
	})

	// The issue promises 5 s. The deadlines above are generous so that a loaded machine does not fail
	// the suite; the latencies are logged for the record, and only one far beyond the promise (4x,
	// times KEDGE_TEST_TIMEOUT_SCALE) fails — a queue that grows, not a slow moment.
	limit := slow.Scale(4 * 5 * time.Second)
	for what, l := range latencies {
		t.Logf("latency %-36s condition %v, Event in kubectl describe %v", what, l.condition.Round(10*time.Millisecond), l.event.Round(10*time.Millisecond))
		if l.event > limit {
			t.Errorf("%s: the Warning Event took %v to show in kubectl describe (promise 5 s; failing beyond %v)", what, l.event.Round(10*time.Millisecond), limit)
		}
	}
}
