package daemon

import (
	"log/slog"
	"time"

	"github.com/kedge-io/kedge/host/modules"
)

// Config is implemented by cloudcore's and edgecore's config structs; each embeds Base inline.
type Config interface {
	base() *Base
	// Identity is the node name on the edge, the instance name in the cloud.
	Identity() string
}

// Base is the part of the config both hosts share.
type Base struct {
	Log             LogConfig      `yaml:"log" doc:"Logging (log/slog)." cfg:"min"`
	Admin           AdminConfig    `yaml:"admin" doc:"Health, readiness and Prometheus metrics over HTTP."`
	Store           StoreConfig    `yaml:"store" doc:"The SQLite store: meta objects, module state and the upstream outbox." cfg:"min"`
	ShutdownTimeout time.Duration  `yaml:"shutdownTimeout" doc:"Bound on a graceful shutdown; past it the process exits anyway."`
	Mailbox         int            `yaml:"mailbox" doc:"Default mailbox capacity per module (messages); a full mailbox makes senders wait."`
	Plugins         PluginsConfig  `yaml:"plugins" doc:"Modules that are not compiled in: plugin processes and WASM modules."`
	Runtime         RuntimeConfig  `yaml:"runtime" doc:"The Go runtime's garbage collector: how much the heap may grow over what is live, and a soft memory limit."`
	Modules         map[string]any `yaml:"modules" doc:"Modules: each has enable, runtime (builtin, process, wasm) and its own settings." cfg:"min"`
}

func (b *Base) base() *Base { return b }

// LogConfig configures the process logger.
type LogConfig struct {
	Level  slog.Level `yaml:"level" doc:"debug, info, warn or error." cfg:"min"`
	Format string     `yaml:"format" doc:"text or json."`
}

// AdminConfig configures the admin HTTP server.
type AdminConfig struct {
	Address string `yaml:"address" doc:"Listen address for /healthz, /readyz and /metrics; keep it on loopback unless a scraper needs it."`
	Socket  string `yaml:"socket" doc:"Control socket for the module command (list, hot swap); mode 0600, so only this user can use it. Empty disables it."`
	Reload  bool   `yaml:"reload" doc:"Watch the config file and apply module changes (swap, start, stop) when it is saved."`
	Pprof   bool   `yaml:"pprof" doc:"Serve Go's profiles (heap, goroutine, CPU) under /debug/pprof/ on the admin address, for measuring memory and CPU; off by default: profiles show internals to whoever reaches the address."`
	// SwapHealthTimeout bounds how long a hot swap polls the new instance until healthy.
	SwapHealthTimeout time.Duration `yaml:"swapHealthTimeout" doc:"How long a hot swap waits for the new module instance to become healthy (polled from 50ms to 500ms apart) before rolling back; module swap --health-timeout overrides it for one swap."`
}

// StoreConfig configures the SQLite store.
type StoreConfig struct {
	Path        string `yaml:"path" doc:"Database file; its folder is created (mode 0700) if missing." cfg:"min"`
	Synchronous string `yaml:"synchronous" doc:"full (survives power loss) or normal (survives a process crash; faster writes)."`
	CacheKiB    int    `yaml:"cacheKiB" doc:"SQLite page cache per connection in KiB (PRAGMA cache_size; one writer and 4 readers, each filled only as pages are read); 0 is SQLite's default, 2000. Memory-mapped I/O stays off (mmap_size 0): mapped pages would count in the process's RSS."`
}

// PluginsConfig configures the process and WASM runtimes.
type PluginsConfig struct {
	Dir      string `yaml:"dir" doc:"If set, plugin files (runtime process) must be in this folder; empty allows any path (files are sha256-pinned either way)."`
	CacheDir string `yaml:"cacheDir" doc:"Compiled WASM modules are kept here across restarts (a cold compile takes ~0.5 s per module on a fast machine)."`
	// PrepareTimeout bounds a module's preparation (a WASM module's compile) before its start.
	PrepareTimeout time.Duration `yaml:"prepareTimeout" doc:"How long a module may take to prepare (a WASM module's compile on a cache miss: seconds on a busy or small device, minutes under emulation) before its start or swap is refused; separate from the 30s bound on the start itself. In a swap the old instance keeps serving meanwhile."`
}

// DefaultBase returns the shared defaults for a binary.
func DefaultBase(binary, adminAddress string) Base {
	return Base{
		Log: LogConfig{Level: slog.LevelInfo, Format: "text"},
		Admin: AdminConfig{Address: adminAddress, Socket: "/run/kedge/" + binary + ".sock", Reload: true,
			SwapHealthTimeout: modules.DefaultSwapHealthTimeout},
		Store:           StoreConfig{Path: "/var/lib/kedge/" + binary + ".db", Synchronous: "full"},
		ShutdownTimeout: 5 * time.Second,
		Mailbox:         1024,
		Plugins:         PluginsConfig{CacheDir: "/var/lib/kedge/" + binary + "-wasm-cache", PrepareTimeout: modules.DefaultPrepareTimeout},
		Runtime:         RuntimeConfig{GCPercent: 100},
	}
}
