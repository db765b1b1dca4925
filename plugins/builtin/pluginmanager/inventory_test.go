package pluginmanager

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
	"github.com/kedge-io/kedge/sdk/inventory"
	"github.com/kedge-io/kedge/sdk/message"
)

// probe is a module whose health the test sets.
type probe struct{ sick atomic.Pointer[string] }

func (p *probe) Start(context.Context, sdk.Host) error     { return nil }
func (p *probe) Handle(context.Context, sdk.Message) error { return nil }
func (p *probe) Stop(context.Context) error                { return nil }
func (p *probe) Healthy(context.Context) error {
	if s := p.sick.Load(); s != nil {
		return errors.New(*s)
	}
	return nil
}

// invRig runs pluginmanager in the real host (listing modules through its host handle) beside the
// probe, with edgehub captured, and keeps the module so the test drives its looks at the node.
type invRig struct {
	h     *sdktest.Harness
	m     *Module
	probe *probe
}

func newInvRig(t *testing.T) *invRig {
	t.Helper()
	reg := newRegistry(t)
	r := &invRig{probe: &probe{}}
	i := info(nil)
	i.New = func() sdk.Module { m := New(); r.m = m; return m }
	cfg := map[string]any{"registryURL": reg.url, "caFile": reg.certs.caFile, "certFile": reg.certs.certFile, "keyFile": reg.certs.keyFile,
		"trustedKeys": []any{reg.pubFile}, "pluginsDir": t.TempDir(),
		// The test takes every look itself (inventoryOnce); the loop's first look is an hour away.
		"inventory": map[string]any{"interval": "1h", "check": "1h"}}
	r.h = sdktest.Run(t, i, cfg, sdktest.Capture("edgehub"),
		sdktest.Beside(sdk.Info{Name: "probe", Group: "test", New: func() sdk.Module { return r.probe }}, nil))
	return r
}

// look takes one look at now and returns the report sent, or nil.
func (r *invRig) look(t *testing.T, now time.Time) *inventory.Report {
	t.Helper()
	hub := r.h.Captured("edgehub")
	before := hub.Len()
	if err := r.m.inventoryOnce(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	if hub.Len() == before {
		return nil
	}
	msg := hub.Next(t, 10*time.Second)
	want := inventory.Namespace + "/" + inventory.Type + "/" + sdktest.NodeName
	if msg.Route.Group != inventory.Group || msg.Route.Operation != message.OpUpdate || msg.Route.Resource != want {
		t.Fatalf("inventory routed %+v, want group %s, update %s", msg.Route, inventory.Group, want)
	}
	rep, err := inventory.Decode(msg.Content)
	if err != nil {
		t.Fatalf("the edge sent an inventory the cloud refuses: %v", err)
	}
	return &rep
}

func TestInventoryListsTheHostsModulesAndIsSentOnChangeOrAfterTheInterval(t *testing.T) {
	r := newInvRig(t)
	t0 := time.Now()
	rep := r.look(t, t0)
	if rep == nil {
		t.Fatal("the first look sent no inventory")
	}
	names := map[string]inventory.Module{}
	for _, m := range rep.Modules {
		names[m.Name] = m
	}
	if pm, ok := names[Name]; !ok || pm.Runtime != "builtin" || pm.Health != "" {
		t.Fatalf("inventory modules %+v: want pluginmanager, builtin, healthy", rep.Modules)
	}
	if _, ok := names["probe"]; !ok {
		t.Fatalf("inventory modules %+v: want the probe running beside it", rep.Modules)
	}
	if rep.Node != sdktest.NodeName || rep.Class != "full" || rep.Version == "" {
		t.Fatalf("inventory of %q class %q version %q: want node %s, class full (a plain build), the host's version", rep.Node, rep.Class, rep.Version, sdktest.NodeName)
	}

	// Only counters moved (the probe handled a message): nothing until the interval passed.
	if err := r.h.Router.Send(context.Background(), "probe", message.New("test", "test", message.OpUpdate, "default/x/y")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		sts, _ := r.m.modules(context.Background())
		if handled(sts, "probe") >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the probe never handled its message")
		}
	}
	if rep := r.look(t, t0.Add(time.Minute)); rep != nil {
		t.Fatalf("a report with only counters changed went before the interval: %+v", rep)
	}
	if rep := r.look(t, t0.Add(time.Hour)); rep == nil {
		t.Fatal("no report after the interval")
	}

	// The probe turns unhealthy: sent at the next look, with the reason.
	sick := "broker unreachable: " + strings.Repeat("x", 400)
	r.probe.sick.Store(&sick)
	rep = r.look(t, t0.Add(time.Hour+time.Minute))
	if rep == nil {
		t.Fatal("a module turning unhealthy was not reported at the next look")
	}
	for _, m := range rep.Modules {
		if m.Name == "probe" && (!strings.HasPrefix(m.Health, "broker unreachable") || len(m.Health) > inventory.MaxText) {
			t.Fatalf("probe health %q: want the reason, cut to %d bytes", m.Health, inventory.MaxText)
		}
	}
	if n := counter(t, r.h, "kedge_pluginmanager_inventory_reports_total"); n != 3 {
		t.Fatalf("reports counted %v, want 3", n)
	}
}

func TestInventoryOfTwelveModulesFitsWithRoomAndALargeOneIsCutToTheLimit(t *testing.T) {
	rep := inventory.Report{V: inventory.V, Node: "edge-0001", Version: "v0.9.0-12-gabcdef0", Class: "full", At: time.Now().UTC().Truncate(time.Second)}
	for _, name := range []string{"edgehub", "metamanager", "nodestatus", "noruntime", "edged", "edgestream", "eventbus", "servicebus", "devicetwin", "dmi", "pluginmanager", "modbus"} {
		rep.Modules = append(rep.Modules, inventory.Module{Name: name, Runtime: "builtin", Release: rep.Version, Handled: 123456, Failed: 12, Queued: 1})
	}
	raw, err := encodeBounded(&rep)
	if err != nil {
		t.Fatal(err)
	}
	msg := message.New(Name, inventory.Group, message.OpUpdate, "kedge/nodeinventory/edge-0001")
	msg.Content = raw
	wire, _ := json.Marshal(msg)
	t.Logf("12 modules: content %d bytes, message on the wire (JSON frame) %d bytes", len(raw), len(wire))
	if len(raw) > inventory.MaxBytes/8 {
		t.Fatalf("12 modules take %d bytes", len(raw))
	}

	// 64 modules, each with the longest health and link texts: cut to fit, still valid.
	rep.Modules = nil
	for i := range inventory.MaxModules {
		rep.Modules = append(rep.Modules, inventory.Module{Name: "module-" + strings.Repeat("m", 40) + string(rune('a'+i%26)) + string(rune('a'+i/26)), Runtime: "wasm",
			Release: strings.Repeat("1", 128), SHA256: strings.Repeat("ab", 32), Health: strings.Repeat("h", inventory.MaxText), Link: "down: " + strings.Repeat("l", 200)})
	}
	raw, err = encodeBounded(&rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > inventory.MaxBytes {
		t.Fatalf("bounded report is %d bytes, more than %d", len(raw), inventory.MaxBytes)
	}
	if _, err := inventory.Decode(raw); err != nil {
		t.Fatalf("bounded report refused: %v", err)
	}
}

func counter(t *testing.T, h *sdktest.Harness, name string) float64 {
	t.Helper()
	fams, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func handled(sts []control.Status, name string) float64 {
	for _, s := range sts {
		if s.Name == name {
			return s.Handled
		}
	}
	return 0
}
