package daemon

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
)

type ctlTestModule struct {
	X int `yaml:"x"`
}

func (*ctlTestModule) Start(context.Context, sdk.Host) error     { return nil }
func (*ctlTestModule) Handle(context.Context, sdk.Message) error { return nil }
func (*ctlTestModule) Stop(context.Context) error                { return nil }

func init() {
	sdk.Register(sdk.Info{Name: "ctltest", Group: "ctltest", Doc: "control client test module", Enabled: true,
		New: func() sdk.Module { return &ctlTestModule{} }})
}

type ctlTestConfig struct{ Base }

// inlineConfig is a config as the binaries declare it (Base inline), for Load.
type inlineConfig struct {
	Base `yaml:",inline"`
}

func (inlineConfig) Identity() string { return "edge-ctl" }

func (ctlTestConfig) Identity() string { return "edge-ctl" }

// controlSocket serves a real control socket over a real module manager running module ctltest.
func controlSocket(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "ctl.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	mgr := modules.NewManager(modules.Deps{NodeName: "edge-ctl", Router: router.New(nil), Store: db})
	cfg := &ctlTestConfig{Base: DefaultBase("edgecore", "")}
	p, err := modules.PlanModule("test", "ctltest", map[string]any{}, nil, sdk.Registered(), loaders(cfg.base()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := mgr.Start(ctx, []modules.Planned{p}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "edgecore.sock")
	ctl := &controller{spec: Spec{Binary: "edgecore"}, mgr: mgr, log: slog.Default(), current: cfg}
	closeControl, err := serveControl(ctx, path, ctl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeControl(); cancel(); _ = mgr.Stop(context.Background()); db.Close() })
	return path
}

func TestControlClientListsAndSwapsModulesAndReturnsTheDaemonsRefusal(t *testing.T) {
	c := NewControlClient(controlSocket(t), 0)
	ctx := context.Background()
	st, err := c.Modules(ctx)
	if err != nil || len(st) != 1 || st[0].Name != "ctltest" || st[0].Runtime != modules.Builtin || st[0].Health != "" {
		t.Fatalf("Modules = %+v, %v; want ctltest builtin healthy", st, err)
	}
	rep, err := c.Swap(ctx, "ctltest", modules.Builtin, "", "")
	if err != nil || rep.Module != "ctltest" || rep.To != modules.Builtin {
		t.Fatalf("Swap = %+v, %v", rep, err)
	}
	tests := []struct {
		name, module string
		runtime      modules.Runtime
		path         string
		want         string
	}{
		{"a module that is not running is refused by name", "absent", modules.Builtin, "", `module "absent" is not running`},
		{"a missing plugin file is refused naming the module", "ctltest", modules.Process, filepath.Join(t.TempDir(), "none"), "modules.ctltest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Swap(ctx, tt.module, tt.runtime, tt.path, strings.Repeat("a", 64))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Swap error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestControlClientNamesTheSocketWhenNoDaemonListens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nobody.sock")
	_, err := NewControlClient(path, 0).Modules(context.Background())
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error = %v, want one naming %s", err, path)
	}
}

// A swap request may carry its own health timeout; a malformed one is refused (400) naming the field
// and nothing is swapped. The config's admin.swapHealthTimeout must be positive.
func TestSwapHealthTimeoutIsCheckedInTheRequestAndTheConfig(t *testing.T) {
	c := NewControlClient(controlSocket(t), 0)
	ctx := context.Background()
	tests := []struct {
		name, timeout string
		want          string // "": swapped
	}{
		{"a positive duration is used for this swap", "5s", ""},
		{"empty means the configured default", "", ""},
		{"not a duration is refused naming the field", "soon", `healthTimeout: expected a positive duration like "30s", got "soon"`},
		{"zero is refused", "0s", `got "0s"`},
		{"negative is refused", "-1s", `got "-1s"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rep modules.SwapReport
			err := call(ctx, c.HTTPClient(), "POST", "/v1/modules/ctltest/swap", swapRequest{Runtime: modules.Builtin, HealthTimeout: tt.timeout}, &rep)
			switch {
			case tt.want == "" && (err != nil || rep.Module != "ctltest"):
				t.Fatalf("swap = %+v, %v; want swapped", rep, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("swap error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	spec := Spec{Binary: "edgecore", NewConfig: func() Config { return &inlineConfig{Base: DefaultBase("edgecore", "")} }}
	for _, tt := range []struct {
		set, want string
	}{
		{"admin.swapHealthTimeout=-1s", "admin.swapHealthTimeout"},
		{"admin.swapHealthTimeout=0s", "must be positive"},
		{"admin.swapHealthTimeout=30s", ""},
	} {
		cfg, _, err := Load(spec, "", []string{tt.set, "modules.ctltest.enable=false"}, nil)
		switch {
		case tt.want == "" && (err != nil || cfg.base().Admin.SwapHealthTimeout != 30*time.Second):
			t.Errorf("--set %s: %v", tt.set, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("--set %s: error %v, want one containing %q", tt.set, err, tt.want)
		}
	}
}

// module ls shows the running release in VERSION ("-" when a plugin reports none) and the pinned
// file's sha256 beside it; a status from an older daemon (no release field) shows its combined form.
func TestModuleLsShowsTheReleaseAndTheSHA256(t *testing.T) {
	tests := []struct {
		name string
		st   modules.Status
		want []string // the row's fields after NAME GROUP RUNTIME
	}{
		{"builtin", modules.Status{Name: "a", Group: "g", Runtime: modules.Builtin, Release: "v1.5.0", Version: "v1.5.0"}, []string{"v1.5.0", "-"}},
		{"process with a release", modules.Status{Name: "a", Group: "g", Runtime: modules.Process, Release: "1.2.3", SHA256: "sha256:0123456789ab"}, []string{"1.2.3", "sha256:0123456789ab"}},
		{"process without one", modules.Status{Name: "a", Group: "g", Runtime: modules.Process, Release: "-", SHA256: "sha256:0123456789ab"}, []string{"-", "sha256:0123456789ab"}},
		{"an older daemon's status", modules.Status{Name: "a", Group: "g", Runtime: modules.WASM, Version: "sha256:0123456789ab"}, []string{"sha256:0123456789ab", "-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			writeModuleTable(&b, []modules.Status{tt.st})
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			if len(lines) != 2 || len(strings.Fields(lines[0])) < 5 || strings.Fields(lines[0])[3] != "VERSION" || strings.Fields(lines[0])[4] != "SHA256" {
				t.Fatalf("module ls:\n%s", b.String())
			}
			f := strings.Fields(lines[1])
			if len(f) < 5 || f[3] != tt.want[0] || f[4] != tt.want[1] {
				t.Fatalf("row %q, want VERSION %q and SHA256 %q", lines[1], tt.want[0], tt.want[1])
			}
		})
	}
}
