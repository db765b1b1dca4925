package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo/layout"
	"github.com/kedge-io/kedge/test/k8senv"
	"github.com/kedge-io/kedge/test/slow"
	"github.com/kedge-io/kedge/test/t100sim"
)

// The hot-swap acceptance of issue 8 through the real binaries: a T-100 thermometer (examples/devices
// modbus-t100-*.yaml) whose registers live in a libmodbus server is polled every 100 ms by edgecore's
// modbus mapper, its temperature decoded by the thermo-codec module. The device produces a new
// sample for every read (seqDevice: each read of its registers advances the count the registers
// hold), so each reading is identifiable. While it is polled, `edgecore module swap` over the control
// socket moves the codec builtin → WASM v1 → WASM v2 (Kelvin). Every count the device served reaches
// devicetwin's $hw/events/device/<id>/twin/update/document on edgecore's embedded MQTT broker exactly
// once and in order, no read fails, the unit switches to Kelvin exactly once, and `kubectl get device
// -o yaml` shows the live Kelvin value afterwards.
func TestModbusCodecHotSwappedToWASMUnderPollingLosesAndDuplicatesNoReading(t *testing.T) {
	needBinaries(t)
	ensureMosquittoClients(t)
	guests := make(chan thermoGuests, 1)
	go func() { guests <- buildThermoGuests(t.TempDir()) }() // meanwhile the cluster starts

	srv := startLibmodbusServer(t)
	dev := startSeqDevice(t, srv, t100Registers)

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
	sockDir, err := os.MkdirTemp("", "ks") // unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	dmiSock := filepath.Join(sockDir, "dmi.sock")
	mqttPort := freePort(t)
	c := newDeviceCluster(t, k8s, "e2e-modbus-swap", []string{
		"KEDGE_PLUGINS__CACHEDIR=" + filepath.Join(t.TempDir(), "wasm-cache"),
		"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal",
		"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(mqttPort),
		"KEDGE_MODULES__DMI__SOCKET=" + dmiSock,
		"KEDGE_MODULES__DMI__RECONCILEINTERVAL=300ms",
		"KEDGE_MODULES__THERMO-CODEC__ENABLE=true",
		"KEDGE_MODULES__MODBUS__ENABLE=true",
		"KEDGE_MODULES__MODBUS__DMISOCKET=" + dmiSock,
		"KEDGE_MODULES__MODBUS__SOCKET=" + filepath.Join(sockDir, "mappers", "modbus.sock"),
		"KEDGE_MODULES__MODBUS__CALLTIMEOUT=" + slow.Scale(10*time.Second).String(),
		"KEDGE_MODULES__MODBUS__HEALTHCYCLE=1s",
		"KEDGE_MODULES__MODBUS__BACKOFFMIN=100ms",
		"KEDGE_MODULES__MODBUS__BACKOFFMAX=1s",
	})
	mq := startMQTTSub(t, mqttPort)
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
	waitFor(t, "the modbus mapper registered with edgecore's DMI", 60*time.Second, func() (bool, string) {
		v := c.edge.metric("kedge_dmi_mappers")
		return v >= 1, fmt.Sprint(v)
	})
	c.edge.moduleLs("thermo-codec")

	ns, name := "modbus-swap", "modbus-t100-1"
	c.kubectl("create", "namespace", ns)
	// The example's 500 ms Modbus answer timeout fails a read whose answer a busy machine delivers
	// late (seen at load ~25: the device served count 250, the mapper gave up on it): generous here,
	// since this test counts every read the device served.
	applyT100ExamplesWithTimeout(t, c, ns, dev.Addr(), slow.Scale(5*time.Second).String())
	docTopic := "$hw/events/device/" + name + "/twin/update/document"
	readings := func() []t100Reading { return t100Readings(t, mq, docTopic) }
	atLeast := func(n int, what string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d readings in devicetwin's documents (%s)", n, what), 60*time.Second, func() (bool, string) {
			got := len(readings())
			return got >= n, fmt.Sprintf("%d readings, %d served", got, len(dev.Served()))
		})
	}
	atLeast(10, "builtin codec")

	g := <-guests
	if g.err != nil {
		t.Fatal(g.err)
	}
	swap := func(to, path, sum string) {
		t.Helper()
		// The new codec compiles cold (edgecore built -race, on a machine that may be busy) while the
		// builtin keeps serving; the swap's preparation is bounded by plugins.prepareTimeout (10m).
		code, out, stderr := runWithin(t, 10*time.Minute, "edgecore", nil, "module", "swap", "thermo-codec", "--runtime", "wasm", "--path", path, "--sha256", sum, "--socket", c.edge.socket)
		if code != 0 || !strings.Contains(out, "swapped thermo-codec: "+to) {
			t.Fatalf("module swap thermo-codec to %s: exit %d\n%s%s", path, code, out, stderr)
		}
		t.Logf("%s", strings.SplitN(out, "\n", 2)[0])
	}
	// Each swap may take long on a busy machine (the new codec compiles while the old one serves), so
	// count from when it returned: 10 readings after each swap, however many came meanwhile.
	swap("builtin -> wasm", g.v1, g.v1sum)
	n := len(readings())
	atLeast(n+10, "after the swap to WASM v1")
	if out := c.edge.moduleLs("thermo-codec"); !moduleRow(out, "thermo-codec", "wasm", "1.0.0") {
		t.Fatalf("module ls after the swap to WASM v1:\n%s", out)
	}
	swap("wasm -> wasm", g.v2, g.v2sum)
	servedAtV2 := len(dev.Served()) // reads from here on were served after the swap to v2 returned
	n = len(readings())
	atLeast(n+10, "after the swap to WASM v2")
	if out := c.edge.moduleLs("thermo-codec"); !moduleRow(out, "thermo-codec", "wasm", "2.0.0") {
		t.Fatalf("module ls after the swap to WASM v2:\n%s", out)
	}

	t.Run("every count the device served reached the twin once, in order, the unit switching once", func(t *testing.T) {
		served := dev.Served()
		var got []t100Reading
		waitFor(t, "devicetwin's documents caught up with the reads served so far", 30*time.Second, func() (bool, string) {
			got = readings()
			return len(got) > 0 && int(got[len(got)-1].count) >= int(served[len(served)-1]), fmt.Sprintf("%d readings, %d served", len(got), len(served))
		})
		first := -1
		for i, s := range served {
			if s == got[0].count {
				first = i
				break
			}
		}
		if first < 0 {
			t.Fatalf("the first reading in the twin, count %d, was never served: %v", got[0].count, served)
		}
		// Reads before the device reached devicetwin cannot land in it; from the first reading on,
		// nothing may go missing.
		t.Logf("%d reads served, %d readings in the twin (from served read %d on), %d Celsius", len(served), len(got), first, celsiusCount(got))
		if first > 3 {
			t.Errorf("the first %d reads served never reached the twin", first)
		}
		switches := 0
		for i, rd := range got {
			if first+i >= len(served) {
				break // read after the snapshot of served
			}
			if rd.count != served[first+i] {
				t.Fatalf("reading %d carries count %d, the device served %d: a reading was lost, duplicated or reordered\ntwin: %v\nserved: %v",
					i, rd.count, served[first+i], got, served[first:])
			}
			if first+i >= servedAtV2 && !rd.kelvin {
				t.Fatalf("reading %d (count %d) was served after the swap to v2 returned, yet decoded in Celsius: the swap reported success and the old codec kept serving", i, rd.count)
			}
			if i > 0 && rd.kelvin != got[i-1].kelvin {
				if !rd.kelvin {
					t.Fatalf("reading %d in Celsius after the Kelvin ones began: %v", i, got)
				}
				switches++
			}
		}
		if switches != 1 || !got[len(got)-1].kelvin {
			t.Fatalf("the unit switched %d times, last reading Kelvin=%v; want once, to Kelvin: %v", switches, got[len(got)-1].kelvin, got)
		}
		if v := c.edge.metric("kedge_mapper_read_errors_total", `device="`+ns+"/"+name+`"`); v != 0 {
			t.Fatalf("%v reads failed across the swaps\n%s", v, c.edge.stderr)
		}
	})

	t.Run("kubectl get device shows the live Kelvin value after the swaps", func(t *testing.T) {
		var last string
		waitFor(t, "a Kelvin reading newer than the swaps in the Device status", 60*time.Second, func() (bool, string) {
			tw, _ := findTwin(getDevice(t, api, ns, name).Status, "temperature")
			v, err := strconv.ParseFloat(tw.Reported.Value, 64)
			served := dev.Served()
			if err != nil || len(served) == 0 {
				return false, fmt.Sprintf("%+v", tw)
			}
			count := uint32(math.Round((v - layout.Kelvin) * 10))
			last = tw.Reported.Value
			return v >= layout.Kelvin && int(count) >= int(served[len(served)-1])-30, fmt.Sprintf("%q (count %d), %d served", tw.Reported.Value, count, len(served))
		})
		out := c.kubectl("get", "device", name, "-n", ns, "-o", "yaml")
		if !strings.Contains(out, "propertyName: temperature") || !strings.Contains(out, "state: online") {
			t.Fatalf("kubectl get device -o yaml does not show the temperature and the state:\n%s", out)
		}
		// The value moves (a new count per read): a later kubectl shows a later Kelvin value.
		waitFor(t, "kubectl shows the value move on", 30*time.Second, func() (bool, string) {
			out := c.kubectl("get", "device", name, "-n", ns, "-o", "jsonpath={.status.twins[0].reported.value}")
			v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
			old, _ := strconv.ParseFloat(last, 64)
			return err == nil && v > old && v >= layout.Kelvin, out
		})
	})
}

// t100Registers is where the T-100's count and check word sit (holding registers 30-32), as
// examples/devices/modbus-t100-device.yaml says.
const t100Registers = t100sim.Registers

// t100Reading is one temperature in a twin/update/document: the count it decodes to and whether
// codec firmware 2 (Kelvin) decoded it.
type t100Reading struct {
	count  uint32
	kelvin bool
}

func (r t100Reading) String() string {
	if r.kelvin {
		return fmt.Sprintf("%dK", r.count)
	}
	return fmt.Sprintf("%dC", r.count)
}

func celsiusCount(rs []t100Reading) int {
	n := 0
	for _, r := range rs {
		if !r.kelvin {
			n++
		}
	}
	return n
}

// t100Readings decodes the temperatures devicetwin published on topic, in order. Counts stay far
// below 2731 (0.1 degrees each), so a value from 273.15 up is Kelvin.
func t100Readings(t *testing.T, mq *mqttSub, topic string) []t100Reading {
	t.Helper()
	mq.mu.Lock()
	msgs := append([]mqttMsg(nil), mq.msgs...)
	mq.mu.Unlock()
	var out []t100Reading
	for _, m := range msgs {
		if m.topic != topic {
			continue
		}
		var doc struct {
			Twin map[string]struct {
				Current *struct {
					Actual *struct {
						Value *string `json:"value"`
					} `json:"actual"`
				} `json:"current"`
			} `json:"twin"`
		}
		if err := json.Unmarshal([]byte(m.payload), &doc); err != nil {
			t.Fatalf("%s payload %q: %v", topic, m.payload, err)
		}
		tw, ok := doc.Twin["temperature"]
		if !ok || tw.Current == nil || tw.Current.Actual == nil || tw.Current.Actual.Value == nil {
			continue
		}
		v, err := strconv.ParseFloat(*tw.Current.Actual.Value, 64)
		if err != nil {
			t.Fatalf("%s: temperature %q is not a number", topic, *tw.Current.Actual.Value)
		}
		rd := t100Reading{}
		if v >= layout.Kelvin-1e-9 {
			rd.kelvin, v = true, v-layout.Kelvin
		}
		rd.count = uint32(math.Round(v * 10))
		out = append(out, rd)
	}
	return out
}

// moduleRow reports whether `module ls` output has a row for name with every one of cols.
func moduleRow(out, name string, cols ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != name {
			continue
		}
		ok := true
		for _, c := range cols {
			found := false
			for _, x := range f {
				found = found || x == c
			}
			ok = ok && found
		}
		return ok
	}
	return false
}

// applyT100Examples applies examples/devices/modbus-t100-model.yaml and modbus-t100-device.yaml into
// ns, the device bound to the edge node at addr.
func applyT100Examples(t *testing.T, c *cluster, ns, addr string) {
	t.Helper()
	applyT100ExamplesWithTimeout(t, c, ns, addr, "")
}

// applyT100ExamplesWithTimeout is applyT100Examples with the device's Modbus answer timeout set to
// timeout (a duration string; "" keeps the example's 500ms).
func applyT100ExamplesWithTimeout(t *testing.T, c *cluster, ns, addr, timeout string) {
	t.Helper()
	for _, f := range []string{"modbus-t100-model.yaml", "modbus-t100-device.yaml"} {
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
		if spec := m["spec"].(map[string]any); m["kind"] == "Device" {
			if spec["nodeName"] != "edge-1" {
				t.Fatalf("examples/devices/%s changed: nodeName %v, want edge-1", f, spec["nodeName"])
			}
			spec["nodeName"] = c.node
			spec["protocol"].(map[string]any)["configData"].(map[string]any)["address"] = addr
			if timeout != "" {
				spec["protocol"].(map[string]any)["configData"].(map[string]any)["timeout"] = timeout
			}
		}
		out, _ := json.Marshal(m)
		p := filepath.Join(t.TempDir(), f+".json")
		if err := os.WriteFile(p, out, 0o644); err != nil {
			t.Fatal(err)
		}
		c.kubectl("apply", "-f", p)
	}
}

// seqDevice is the T-100's sampling (test/t100sim): a Modbus TCP front of the libmodbus server that
// gives every read of the T-100's registers a new count and records the counts it served, in order.
type seqDevice = t100sim.Device

func startSeqDevice(t *testing.T, target string, at uint16) *seqDevice {
	t.Helper()
	d, err := t100sim.Start("127.0.0.1:0", target, at, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("the T-100 device side: %v", err)
		}
	})
	return d
}

// thermoGuests are wasm/examples/thermocodec built and packed as `make wasm` does: v1 (Celsius,
// manifest.yaml) and v2 (Kelvin, -tags thermocodec_v2, manifest-v2.yaml), with their sha256.
type thermoGuests struct {
	v1, v1sum, v2, v2sum string
	err                  error
}

func buildThermoGuests(dir string) (g thermoGuests) {
	example := filepath.Join("..", "..", "wasm", "examples", "thermocodec")
	wasmpack := filepath.Join(dir, "wasmpack")
	goCmd := func(env []string, args ...string) error {
		cmd := exec.Command("go", args...)
		cmd.Env = append(append(os.Environ(), "GOFLAGS="), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	wasip1 := []string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"}
	steps := []func() error{
		func() error {
			return goCmd(nil, "build", "-trimpath", "-o", wasmpack, "github.com/kedge-io/kedge/wasm/cmd/wasmpack")
		},
		func() error {
			return goCmd(wasip1, "build", "-buildmode=c-shared", "-trimpath", "-o", filepath.Join(dir, "v1.raw.wasm"), example)
		},
		func() error {
			return goCmd(wasip1, "build", "-buildmode=c-shared", "-trimpath", "-tags=thermocodec_v2", "-o", filepath.Join(dir, "v2.raw.wasm"), example)
		},
	}
	for _, step := range steps { // one at a time: the cluster is starting on the same two cores
		if g.err = step(); g.err != nil {
			return g
		}
	}
	for _, v := range []struct {
		name, manifest string
		path, sum      *string
	}{{"v1", "manifest.yaml", &g.v1, &g.v1sum}, {"v2", "manifest-v2.yaml", &g.v2, &g.v2sum}} {
		*v.path = filepath.Join(dir, "thermocodec-"+v.name+".wasm")
		out, err := exec.Command(wasmpack, "-manifest", filepath.Join(example, v.manifest), "-in", filepath.Join(dir, v.name+".raw.wasm"), "-out", *v.path).CombinedOutput()
		if err != nil {
			g.err = fmt.Errorf("wasmpack %s: %v\n%s", v.manifest, err, out)
			return g
		}
		sum, err := fileSum(*v.path)
		if err != nil {
			g.err = err
			return g
		}
		*v.sum = sum
	}
	return g
}

func fileSum(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
