package daemon

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/kedge-io/kedge/host/config"
)

// RuntimeConfig sets the Go garbage collector's targets. The environment variables GOGC and
// GOMEMLIMIT, when set, win over these settings (the runtime reads them at start; a value set
// explicitly for one run should not be undone by a config file).
type RuntimeConfig struct {
	GCPercent int `yaml:"gcPercent" doc:"How far the heap may grow over the live data before a collection, in percent (Go's GOGC): 100 lets it double; lower trades CPU for memory. -1 turns the collector off (only with memoryLimitMiB). The GOGC environment variable wins when set."`
	// MemoryLimitMiB is a soft limit on the memory the Go runtime uses, in MiB; 0 means none.
	MemoryLimitMiB int64 `yaml:"memoryLimitMiB" doc:"Soft limit on the Go runtime's memory in MiB (Go's GOMEMLIMIT): near it the collector runs more often whatever gcPercent says. Set it below the container's limit; 0 means no limit. The GOMEMLIMIT environment variable wins when set."`
}

func (r RuntimeConfig) validate(source string) error {
	switch {
	case r.GCPercent < -1 || r.GCPercent == 0:
		return &config.Error{Source: source, Key: "runtime.gcPercent", Problem: fmt.Sprintf("expected a positive percentage or -1 (off), got %d", r.GCPercent)}
	case r.MemoryLimitMiB < 0 || r.MemoryLimitMiB > math.MaxInt64>>20:
		return &config.Error{Source: source, Key: "runtime.memoryLimitMiB", Problem: fmt.Sprintf("expected 0 (no limit) or a size in MiB, got %d", r.MemoryLimitMiB)}
	case r.GCPercent == -1 && r.MemoryLimitMiB == 0:
		return &config.Error{Source: source, Key: "runtime.gcPercent", Problem: "-1 turns the garbage collector off; that needs runtime.memoryLimitMiB, or the heap grows without bound"}
	}
	return nil
}

// apply sets the collector's targets unless the environment already did.
func (r RuntimeConfig) apply(log *slog.Logger) {
	gc, limit := "GOGC="+os.Getenv("GOGC"), "GOMEMLIMIT="+os.Getenv("GOMEMLIMIT")
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(r.GCPercent)
		gc = fmt.Sprintf("runtime.gcPercent=%d", r.GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" && r.MemoryLimitMiB > 0 {
		debug.SetMemoryLimit(r.MemoryLimitMiB << 20)
		limit = fmt.Sprintf("runtime.memoryLimitMiB=%d", r.MemoryLimitMiB)
	} else if os.Getenv("GOMEMLIMIT") == "" {
		limit = "none"
	}
	log.Debug("garbage collector", "gc", gc, "memoryLimit", limit)
}
