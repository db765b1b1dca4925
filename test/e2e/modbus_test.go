package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/test/k8senv"
)

// The acceptance path of the Modbus mapper (issue 8, without the hot swap) with the real binaries, the
// real API server and a real libmodbus server as the device: kubectl apply the examples'
// modbus-thermostat DeviceModel and Device → edgecore's modbus mapper registers with its DMI, polls the
// libmodbus server and `kubectl get device -o yaml` shows the live values, which follow the registers
// when the device side changes them; desired values (at apply time and by kubectl patch) are written
// to the holding register and the coil and read back with a Modbus client; an unreachable device is
// offline on its Device while the thermostat keeps reporting; a property at an address the server
// does not have (exception response) fails alone, the other properties keep reporting.
func TestModbusThermostatReportsLiveRegistersAndTakesDesiredValuesThroughKubectl(t *testing.T) {
	needBinaries(t)
	srv := startLibmodbusServer(t)
	dev := mbtcp.NewClient(srv, mbtcp.Options{UnitID: 1})
	t.Cleanup(func() { dev.Close() })
	temp := mbtcp.ValueSpec{Type: mbtcp.Float32}
	setTemp := func(t *testing.T, v float64) {
		t.Helper()
		regs, err := temp.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := dev.WriteMultipleRegisters(ctx, 0, regs); err != nil {
			t.Fatalf("writing the temperature into the libmodbus server: %v", err)
		}
	}
	setTemp(t, 21.25) // pre-filled before the mapper sees the device

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
	// Unix socket paths are limited to 108 bytes: t.TempDir() under a long test name is too long.
	sockDir, err := os.MkdirTemp("", "kd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	dmiSock := filepath.Join(sockDir, "dmi.sock")
	c := newDeviceCluster(t, k8s, "e2e-modbus", []string{
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

	ns, good, unreachable := "modbus", "modbus-thermostat-1", "modbus-thermostat-unreachable"
	c.kubectl("create", "namespace", ns)
	applyModbusExamples(t, c, ns, srv, "127.0.0.1:"+strconv.Itoa(freePort(t)), unreachable)
	get := func(name string) *v1beta1.Device { return getDevice(t, api, ns, name) }
	reported := func(name, prop string) string {
		tw, _ := findTwin(get(name).Status, prop)
		return tw.Reported.Value
	}
	waitReported := func(t *testing.T, name, prop, want string) {
		t.Helper()
		waitFor(t, name+" "+prop+" = "+want+" in the Device status", 60*time.Second, func() (bool, string) {
			got := reported(name, prop)
			return got == want, fmt.Sprintf("%q", got)
		})
	}
	readBack := func(t *testing.T, what string, cond func() (bool, string)) {
		t.Helper()
		waitFor(t, what+" (read back from the libmodbus server)", 30*time.Second, cond)
	}
	holding := func(addr uint16) (uint16, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := dev.ReadHoldingRegisters(ctx, addr, 1)
		if err != nil {
			return 0, err
		}
		return r[0], nil
	}
	coil := func(addr uint16) (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := dev.ReadCoils(ctx, addr, 1)
		if err != nil {
			return false, err
		}
		return r[0], nil
	}

	t.Run("kubectl get device shows live reported values that follow the registers", func(t *testing.T) {
		waitReported(t, good, "temperature", "21.25")
		waitReported(t, good, "heater", "true") // coil 0 is on in the server's initial table
		for _, v := range []float64{22.75, -3.5} {
			setTemp(t, v)
			waitReported(t, good, "temperature", strconv.FormatFloat(v, 'f', -1, 64))
		}
		out := c.kubectl("get", "device", good, "-n", ns, "-o", "yaml")
		if !strings.Contains(out, "propertyName: temperature") || !strings.Contains(out, `value: "-3.5"`) || !strings.Contains(out, "state: online") {
			t.Fatalf("kubectl get device -o yaml does not show the live temperature and the state:\n%s", out)
		}
	})

	t.Run("the desired setpoint of the Device is written to its holding register", func(t *testing.T) {
		readBack(t, "holding register 10 = 215 (21.5 in tenths)", func() (bool, string) {
			v, err := holding(10)
			return err == nil && v == 215, fmt.Sprint(v, err)
		})
		waitReported(t, good, "setpoint", "21.5")
	})

	t.Run("kubectl patch of desired values writes the register and the coil", func(t *testing.T) {
		c.kubectl("patch", "device", good, "-n", ns, "--type=json", "-p",
			`[{"op":"replace","path":"/spec/properties/1/desired/value","value":"23.5"},`+
				`{"op":"add","path":"/spec/properties/2/desired","value":{"value":"false"}}]`)
		readBack(t, "holding register 10 = 235 and coil 0 off", func() (bool, string) {
			v, err := holding(10)
			on, cerr := coil(0)
			return err == nil && cerr == nil && v == 235 && !on, fmt.Sprint(v, err, on, cerr)
		})
		waitReported(t, good, "setpoint", "23.5")
		waitReported(t, good, "heater", "false")
		waitFor(t, "observed desired setpoint 23.5", 60*time.Second, func() (bool, string) {
			tw, _ := findTwin(get(good).Status, "setpoint")
			return tw.ObservedDesired.Value == "23.5", fmt.Sprintf("%+v", tw)
		})
	})

	t.Run("an unreachable device is offline on its Device while the thermostat keeps reporting", func(t *testing.T) {
		waitFor(t, unreachable+" offline", 60*time.Second, func() (bool, string) {
			s := get(unreachable).Status
			return s.State == "offline", fmt.Sprintf("%+v", s)
		})
		if s := get(unreachable).Status; len(s.Twins) != 0 {
			for _, tw := range s.Twins {
				if tw.Reported.Value != "" {
					t.Fatalf("the unreachable device has a reported value: %+v", s.Twins)
				}
			}
		}
		if !logHas(c.edge.stderr.String(), "read failed", ns+"/"+unreachable, "connection refused") {
			t.Fatalf("edgecore's log has no read error naming the unreachable device and its cause (connection refused)")
		}
		setTemp(t, 19.5)
		waitReported(t, good, "temperature", "19.5")
		if s := get(good).Status.State; s != "online" {
			t.Fatalf("the thermostat is %q while another device is unreachable", s)
		}
	})

	t.Run("a wrong register address fails that property alone", func(t *testing.T) {
		// humidity sits at holding register 4000: the server answers IllegalDataAddress.
		waitFor(t, "read errors counted for the thermostat", 30*time.Second, func() (bool, string) {
			v := c.edge.metric("kedge_mapper_read_errors_total", `device="`+ns+"/"+good+`"`)
			return v >= 1, fmt.Sprint(v)
		})
		log := c.edge.stderr.String()
		if !logHas(log, "read failed", "property=humidity", good, "illegal data address") {
			t.Fatalf("edgecore's log has no read error naming humidity and the exception")
		}
		if v := reported(good, "humidity"); v != "" {
			t.Fatalf("humidity reported %q from a register that does not exist", v)
		}
		setTemp(t, 20.5)
		waitReported(t, good, "temperature", "20.5")
		st := get(good).Status
		if st.State != "online" {
			t.Fatalf("the thermostat is %q because one property fails: %+v", st.State, st)
		}
		for _, p := range []string{"setpoint", "heater"} {
			if tw, _ := findTwin(st, p); tw.Reported.Value == "" {
				t.Fatalf("%s lost its reported value: %+v", p, st.Twins)
			}
		}
	})
}

// logHas reports whether one line of log contains every part (case-insensitive).
func logHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		l := strings.ToLower(line)
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, strings.ToLower(p))
		}
		if ok {
			return true
		}
	}
	return false
}

func getDevice(t *testing.T, api rest.Interface, ns, name string) *v1beta1.Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dev := &v1beta1.Device{}
	if err := api.Get().Namespace(ns).Resource(v1beta1.ResourceDevices).Name(name).Do(ctx).Into(dev); err != nil {
		t.Fatal(err)
	}
	return dev
}

// applyModbusExamples applies examples/devices/modbus-model.yaml and modbus-device.yaml into ns, the
// device bound to the edge node at addr and polled every 200 ms, plus for the bad-input cases: a
// humidity property at a holding register the server does not have (model and device), and a copy
// of the device named unreachable at a port nothing listens on.
func applyModbusExamples(t *testing.T, c *cluster, ns, addr, deadAddr, unreachable string) {
	t.Helper()
	load := func(f string) map[string]any {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "devices", f))
		if err != nil {
			t.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatalf("examples/devices/%s: %v", f, err)
		}
		var m map[string]any
		if err := json.Unmarshal(j, &m); err != nil {
			t.Fatal(err)
		}
		m["metadata"].(map[string]any)["namespace"] = ns
		return m
	}
	model, device := load("modbus-model.yaml"), load("modbus-device.yaml")
	mspec := model["spec"].(map[string]any)
	mspec["properties"] = append(mspec["properties"].([]any), map[string]any{"name": "humidity", "type": "FLOAT", "accessMode": "ReadOnly"})

	spec := device["spec"].(map[string]any)
	if spec["nodeName"] != "edge-1" {
		t.Fatalf("examples/devices/modbus-device.yaml changed: nodeName %v, want edge-1", spec["nodeName"])
	}
	spec["nodeName"] = c.node
	spec["protocol"].(map[string]any)["configData"].(map[string]any)["address"] = addr
	props := spec["properties"].([]any)
	names := []string{}
	for _, p := range props {
		pm := p.(map[string]any)
		pm["collectCycle"] = 200
		names = append(names, fmt.Sprint(pm["name"]))
	}
	// The patch in the test addresses properties by index.
	if strings.Join(names, ",") != "temperature,setpoint,heater" {
		t.Fatalf("examples/devices/modbus-device.yaml changed: properties %v, want temperature,setpoint,heater", names)
	}
	spec["properties"] = append(props, map[string]any{"name": "humidity", "collectCycle": 200, "reportToCloud": true,
		"visitors": map[string]any{"protocolName": "modbus", "configData": map[string]any{"register": "HoldingRegister", "offset": 4000}}})

	var dead map[string]any
	b, _ := json.Marshal(device)
	_ = json.Unmarshal(b, &dead)
	dead["metadata"].(map[string]any)["name"] = unreachable
	dspec := dead["spec"].(map[string]any)
	dspec["protocol"].(map[string]any)["configData"].(map[string]any)["address"] = deadAddr
	dspec["properties"] = dspec["properties"].([]any)[:1] // the temperature only: nothing to write

	for i, obj := range []map[string]any{model, device, dead} {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), fmt.Sprintf("modbus-%d.json", i))
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		c.kubectl("apply", "-f", f)
	}
}

// startLibmodbusServer compiles the modbus mapper's test server (plugins/mappers/modbus/testdata/
// server.c: 100 of each table, holding register i = 1000+i, coil i on when i%3 == 0) with gcc against
// Debian's libmodbus, starts it on a free loopback port and returns its address.
func startLibmodbusServer(t *testing.T) string {
	t.Helper()
	return startLibmodbus(t).addr
}

// libmodbusServer is a running libmodbus test server.
type libmodbusServer struct {
	addr string
	kill func() // stops it (the device becomes unreachable); idempotent
}

// startLibmodbus is startLibmodbusServer with a way to stop the server while the test runs.
func startLibmodbus(t *testing.T) libmodbusServer {
	t.Helper()
	if _, err := os.Stat("/usr/include/modbus/modbus.h"); err != nil {
		out, err := exec.Command("apt-get", "install", "-y", "gcc", "libmodbus-dev").CombinedOutput()
		if err != nil {
			if upd, uerr := exec.Command("apt-get", "update").CombinedOutput(); uerr != nil {
				t.Fatalf("apt-get update: %v\n%s", uerr, upd)
			}
			out, err = exec.Command("apt-get", "install", "-y", "gcc", "libmodbus-dev").CombinedOutput()
		}
		if err != nil {
			t.Fatalf("gcc and libmodbus-dev are needed (apt-get install -y gcc libmodbus-dev): %v\n%s", err, out)
		}
	}
	src := filepath.Join("..", "..", "plugins", "mappers", "modbus", "testdata", "server.c")
	bin := filepath.Join(t.TempDir(), "mbserver")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-I/usr/include/modbus", "-o", bin, src, "-lmodbus").CombinedOutput(); err != nil {
		t.Fatalf("compiling %s with gcc -lmodbus: %v\n%s", src, err, out)
	}
	cmd := exec.Command(bin, "0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the libmodbus server: %v", err)
	}
	done := make(chan struct{})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
		_ = cmd.Wait()
		close(done)
	}()
	kill := func() {
		_ = cmd.Process.Kill() // the server this test started, by its id
		<-done
	}
	t.Cleanup(kill)
	select {
	case l := <-line:
		var port int
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "LISTENING %d", &port); err != nil {
			t.Fatalf("the libmodbus server did not report its port (got %q, stderr %s)", l, errb)
		}
		return libmodbusServer{addr: "127.0.0.1:" + strconv.Itoa(port), kill: kill}
	case <-time.After(30 * time.Second):
		t.Fatalf("the libmodbus server did not start within 30s: %s", errb)
	}
	return libmodbusServer{}
}
