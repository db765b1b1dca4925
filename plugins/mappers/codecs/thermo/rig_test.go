package thermo_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo"
	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo/layout"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/slow"
)

// acme is a small transport for the tests: each Read of a device returns the next count of a
// per-device counter as the T-100's raw registers, so every reading carries its sequence number.
type acme struct {
	r   *rig
	dev string
}

func (a *acme) Init(_ context.Context, p mapper.ProtocolConfig) error {
	a.dev = p.Device.Name
	return nil
}
func (a *acme) Read(context.Context, mapper.DeviceRef, mapper.Property) (mapper.Value, error) {
	n := a.r.counter(a.dev).Add(1) - 1
	regs := layout.Registers(n, false)
	return mapper.RawRegisters(regs[:]...), nil
}
func (a *acme) Write(context.Context, mapper.DeviceRef, mapper.Property, mapper.Value) error {
	return errors.New("acme test devices are read-only")
}
func (a *acme) Health(context.Context, mapper.DeviceRef) error { return nil }
func (a *acme) Close() error                                   { return nil }

// caller is a module whose host the tests use to send codec requests like a mapper does.
type caller struct{ h chan sdk.Host }

func (c *caller) Start(_ context.Context, h sdk.Host) error { c.h <- h; return nil }
func (c *caller) Handle(context.Context, sdk.Message) error { return nil }
func (c *caller) Stop(context.Context) error                { return nil }

// reading is one twin update devicetwin published: the count it carries and the codec version that
// decoded it (1: Celsius, 2: Kelvin).
type reading struct {
	device  string
	seq     uint32
	version int
}

// rig is the real edge side — metamanager, devicetwin, dmi over its unix socket — with the acme
// mapper (the SDK's runtime) and thermo-codec, in a real module manager over a real router and
// SQLite store.
type rig struct {
	t          *testing.T
	mgr        *modules.Manager
	rt         *router.Router
	db         *store.DB
	reg        *prometheus.Registry
	registered []sdk.Info
	loaders    modules.Loaders
	caller     sdk.Host

	cmu      sync.Mutex
	counters map[string]*atomic.Uint32

	rmu      sync.Mutex
	readings []reading
}

func (r *rig) counter(dev string) *atomic.Uint32 {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	c := r.counters[dev]
	if c == nil {
		c = new(atomic.Uint32)
		r.counters[dev] = c
	}
	return c
}

// newRig starts everything; codecBlock is thermo-codec's module block (runtime, path, sha256).
// extra modules (name → block) run beside, e.g. a second codec instance.
func newRig(t *testing.T, codecBlock map[string]any, extra map[string]map[string]any) *rig {
	t.Helper()
	dir, err := os.MkdirTemp("", "tc") // unix socket paths must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	r := &rig{t: t, counters: map[string]*atomic.Uint32{}, reg: prometheus.NewRegistry()}
	r.loaders = modules.Loaders{modules.WASM: wasmLoader}
	mmInfo, ok := sdk.Lookup(metamanager.Name)
	if !ok {
		t.Fatal("metamanager not registered")
	}
	c := &caller{h: make(chan sdk.Host, 1)}
	acmeInfo := sdk.Info{Name: "acme", Group: "mapper", New: func() sdk.Module {
		return mapper.New("acme", func() mapper.Driver { return &acme{r: r} })
	}}
	r.registered = []sdk.Info{mmInfo, devicetwin.Info, dmi.Info, thermo.Info, acmeInfo,
		{Name: "caller", Group: "test", New: func() sdk.Module { return c }}}
	provided := map[string]bool{}
	for _, i := range r.registered {
		provided[i.Name] = true
	}
	for i, info := range r.registered {
		info.Requires = slices.DeleteFunc(slices.Clone(info.Requires), func(n string) bool { return !provided[n] })
		r.registered[i] = info
	}
	dmiSock := filepath.Join(dir, "dmi.sock")
	on := func(m map[string]any) map[string]any { m["enable"] = true; return m }
	blocks := map[string]any{
		metamanager.Name: on(map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		devicetwin.Name:  on(map[string]any{"flushInterval": "20ms"}),
		dmi.Name:         on(map[string]any{"socket": dmiSock, "reconcileInterval": "50ms", "callTimeout": "2s"}),
		"acme": on(map[string]any{"dmiSocket": dmiSock, "socket": filepath.Join(dir, "acme.sock"),
			"collectCycle": "100ms", "healthCycle": "1s", "backoffMin": "50ms", "backoffMax": "500ms", "callTimeout": "3s"}),
		thermo.Name: on(codecBlock),
		"caller":    on(map[string]any{}),
	}
	for name, b := range extra {
		blocks[name] = on(b)
	}
	plan, err := modules.Plan("test", map[string]any{"modules": blocks}, nil, r.registered, r.loaders)
	if err != nil {
		t.Fatal(err)
	}
	r.db, err = store.Open(filepath.Join(t.TempDir(), "kedge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.db.Close() })
	r.rt = router.New(r.reg)
	r.capture("edgehub", nil)
	r.capture("eventbus", r.twinDocument)
	r.mgr = modules.NewManager(modules.Deps{NodeName: "node-1", Router: r.rt, Store: r.db,
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Metrics: r.reg, StartTimeout: slow.Scale(30 * time.Second), StopTimeout: 10 * time.Second})
	if err := r.mgr.Start(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.mgr.Stop(context.Background()) })
	r.caller = <-c.h
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// capture registers a mailbox standing in for a module the rig does not run, drained by a goroutine.
func (r *rig) capture(name string, fn func(sdk.Message)) {
	mb, err := r.rt.Register(name, "", router.Options{Capacity: 4096, Policy: router.Block})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for {
			m, err := mb.Receive(ctx)
			if err != nil {
				return
			}
			if fn != nil {
				fn(m)
			}
		}
	}()
}

// twinDocument records each temperature reading devicetwin stored (it publishes one
// $hw/events/device/<id>/twin/update/document per update that changed the twin).
func (r *rig) twinDocument(m sdk.Message) {
	const pre, suf = "$hw/events/device/", "/twin/update/document"
	res := m.Route.Resource
	if len(res) <= len(pre)+len(suf) || res[:len(pre)] != pre || res[len(res)-len(suf):] != suf {
		return
	}
	dev := res[len(pre) : len(res)-len(suf)]
	var doc struct {
		Twin map[string]struct {
			Current *struct {
				Actual *struct {
					Value *string `json:"value"`
				} `json:"actual"`
			} `json:"current"`
		} `json:"twin"`
	}
	if json.Unmarshal(m.Content, &doc) != nil {
		return
	}
	tw, ok := doc.Twin["temperature"]
	if !ok || tw.Current == nil || tw.Current.Actual == nil || tw.Current.Actual.Value == nil {
		return
	}
	v, err := strconv.ParseFloat(*tw.Current.Actual.Value, 64)
	if err != nil {
		r.t.Errorf("device %s: temperature %q is not a number", dev, *tw.Current.Actual.Value)
		return
	}
	rd := reading{device: dev, version: 1}
	if v >= layout.Kelvin-1e-9 { // counts stay far below 2731 in these tests
		rd.version, v = 2, v-layout.Kelvin
	}
	rd.seq = uint32(math.Round(v * 10))
	r.rmu.Lock()
	r.readings = append(r.readings, rd)
	r.rmu.Unlock()
}

// of returns the readings of one device in the order devicetwin published them.
func (r *rig) of(dev string) []reading {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	var out []reading
	for _, rd := range r.readings {
		if rd.device == dev {
			out = append(out, rd)
		}
	}
	return out
}

func (r *rig) fromCloud(op, resource, rv, content string) {
	r.t.Helper()
	m := message.New("edgehub", "resource", op, resource)
	m.Header.ResourceVersion = rv
	m.Content = json.RawMessage(content)
	if err := r.rt.Send(context.Background(), metamanager.Name, m); err != nil {
		r.t.Fatal(err)
	}
}

const model = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"t100","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"acme","properties":[{"name":"temperature","type":"FLOAT","accessMode":"ReadOnly","unit":"C"}]}}`

// addDevice gives metamanager a T-100 polled every 100 ms whose temperature goes through the codec;
// visitorExtra adds keys to its visitor config (e.g. a fault for the faults build).
func (r *rig) addDevice(name, rv, visitorExtra string) {
	r.t.Helper()
	if r.counters == nil {
		r.counters = map[string]*atomic.Uint32{}
	}
	r.fromCloud(message.OpInsert, "default/devicemodel/t100", "1", model)
	r.fromCloud(message.OpInsert, "default/device/"+name, rv, fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device",
 "metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"t100"},"nodeName":"node-1","protocol":{"protocolName":"acme","configData":{}},
  "properties":[{"name":"temperature","reportToCloud":true,"collectCycle":100,
   "visitors":{"protocolName":"acme","configData":{"codec":"thermo-codec","scale":0.1%s}}}]}}`, name, rv, visitorExtra))
}

func (r *rig) state(dev string) string {
	o, err := r.db.Objects(devicetwin.Name).Get(context.Background(), sdk.Key{Type: "devicestate", Namespace: "default", Name: dev})
	if err != nil {
		return ""
	}
	var s struct {
		State string `json:"state"`
	}
	_ = json.Unmarshal(o.Value, &s)
	return s.State
}

// counterValue sums a counter's series whose labels include want.
func (r *rig) counterValue(name string, want map[string]string) float64 {
	fams, err := prometheus.Gatherers{r.reg, r.mgr}.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// swap replaces thermo-codec the way `edgecore module swap` does: the running block with another
// runtime, path and sha256, planned by modules.PlanModule, then Manager.Swap.
func (r *rig) swap(block map[string]any) modules.SwapReport {
	r.t.Helper()
	next, err := modules.PlanModule("swap request", thermo.Name, block, nil, r.registered, r.loaders)
	if err != nil {
		r.t.Fatal(err)
	}
	rep, err := r.mgr.Swap(context.Background(), next)
	if err != nil {
		r.t.Fatal(err)
	}
	return rep
}

func wasmBlock(g guest) map[string]any {
	return map[string]any{"runtime": "wasm", "path": g.path, "sha256": g.sum}
}

// waitFor polls cond until it holds, giving up after d scaled by KEDGE_TEST_TIMEOUT_SCALE (test/slow).
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	d = slow.Scale(d)
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
