package daemon

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-io/kedge/sdk"
)

// vtStarted counts Starts of the vtest modules: a module with bad settings must stop everything
// before any module starts.
var vtStarted atomic.Int32

type vtModule struct {
	Workers int           `yaml:"workers" doc:"Must be positive."`
	Every   time.Duration `yaml:"every" doc:"At least 1s."`
}

func (m *vtModule) Validate() error {
	var c sdk.SettingChecks
	c.Check(m.Workers > 0, "workers", "must be positive, got %d", m.Workers)
	c.Check(m.Every >= time.Second, "every", "must be at least 1s, got %s", m.Every)
	return c.Err()
}
func (m *vtModule) Start(context.Context, sdk.Host) error     { vtStarted.Add(1); return nil }
func (m *vtModule) Handle(context.Context, sdk.Message) error { return nil }
func (m *vtModule) Stop(context.Context) error                { return nil }

type vtPlain struct{}

func (m *vtPlain) Start(context.Context, sdk.Host) error     { vtStarted.Add(1); return nil }
func (m *vtPlain) Handle(context.Context, sdk.Message) error { return nil }
func (m *vtPlain) Stop(context.Context) error                { return nil }

func init() {
	sdk.Register(sdk.Info{Name: "vtest-checked", Group: "vtest", New: func() sdk.Module { return &vtModule{Workers: 1, Every: time.Second} }})
	sdk.Register(sdk.Info{Name: "vtest-other", Group: "vtest", New: func() sdk.Module { return &vtModule{Workers: 1, Every: time.Second} }})
	sdk.Register(sdk.Info{Name: "vtest-plain", Group: "vtest", New: func() sdk.Module { return &vtPlain{} }})
}

type vtConfig struct {
	Base `yaml:",inline"`
}

func (c *vtConfig) Identity() string { return "vtest" }

func vtSpec(dir string) Spec {
	return Spec{Binary: "vtestcore", NewConfig: func() Config {
		b := DefaultBase("vtestcore", "")
		b.Store.Path = filepath.Join(dir, "kedge.db")
		b.Admin.Socket = filepath.Join(dir, "vtest.sock")
		return &vtConfig{Base: b}
	}}
}

// TestValidateAndStartupReportEveryBadModuleSettingWithFileAndKeyAndStartNothing proves that a
// module's own check of its settings (sdk.Validator) runs in `validate` and at startup, that every
// problem of every enabled module is reported as "<file>: modules.<name>.<key>: <problem>" with exit
// code 2, and that no module started.
func TestValidateAndStartupReportEveryBadModuleSettingWithFileAndKeyAndStartNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "vtest.yaml")
	if err := os.WriteFile(cfg, []byte(`modules:
  vtest-plain: {enable: true}
  vtest-checked: {enable: true, workers: 0, every: 500ms}
  vtest-other: {enable: true, workers: -3}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	want := []string{
		cfg + ": modules.vtest-checked.workers: must be positive, got 0",
		cfg + ": modules.vtest-checked.every: must be at least 1s, got 500ms",
		cfg + ": modules.vtest-other.workers: must be positive, got -3",
	}
	check := func(t *testing.T, err error) {
		t.Helper()
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != ExitConfig {
			t.Fatalf("got %v, want an exit %d config error", err, ExitConfig)
		}
		var lines []string
		for _, e := range ee.err.(interface{ Unwrap() []error }).Unwrap() {
			lines = append(lines, e.Error())
		}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Fatalf("reported:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		if n := vtStarted.Load(); n != 0 {
			t.Fatalf("%d modules started; none may start when a module's settings are bad", n)
		}
	}
	t.Run("validate", func(t *testing.T) {
		cmd := Command(vtSpec(dir))
		cmd.SetArgs([]string{"validate", "--config", cfg})
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		check(t, cmd.Execute())
	})
	t.Run("startup", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		check(t, runCommand(ctx, vtSpec(dir), flags{config: cfg}, io.Discard))
	})
	t.Run("fixed settings are valid", func(t *testing.T) {
		good := filepath.Join(dir, "good.yaml")
		if err := os.WriteFile(good, []byte("modules:\n  vtest-checked: {enable: true, workers: 2, every: 2s}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := Command(vtSpec(dir))
		cmd.SetArgs([]string{"validate", "--config", good})
		cmd.SetOut(io.Discard)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("valid settings refused: %v", err)
		}
	})
}

// TestAModuleSettingsProblemNamesTheEnvironmentVariableOrFlagThatSetIt proves that a bad value given
// by KEDGE_ or --set is reported against that variable or flag, not against the config file (or
// "defaults") that never held it.
func TestAModuleSettingsProblemNamesTheEnvironmentVariableOrFlagThatSetIt(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "vtest.yaml")
	if err := os.WriteFile(cfg, []byte("modules:\n  vtest-checked: {enable: true, workers: 2, every: 2s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		sets, env  []string
		want       []string
	}{
		{"file, environment and flag", cfg, []string{"modules.vtest-checked.every=500ms"}, []string{"KEDGE_MODULES__VTEST-CHECKED__WORKERS=0"}, []string{
			"environment KEDGE_MODULES__VTEST-CHECKED__WORKERS: modules.vtest-checked.workers: must be positive, got 0",
			"flag --set modules.vtest-checked.every=500ms: modules.vtest-checked.every: must be at least 1s, got 500ms",
		}},
		{"no file", "", nil, []string{"KEDGE_MODULES__VTEST-CHECKED__ENABLE=true", "KEDGE_MODULES__VTEST-CHECKED__WORKERS=-1"}, []string{
			"environment KEDGE_MODULES__VTEST-CHECKED__WORKERS: modules.vtest-checked.workers: must be positive, got -1",
		}},
		{"host setting from the environment", cfg, nil, []string{"KEDGE_RUNTIME__GCPERCENT=0"}, []string{
			"environment KEDGE_RUNTIME__GCPERCENT: runtime.gcPercent: expected a positive percentage or -1 (off), got 0",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Load(vtSpec(dir), tc.path, tc.sets, tc.env)
			if err == nil {
				t.Fatal("loaded; want the problems reported")
			}
			var lines []string
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					lines = append(lines, e.Error())
				}
			} else {
				lines = []string{err.Error()}
			}
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("reported:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
