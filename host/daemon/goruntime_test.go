package daemon

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

// The config's runtime block reaches the Go runtime, unless GOGC / GOMEMLIMIT are in the environment.
func TestRuntimeSettingsReachTheGCUnlessTheEnvironmentSetsThem(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name               string
		cfg                RuntimeConfig
		env                map[string]string
		wantGC             int
		wantLimit          int64
		presetGC, presetML int
	}{
		{"config applied", RuntimeConfig{GCPercent: 37, MemoryLimitMiB: 48}, nil, 37, 48 << 20, 100, 0},
		{"no limit is the runtime's maximum", RuntimeConfig{GCPercent: 80}, nil, 80, math.MaxInt64, 100, 7},
		{"environment wins", RuntimeConfig{GCPercent: 37, MemoryLimitMiB: 48}, map[string]string{"GOGC": "150", "GOMEMLIMIT": "90MiB"}, 111, 99 << 20, 111, 99},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(tt.presetGC)
			debug.SetMemoryLimit(int64(tt.presetML) << 20)
			applyRuntime(tt.cfg, func(k string) string { return tt.env[k] }, quiet)
			if got := debug.SetGCPercent(100); got != tt.wantGC {
				t.Errorf("GC percent = %d, want %d", got, tt.wantGC)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.wantLimit {
				t.Errorf("memory limit = %d, want %d", got, tt.wantLimit)
			}
		})
	}
}

// A runtime or store setting out of range fails to load with its key named.
func TestLoadRefusesBadRuntimeAndStoreCacheSettingsByKey(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ set, want string }{
		{"runtime.gcPercent=-2", "runtime.gcPercent: must be -1 (off) or a percentage, got -2"},
		{"runtime.gcPercent=-1", "runtime.gcPercent: -1 turns the GC off and needs runtime.memoryLimitMiB"},
		{"runtime.memoryLimitMiB=-5", "runtime.memoryLimitMiB: must be 0 (no limit) or a size in MiB, got -5"},
		{"store.cacheKiB=-1", "store.cacheKiB: must be 0 (SQLite's default) or a size in KiB, got -1"},
	}
	for _, tt := range tests {
		t.Run(tt.set, func(t *testing.T) {
			_, _, err := Load(vtSpec(dir), "", []string{tt.set}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load(--set %s) = %v, want an error containing %q", tt.set, err, tt.want)
			}
		})
	}
	// GC off with a limit is a valid, if aggressive, choice.
	if _, _, err := Load(vtSpec(dir), "", []string{"runtime.gcPercent=-1", "runtime.memoryLimitMiB=32"}, nil); err != nil {
		t.Fatalf("gcPercent -1 with a memory limit: %v", err)
	}
}
