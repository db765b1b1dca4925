package daemon

import (
	"strings"
	"testing"
)

// A runtime or store setting out of range fails to load with its key named.
func TestLoadRefusesBadRuntimeAndStoreCacheSettingsByKey(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ set, want string }{
		{"runtime.gcPercent=-2", "runtime.gcPercent: expected a positive percentage or -1 (off), got -2"},
		{"runtime.gcPercent=-1", "runtime.gcPercent: -1 turns the garbage collector off; that needs runtime.memoryLimitMiB"},
		{"runtime.memoryLimitMiB=-5", "runtime.memoryLimitMiB: expected 0 (no limit) or a size in MiB, got -5"},
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
