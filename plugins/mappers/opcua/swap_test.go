package opcua_test

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
	"github.com/kedge-io/kedge/plugins/mappers/opcua"
	"github.com/kedge-io/kedge/plugins/mappers/opcua/uaserver"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// The OPC-UA mapper swapped from builtin to a process plugin and back while it serves two devices
// of one server: "counter" polled every 5 ms (subscribe off; the server's Counter goes up with every
// Read request for it) and "ticker" subscribed (the server's Temperature moves every 100 ms).
// Polled: every number read reaches devicetwin once, in order, across both swaps. Subscribed: values
// keep arriving from each instance and never go back; changes the server samples during a takeover
// (the new session's subscription starts from the current value) are coalesced — the log counts
// them, with those the server's own sampling skipped on a busy machine.
func TestOPCUAMapperSwappedBuiltinToProcessAndBackLosesNoPolledReading(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the kedge-module plugin executable")
	}
	bin := filepath.Join(t.TempDir(), "opcua")
	build := exec.Command("go", "build", "-tags", "kedge_custom kedge_opcua", "-o", bin, "../../../cmd/kedge-module")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the opcua process plugin: %v\n%s", err, out)
	}
	srv := uaserver.Start(t)
	dir, err := os.MkdirTemp("", "ua")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := map[string]any{"dmiSocket": filepath.Join(dir, "dmi.sock"), "socket": filepath.Join(dir, "opcua.sock"),
		"collectCycle": "5ms", "healthCycle": "1s", "backoffMin": "10ms", "backoffMax": "200ms", "callTimeout": "10s"}
	mm, _ := sdk.Lookup(metamanager.Name)
	h := sdktest.Run(t, opcua.Info, cfg,
		sdktest.Beside(dmi.Info, map[string]any{"socket": cfg["dmiSocket"], "reconcileInterval": "50ms", "callTimeout": "10s",
			"qps": 2000, "burst": 2000}), // two devices reporting every 5 ms: above the default limit of 100 calls/s
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
	send("default/devicemodel/meter", `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"meter","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"opcua","properties":[{"name":"n","type":"INT","accessMode":"ReadOnly"},{"name":"t","type":"FLOAT","accessMode":"ReadOnly"}]}}`)
	device := func(name, prop, node string, subscribe bool) string {
		return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":"2"},
 "spec":{"deviceModelRef":{"name":"meter"},"nodeName":%q,"protocol":{"protocolName":"opcua","configData":{"url":%q,"subscribe":%v,"publishingInterval":"20ms","timeout":"10s"}},
  "properties":[{"name":%q,"reportToCloud":true,"collectCycle":5,"visitors":{"protocolName":"opcua","configData":{"nodeID":%q}}}]}}`,
			name, sdktest.NodeName, srv.URL(), subscribe, prop, node)
	}
	send("default/device/counter", device("counter", "n", "ns=1;s=Counter", false))
	send("default/device/ticker", device("ticker", "t", "ns=1;s=Temperature", true))

	var counts []int
	var temps []float64
	docs := h.Captured("eventbus")
	atLeast := func(n, m int, what string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for len(counts) < n || len(dedup(temps)) < m {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d counter readings (want %d), %d temperatures (want %d)", what, len(counts), n, len(dedup(temps)), m)
			}
			msg, err := docs.Receive(100 * time.Millisecond)
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
			if json.Unmarshal(msg.Content, &doc) != nil {
				continue
			}
			if tw, ok := doc.Twin["n"]; ok && tw.Current != nil && tw.Current.Actual != nil {
				v, err := strconv.Atoi(tw.Current.Actual.Value)
				if err != nil {
					t.Fatalf("counter reading %q", tw.Current.Actual.Value)
				}
				counts = append(counts, v)
			}
			if tw, ok := doc.Twin["t"]; ok && tw.Current != nil && tw.Current.Actual != nil {
				v, err := strconv.ParseFloat(tw.Current.Actual.Value, 64)
				if err != nil {
					t.Fatalf("temperature reading %q", tw.Current.Actual.Value)
				}
				temps = append(temps, v)
			}
		}
	}
	skipped := func(from int) int { // changes (0.5 steps) coalesced in temps[from:]
		n := 0
		d := dedup(temps[from:])
		for i := 1; i < len(d); i++ {
			n += int((d[i]-d[i-1])/0.5+0.01) - 1
		}
		return n
	}
	atLeast(30, 10, "the builtin instance")
	c0 := len(counts)

	tp := len(temps)
	p := sdktest.RunProcess(t, bin, cfg, sdktest.Named("opcua"))
	if err := p.Healthy(); err != nil {
		t.Fatalf("the process instance is not healthy after its start: %v", err)
	}
	atLeast(c0+30, len(dedup(temps))+5, "the process instance")
	builtinReads, processReads := reads(t, h.Metrics), reads(t, p.Metrics)
	c1 := len(counts)
	atLeast(c1+30, len(dedup(temps))+10, "the process instance")
	if n := reads(t, h.Metrics); n != builtinReads {
		t.Fatalf("the builtin instance still reads after the swap (%v → %v)", builtinReads, n)
	}
	// A process plugin's metrics come over Gather at each scrape (2 s bound): wait, do not sample once.
	for deadline := time.Now().Add(2 * time.Minute); reads(t, p.Metrics) <= processReads; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the process instance does not read (%v → %v)", processReads, reads(t, p.Metrics))
		}
	}

	c2 := len(counts)
	tb := len(temps)
	b := sdktest.Run(t, opcua.Info, cfg)
	if err := b.Healthy(); err != nil {
		t.Fatalf("the new builtin instance is not healthy after its start: %v", err)
	}
	atLeast(c2+30, len(dedup(temps))+5, "the builtin instance again")
	atLeast(len(counts)+30, len(dedup(temps))+10, "the builtin instance again")

	for i := 1; i < len(counts); i++ {
		if counts[i] != counts[i-1]+1 {
			t.Fatalf("counter reading %d is %d after %d: lost, duplicated or reordered across the swaps\n%v", i, counts[i], counts[i-1], counts)
		}
	}
	for i := 1; i < len(temps); i++ {
		if temps[i] < temps[i-1] {
			t.Fatalf("temperature went back from %v to %v at reading %d of %d (process from %d, builtin again from %d): %v", temps[i-1], temps[i], i, len(temps), tp, tb, temps[max(0, i-10):min(len(temps), i+10)])
		}
	}
	t.Logf("counter: %d readings in order (%d builtin, %d process, %d builtin again); temperature: %d changes seen, %d coalesced (takeovers and server sampling)",
		len(counts), c0, c2-c0, len(counts)-c2, len(dedup(temps)), skipped(0))
}

func dedup(v []float64) []float64 {
	var out []float64
	for i, x := range v {
		if i == 0 || x != v[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func reads(t *testing.T, g prometheus.Gatherer) float64 {
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
