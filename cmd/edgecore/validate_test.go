package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/daemon"
)

// buildPlugin builds module name as a plugin executable the way `make module-<name>` does, and
// returns its path and SHA-256.
func buildPlugin(t *testing.T, name string) (path, sum string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-tags", "kedge_custom kedge_"+name, "-ldflags", "-X main.moduleName="+name, "-o", path, "../kedge-module")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the %s plugin: %v\n%s", name, err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, fmt.Sprintf("%x", sha256.Sum256(b))
}

// pluginsRunning lists the pids of processes running the executable path.
func pluginsRunning(path string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// TestValidateAndStartupReportBadProcessPluginSettingsWithFileAndKey proves that a module running as
// a plugin process (runtime: process, the real nodestatus plugin cmd/kedge-module builds) has its
// settings checked by its own Validate — and strictly decoded — in `edgecore validate` and at
// startup, before anything starts: each problem reported as "<file>: modules.<name>.<key>:
// <problem>" with exit code 2, the plugin launched for the check stopped again; and that settings
// the plugin accepts pass.
func TestValidateAndStartupReportBadProcessPluginSettingsWithFileAndKey(t *testing.T) {
	plugin, sum := buildPlugin(t, "nodestatus")
	dir := t.TempDir()
	write := func(name, settings string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		conf := fmt.Sprintf("node: {name: edge-1}\nstore: {path: %s}\nmodules:\n  nodestatus: {runtime: process, path: %s, sha256: %s, %s}\n",
			filepath.Join(dir, "kedge.db"), plugin, sum, settings)
		if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.yaml", "interval: 500ms, maxPods: -2")
	typo := write("typo.yaml", "intervall: 5s")
	good := write("good.yaml", "interval: 5s, maxPods: 10")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"validate", []string{"validate", "--config", bad}, []string{
			bad + ": modules.nodestatus.interval: must be at least 1s, got 500ms",
			bad + ": modules.nodestatus.maxPods: must not be negative, got -2",
		}},
		{"startup", []string{"--config", bad}, []string{
			bad + ": modules.nodestatus.interval: must be at least 1s, got 500ms",
			bad + ": modules.nodestatus.maxPods: must not be negative, got -2",
		}},
		{"unknown setting", []string{"validate", "--config", typo}, []string{typo + ": modules.nodestatus.intervall: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := daemon.Command(spec)
			cmd.SetArgs(tt.args)
			err := cmd.ExecuteContext(ctx)
			if err == nil {
				t.Fatal("bad plugin settings accepted")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, fmt.Sprintf("exit %d: ", daemon.ExitConfig)) {
				t.Fatalf("got %q, want an exit %d config error", msg, daemon.ExitConfig)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("the report lacks %q:\n%s", w, msg)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "kedge.db")); err == nil {
				t.Error("the store was opened: something started although the settings are bad")
			}
			if code := daemon.Main(spec, tt.args); code != daemon.ExitConfig {
				t.Errorf("exit code %d, want %d", code, daemon.ExitConfig)
			}
		})
	}
	t.Run("valid settings pass", func(t *testing.T) {
		if code := daemon.Main(spec, []string{"validate", "--config", good}); code != daemon.ExitOK {
			t.Fatalf("exit code %d for valid plugin settings, want %d", code, daemon.ExitOK)
		}
	})
	// The plugins launched for the checks are stopped again (graceful, then killed after 2s).
	deadline := time.Now().Add(time.Minute)
	for len(pluginsRunning(plugin)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("plugin processes %v still run a minute after validate", pluginsRunning(plugin))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
