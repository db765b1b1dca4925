package daemon

import (
	"log/slog"
	"math"
	"runtime/debug"
)

// applyRuntime sets the garbage collector's targets from the config. GOGC and GOMEMLIMIT in the
// environment are the operator's per-process override (the Go runtime has read them already), so a
// setting whose variable is set is left alone and that is logged.
func applyRuntime(c RuntimeConfig, getenv func(string) string, log *slog.Logger) {
	if v := getenv("GOGC"); v != "" {
		log.Info("GOGC is set in the environment; runtime.gcPercent not applied", "GOGC", v, "gcPercent", c.GCPercent)
	} else {
		debug.SetGCPercent(c.GCPercent)
	}
	if v := getenv("GOMEMLIMIT"); v != "" {
		log.Info("GOMEMLIMIT is set in the environment; runtime.memoryLimitMiB not applied", "GOMEMLIMIT", v, "memoryLimitMiB", c.MemoryLimitMiB)
	} else if c.MemoryLimitMiB > 0 {
		debug.SetMemoryLimit(int64(c.MemoryLimitMiB) << 20)
	} else {
		debug.SetMemoryLimit(math.MaxInt64) // no limit (the runtime's default)
	}
}
