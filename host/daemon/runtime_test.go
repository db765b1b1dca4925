package daemon

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// TestRuntimeSettingsAreCheckedWithFileAndKey proves a garbage-collector setting that cannot work is
// refused at load time naming the file, the key and the value, and that the sane ones load.
func TestRuntimeSettingsAreCheckedWithFileAndKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"default", "", ""},
		{"lower gcPercent", "runtime: {gcPercent: 30}", ""},
		{"off with a limit", "runtime: {gcPercent: -1, memoryLimitMiB: 512}", ""},
		{"zero gcPercent", "runtime: {gcPercent: 0}", "runtime.gcPercent: expected a positive percentage or -1 (off), got 0"},
		{"below -1", "runtime: {gcPercent: -5}", "runtime.gcPercent: expected a positive percentage or -1 (off), got -5"},
		{"off without a limit", "runtime: {gcPercent: -1}", "runtime.gcPercent: -1 turns the garbage collector off; that needs runtime.memoryLimitMiB"},
		{"negative limit", "runtime: {memoryLimitMiB: -1}", "runtime.memoryLimitMiB: expected 0 (no limit) or a size in MiB, got -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(vtSpec(dir), path, nil, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("loaded; want the error %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), path+": "+tc.want):
				t.Fatalf("error %q does not say %q", err, path+": "+tc.want)
			}
		})
	}
}

// TestRuntimeSettingsAreAppliedUnlessTheEnvironmentSetThem proves runtime.gcPercent and
// runtime.memoryLimitMiB reach the Go runtime, and that GOGC / GOMEMLIMIT set for the process win.
func TestRuntimeSettingsAreAppliedUnlessTheEnvironmentSetThem(t *testing.T) {
	oldGC, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(oldGC); debug.SetMemoryLimit(oldLimit) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	RuntimeConfig{GCPercent: 37, MemoryLimitMiB: 700}.apply(log)
	if got := debug.SetGCPercent(100); got != 37 {
		t.Fatalf("gcPercent 37 configured, runtime has %d", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 700<<20 {
		t.Fatalf("memoryLimitMiB 700 configured, runtime limit is %d bytes", got)
	}

	t.Setenv("GOGC", "80")
	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetGCPercent(80)
	debug.SetMemoryLimit(1 << 30)
	RuntimeConfig{GCPercent: 37, MemoryLimitMiB: 700}.apply(log)
	if got := debug.SetGCPercent(100); got != 80 {
		t.Fatalf("GOGC=80 in the environment, but the config's 37 replaced it: runtime has %d", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Fatalf("GOMEMLIMIT=1GiB in the environment, but the config replaced it: limit %d bytes", got)
	}
}
