package modbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/plugins/mappers/modbus"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// The RTU mapper swapped from builtin to a process plugin and back while it polls a counting slave every
// 5 ms (holding register 40 goes up after every read): the process instance takes the devices and
// the serial line over from the builtin one (sdk/mapper's handover), and every number read reaches
// devicetwin once, in order — none lost, none twice — before, across and after the swap.
func TestRTUMapperSwappedBuiltinToProcessAndBackLosesAndDuplicatesNoReading(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the kedge-module plugin executable")
	}
	bin := filepath.Join(t.TempDir(), "modbus")
	build := exec.Command("go", "build", "-tags", "kedge_custom kedge_modbus", "-o", bin, "../../../cmd/kedge-module")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the modbus process plugin: %v\n%s", err, out)
	}
	bus := mbserver.StartBus(t, 115200, "E", 1)
	dir := shortDir(t)
	cfg := map[string]any{"dmiSocket": filepath.Join(dir, "dmi.sock"), "socket": filepath.Join(dir, "modbus.sock"),
		"collectCycle": "5ms", "healthCycle": "1s", "backoffMin": "10ms", "backoffMax": "100ms", "callTimeout": "5s"}
	mm, _ := sdk.Lookup(metamanager.Name)
	h := sdktest.Run(t, modbus.Info, cfg,
		sdktest.Beside(dmi.Info, map[string]any{"socket": cfg["dmiSocket"], "reconcileInterval": "50ms", "callTimeout": "5s",
			"qps": 2000, "burst": 2000}), // a report every 5 ms: above the default limit of 100 calls/s
		sdktest.Beside(mm, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(devicetwin.Info, map[string]any{"flushInterval": "5ms"}),
		sdktest.Capture("edgehub", "eventbus"))
	send := func(resource, content string) {
		m := message.New("edgehub", "resource", message.OpInsert, resource)
		m.Header.ResourceVersion, m.Content = "1", json.RawMessage(content)
		if err := h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
			t.Fatal(err)
		}
	}
	send("default/devicemodel/counts", `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"counts","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"modbus","properties":[{"name":"n","type":"INT","accessMode":"ReadOnly"}]}}`)
	send("default/device/c1", fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"c1","namespace":"default","resourceVersion":"2"},
 "spec":{"deviceModelRef":{"name":"counts"},"nodeName":%q,"protocol":{"protocolName":"modbus","configData":{"serialPort":%q,"baudRate":115200,"slaveID":1,"timeout":"2s"}},
  "properties":[{"name":"n","reportToCloud":true,"collectCycle":5,"visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":40,"limit":1}}}]}}`,
		sdktest.NodeName, bus.MasterPort))

	var got []int
	docs := h.Captured("eventbus")
	atLeast := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for len(got) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d readings in devicetwin's documents, want %d", what, len(got), n)
			}
			m, err := docs.Receive(100 * time.Millisecond)
			if err != nil {
				continue
			}
			var doc struct {
				Twin map[string]struct {
					Current *struct {
						Actual *struct{ Value string } `json:"actual"`
					} `json:"current"`
				} `json:"twin"`
			}
			if json.Unmarshal(m.Content, &doc) != nil {
				continue
			}
			if tw, ok := doc.Twin["n"]; ok && tw.Current != nil && tw.Current.Actual != nil {
				v, err := strconv.Atoi(tw.Current.Actual.Value)
				if err != nil {
					t.Fatalf("reading %q is not a number", tw.Current.Actual.Value)
				}
				got = append(got, v)
			}
		}
	}
	atLeast(30, "the builtin instance")
	before := len(got)

	// The process instance starts beside the builtin one, as a hot swap does, and takes over.
	p := sdktest.RunProcess(t, bin, cfg, sdktest.Named("modbus"))
	if err := p.Healthy(); err != nil {
		t.Fatalf("the process instance is not healthy after its start: %v", err)
	}
	atLeast(before+30, "the process instance")
	builtinReads := mapperReads(t, h.Metrics)
	processReads := mapperReads(t, p.Metrics)
	atLeast(before+60, "the process instance")
	if n := mapperReads(t, h.Metrics); n != builtinReads {
		t.Fatalf("the builtin instance still reads after the swap (%v → %v reads)", builtinReads, n)
	}
	// A process plugin's metrics come over Gather at each scrape (2 s bound): wait, do not sample once.
	for deadline := time.Now().Add(2 * time.Minute); mapperReads(t, p.Metrics) <= processReads; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the process instance does not read (%v → %v reads)", processReads, mapperReads(t, p.Metrics))
		}
	}

	// And back: a builtin instance (on a host of its own, as after an edgecore upgrade) takes over
	// from the process.
	afterProcess := len(got)
	b := sdktest.Run(t, modbus.Info, cfg)
	if err := b.Healthy(); err != nil {
		t.Fatalf("the new builtin instance is not healthy after its start: %v", err)
	}
	atLeast(afterProcess+30, "the builtin instance again")
	builtinReads = mapperReads(t, b.Metrics)
	// The process instance's count must settle (two scrapes a second apart agree) while the readings
	// go on: it stopped reading. (A scrape of a plugin can miss its metrics under load, so one
	// sample is no proof either way.)
	for deadline := time.Now().Add(2 * time.Minute); ; {
		before := mapperReads(t, p.Metrics)
		atLeast(len(got)+10, "the builtin instance again")
		if after := mapperReads(t, p.Metrics); after == before && after > 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the process instance still reads after the swap back (%v → %v reads)", before, after)
		}
	}
	atLeast(afterProcess+60, "the builtin instance again")
	// A process plugin's metrics come over Gather at each scrape (2 s bound): wait, do not sample once.
	for deadline := time.Now().Add(2 * time.Minute); mapperReads(t, b.Metrics) <= builtinReads; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the new builtin instance does not read (%v → %v reads)", builtinReads, mapperReads(t, b.Metrics))
		}
	}

	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("reading %d is %d after %d: lost, duplicated or reordered across the swap (%d readings before the swap)\n%v", i, got[i], got[i-1], before, got)
		}
	}
	t.Logf("%d readings in order: %d builtin, %d process, %d builtin again (counts %d..%d)", len(got), before, afterProcess-before, len(got)-afterProcess, got[0], got[len(got)-1])
}

// shortDir is a temporary folder with a short path (unix socket paths must stay under 108 bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// mapperReads is kedge_mapper_reads_total summed over devices, as g gathers it.
func mapperReads(t *testing.T, g prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "kedge_mapper_reads_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
