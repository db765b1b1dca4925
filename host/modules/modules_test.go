package modules

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-io/kedge/host/config"
	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
)

// journal records what test modules did, in order.
type journal struct {
	mu    sync.Mutex
	lines []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lines = append(j.lines, fmt.Sprintf(format, args...))
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.lines)
}

// probe is a test module: it journals Start/Handle/Stop and can be told to fail or panic.
type probe struct {
	Greeting string        `yaml:"greeting"`
	Delay    time.Duration `yaml:"delay"`

	name      string
	j         *journal
	failStart bool
	host      sdk.Host
}

func (p *probe) Start(_ context.Context, h sdk.Host) error {
	p.host = h
	p.j.add("start %s", p.name)
	if p.failStart {
		return errors.New("refuses to start")
	}
	return nil
}

func (p *probe) Handle(ctx context.Context, m sdk.Message) error {
	time.Sleep(p.Delay)
	switch m.Route.Operation {
	case "panic":
		panic("boom")
	case "fail":
		return errors.New("cannot do that")
	case message.OpQuery:
		r, _ := m.Reply(p.name, p.Greeting)
		return p.host.Reply(ctx, r)
	}
	p.j.add("handle %s %s", p.name, m.Route.Resource)
	return nil
}

func (p *probe) Stop(context.Context) error {
	p.j.add("stop %s", p.name)
	return nil
}

func info(j *journal, name string, enabled bool, requires ...string) sdk.Info {
	return sdk.Info{Name: name, Group: "test", Enabled: enabled, Requires: requires,
		New: func() sdk.Module { return &probe{name: name, j: j, Greeting: "hello"} }}
}

func names(ps []Planned) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Info.Name
	}
	return out
}

func TestPlanOrdersModulesByRequirements(t *testing.T) {
	j := &journal{}
	reg := []sdk.Info{info(j, "c", true, "b"), info(j, "a", true), info(j, "b", true, "a"), info(j, "off", false)}
	plan, err := Plan("edge.yaml", nil, nil, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(plan); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("start order %v, want [a b c]", got)
	}
}

func TestPlanDecodesModuleSettingsAndEnableFlags(t *testing.T) {
	j := &journal{}
	tree := map[string]any{"modules": map[string]any{
		"a":   map[string]any{"greeting": "hi", "delay": "5ms"},
		"off": map[string]any{"enable": true},
		"b":   map[string]any{"enable": false},
	}}
	plan, err := Plan("edge.yaml", tree, nil, []sdk.Info{info(j, "a", true), info(j, "b", true), info(j, "off", false)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(plan); !slices.Equal(got, []string{"a", "off"}) {
		t.Fatalf("enabled %v, want [a off]", got)
	}
	if p := plan[0].Module.(*probe); p.Greeting != "hi" || p.Delay != 5*time.Millisecond {
		t.Fatalf("settings not decoded: %+v", p)
	}
	if p := plan[1].Module.(*probe); p.Greeting != "hello" {
		t.Fatalf("default lost: %+v", p)
	}
}

func TestPlanRejectsBadModuleConfigNamingTheKey(t *testing.T) {
	j := &journal{}
	reg := []sdk.Info{info(j, "a", true), info(j, "b", true, "a"), info(j, "off", false)}
	tests := []struct {
		name    string
		tree    map[string]any
		reg     []sdk.Info
		wantKey string
		want    string
	}{
		{"unknown module", map[string]any{"modules": map[string]any{"zzz": map[string]any{}}}, reg, "modules.zzz", "unknown module (modules in this build: a, b, off;"},
		{"unknown setting", map[string]any{"modules": map[string]any{"a": map[string]any{"greting": "x"}}}, reg, "modules.a.greting", "unknown key"},
		{"typo in a disabled module", map[string]any{"modules": map[string]any{"off": map[string]any{"greting": "x"}}}, reg, "modules.off.greting", "unknown key"},
		{"block not a mapping", map[string]any{"modules": map[string]any{"a": "yes"}}, reg, "modules.a", "expected a mapping"},
		{"modules not a mapping", map[string]any{"modules": []any{"a"}}, reg, "modules", "expected a mapping"},
		{"requires disabled", map[string]any{"modules": map[string]any{"a": map[string]any{"enable": false}}}, reg, "modules.b", `requires module "a"`},
		{"runtime unknown", map[string]any{"modules": map[string]any{"a": map[string]any{"runtime": "jvm"}}}, reg, "modules.a.runtime", "expected one of builtin, process, wasm"},
		{"runtime not in this build", map[string]any{"modules": map[string]any{"a": map[string]any{"runtime": "process"}}}, reg, "modules.a.runtime", "not available"},
		{"cycle", nil, []sdk.Info{info(j, "x", true, "y"), info(j, "y", true, "x")}, "modules", "dependency cycle: x -> y -> x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Plan("edge.yaml", tt.tree, nil, tt.reg, nil)
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Plan error = %v, want a *config.Error", err)
			}
			if ce.Source != "edge.yaml" || ce.Key != tt.wantKey || !strings.Contains(ce.Problem, tt.want) {
				t.Fatalf("Plan error = %q, want key %q and %q", err, tt.wantKey, tt.want)
			}
		})
	}
}

func TestPlanAppliesOverridesToModuleSettings(t *testing.T) {
	j := &journal{}
	ov := config.EnvOverrides("KEDGE_", []string{"KEDGE_MODULES__A__GREETING=from-env", "KEDGE_MODULES__OFF__ENABLE=true"})
	plan, err := Plan("edge.yaml", nil, &ov, []sdk.Info{info(j, "a", true), info(j, "off", false)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(plan); !slices.Equal(got, []string{"a", "off"}) || plan[0].Module.(*probe).Greeting != "from-env" {
		t.Fatalf("plan %v, greeting %q", got, plan[0].Module.(*probe).Greeting)
	}
	if u := ov.Unused(); len(u) != 0 {
		t.Fatalf("overrides left unused: %v", u)
	}
}

type harness struct {
	mgr *Manager
	rt  *router.Router
	reg *prometheus.Registry
	j   *journal
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, func(*Deps) {})
}

// newHarnessWith is newHarness with the manager's Deps changed by tune.
func newHarnessWith(t testing.TB, tune func(*Deps)) *harness {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := prometheus.NewRegistry()
	rt := router.New(reg)
	deps := Deps{NodeName: "n1", Router: rt, Store: db, Metrics: reg, StopTimeout: 2 * time.Second, StartTimeout: time.Second,
		SwapHealthTimeout: 300 * time.Millisecond}
	tune(&deps)
	return &harness{mgr: NewManager(deps), rt: rt, reg: reg, j: &journal{}}
}

func (h *harness) plan(t *testing.T, infos ...sdk.Info) []Planned {
	t.Helper()
	p, err := Plan("test.yaml", nil, nil, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestManagerStartsInOrderAndStopsInReverse(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.mgr.Start(ctx, h.plan(t, info(h.j, "b", true, "a"), info(h.j, "a", true))); err != nil {
		t.Fatal(err)
	}
	if err := h.mgr.Ready(ctx); err != nil {
		t.Fatalf("Ready after Start: %v", err)
	}
	if err := h.mgr.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := h.j.get(), []string{"start a", "start b", "stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("journal %v, want %v", got, want)
	}
	if h.mgr.Ready(ctx) == nil {
		t.Fatal("Ready after Stop, want an error")
	}
}

func TestManagerDeliversMessagesInOrderAndSurvivesAPanickingHandler(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.mgr.Start(ctx, h.plan(t, info(h.j, "a", true))); err != nil {
		t.Fatal(err)
	}
	for _, op := range []struct{ op, res string }{{"update", "ns/t/1"}, {"panic", "ns/t/2"}, {"fail", "ns/t/3"}, {"update", "ns/t/4"}} {
		if err := h.rt.Send(ctx, "a", message.New("test", "test", op.op, op.res)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.mgr.Stop(ctx); err != nil { // Stop drains the mailbox first
		t.Fatal(err)
	}
	if got, want := h.j.get(), []string{"start a", "handle a ns/t/1", "handle a ns/t/4", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("journal %v, want %v", got, want)
	}
	ok := testutil.ToFloat64(h.mgr.metrics.handled.WithLabelValues("a", "ok"))
	failed := testutil.ToFloat64(h.mgr.metrics.handled.WithLabelValues("a", "error"))
	if ok != 2 || failed != 2 {
		t.Fatalf("handled ok=%v error=%v, want 2 and 2", ok, failed)
	}
}

func TestManagerRepliesWithTheErrorToAFailedSyncRequest(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.mgr.Start(ctx, h.plan(t, info(h.j, "a", true))); err != nil {
		t.Fatal(err)
	}
	defer h.mgr.Stop(ctx)
	// A long timeout: the error reply, not the timeout, must end the wait.
	resp, err := h.rt.SendSync(ctx, "a", message.New("test", "test", "fail", "ns/t/1"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), "cannot do that") {
		t.Fatalf("reply %v content %s, want an error reply", resp, resp.Content)
	}
	resp, err = h.rt.SendSync(ctx, "a", message.New("test", "test", message.OpQuery, "ns/t/1"), time.Minute)
	if err != nil || string(resp.Content) != `"hello"` {
		t.Fatalf("query reply %s, %v", resp.Content, err)
	}
}

func TestManagerStopsStartedModulesWhenOneFailsToStart(t *testing.T) {
	h := newHarness(t)
	bad := info(h.j, "b", true, "a")
	bad.New = func() sdk.Module { return &probe{name: "b", j: h.j, failStart: true} }
	err := h.mgr.Start(context.Background(), h.plan(t, info(h.j, "a", true), bad))
	if err == nil || !strings.Contains(err.Error(), "start module b: refuses to start") {
		t.Fatalf("Start error = %v", err)
	}
	if got, want := h.j.get(), []string{"start a", "start b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("journal %v, want %v", got, want)
	}
	if err := h.rt.Send(context.Background(), "a", message.New("t", "t", "update", "ns/t/x")); !errors.Is(err, router.ErrUnknownModule) {
		t.Fatalf("a is still routable after the failed start: %v", err)
	}
}

func TestManagerGivesEachModuleItsOwnStoreNamespace(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	plan := h.plan(t, info(h.j, "a", true), info(h.j, "b", true))
	if err := h.mgr.Start(ctx, plan); err != nil {
		t.Fatal(err)
	}
	defer h.mgr.Stop(ctx)
	a, b := plan[0].Module.(*probe).host, plan[1].Module.(*probe).host
	k := sdk.Key{Type: "t", Namespace: "ns", Name: "x"}
	if _, err := a.Store().Put(ctx, sdk.Object{Key: k, Value: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Store().Get(ctx, k); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("module b sees module a's object: %v", err)
	}
	if a.Name() != "a" || a.NodeName() != "n1" {
		t.Fatalf("host handle identity %q %q", a.Name(), a.NodeName())
	}
}

// worker runs a goroutine bound to its Start context and waits for it in Stop, as real modules do.
type worker struct {
	probe
	done chan struct{}
}

func (w *worker) Start(ctx context.Context, h sdk.Host) error {
	w.done = make(chan struct{})
	go func() { <-ctx.Done(); close(w.done) }()
	return w.probe.Start(ctx, h)
}

func (w *worker) Stop(ctx context.Context) error {
	select {
	case <-w.done:
		return w.probe.Stop(ctx)
	case <-ctx.Done():
		return errors.New("background goroutine still running at Stop: context not cancelled first")
	}
}

func TestManagerCancelsModuleContextBeforeStop(t *testing.T) {
	h := newHarness(t)
	w := info(h.j, "w", true)
	w.New = func() sdk.Module { return &worker{probe: probe{name: "w", j: h.j}} }
	if err := h.mgr.Start(context.Background(), h.plan(t, w)); err != nil {
		t.Fatal(err)
	}
	if err := h.mgr.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// stubLoader stands in for the process and WASM runtimes, which have their own end-to-end tests.
type stubLoader struct {
	j    *journal
	seen []Spec
	err  error
}

func (l *stubLoader) New(spec Spec) (sdk.Module, error) {
	l.seen = append(l.seen, spec)
	if l.err != nil {
		return nil, l.err
	}
	return &probe{name: spec.Name, j: l.j}, nil
}

func TestPlanHandsPluginModulesToTheirRuntimeLoader(t *testing.T) {
	j := &journal{}
	l := &stubLoader{j: j}
	tree := map[string]any{"modules": map[string]any{
		"a":      map[string]any{"runtime": "process", "path": "/opt/a", "sha256": "ab", "greeting": "raw"},
		"vendor": map[string]any{"runtime": "wasm", "path": "/opt/v.wasm", "group": "driver", "port": 502},
	}}
	ov := config.EnvOverrides("KEDGE_", []string{"KEDGE_MODULES__VENDOR__PORT=503"})
	plan, err := Plan("edge.yaml", tree, &ov, []sdk.Info{info(j, "a", true)}, Loaders{Process: l, WASM: l})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(plan); !slices.Equal(got, []string{"a", "vendor"}) {
		t.Fatalf("planned %v", got)
	}
	if len(l.seen) != 2 || l.seen[0].Group != "test" || l.seen[0].Config["greeting"] != "raw" || l.seen[0].Settings.SHA256 != "ab" {
		t.Fatalf("loader saw %+v", l.seen)
	}
	if v := l.seen[1]; v.Group != "driver" || v.Config["port"] != 503 || v.Settings.Runtime != WASM {
		t.Fatalf("loader saw %+v (the environment override of port must win)", v)
	}
	if u := ov.Unused(); len(u) != 0 {
		t.Fatalf("override of a plugin module's setting reported unused: %v", u)
	}
	if v := l.seen[1]; v.Group != "driver" {
		t.Fatalf("loader saw %+v", v)
	}
}

func TestPlanKeepsHostKeysSetByFlagsOutOfAPluginsOwnSettings(t *testing.T) {
	j := &journal{}
	l := &stubLoader{j: j}
	tree := map[string]any{"modules": map[string]any{
		"vendor": map[string]any{"enable": false, "runtime": "process", "path": "/opt/v", "port": 502},
	}}
	set, err := config.ParseSet([]string{"modules.vendor.enable=true", "modules.vendor.SHA256=cd", "modules.vendor.port=503"})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Plan("edge.yaml", tree, &set, nil, Loaders{Process: l})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(plan); !slices.Equal(got, []string{"vendor"}) {
		t.Fatalf("planned %v, want the plugin enabled by --set", got)
	}
	if len(l.seen) != 1 {
		t.Fatalf("loader saw %+v", l.seen)
	}
	v := l.seen[0]
	if v.Settings.SHA256 != "cd" || v.Config["port"] != 503 {
		t.Fatalf("loader saw settings %+v config %v, want sha256 cd and port 503", v.Settings, v.Config)
	}
	for k := range v.Config {
		if slices.Contains(hostKeys, strings.ToLower(k)) {
			t.Fatalf("the plugin's own settings carry the host key %q: %v", k, v.Config)
		}
	}
}

func TestPlanRejectsPluginModulesWithoutPathOrLoader(t *testing.T) {
	j := &journal{}
	tests := []struct {
		name    string
		block   map[string]any
		loaders Loaders
		key     string
		want    string
	}{
		{"no path", map[string]any{"runtime": "process"}, Loaders{Process: &stubLoader{j: j}}, "modules.p.path", "needs the plugin file's path"},
		{"no loader", map[string]any{"runtime": "wasm", "path": "x"}, nil, "modules.p.runtime", "not available"},
		{"loader refuses", map[string]any{"runtime": "process", "path": "x"}, Loaders{Process: &stubLoader{j: j, err: errors.New("sha256 mismatch")}}, "modules.p", "sha256 mismatch"},
		{"builtin runtime for a module not compiled in", map[string]any{"runtime": "builtin"}, nil, "modules.p", "unknown module"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Plan("edge.yaml", map[string]any{"modules": map[string]any{"p": tt.block}}, nil, nil, tt.loaders)
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Key != tt.key || !strings.Contains(ce.Problem, tt.want) {
				t.Fatalf("Plan error = %v, want key %s and %q", err, tt.key, tt.want)
			}
		})
	}
}
