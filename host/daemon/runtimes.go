package daemon

import (
	"io"
	"sync"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
)

// RuntimeFactory makes the loader of one runtime from the host's config.
type RuntimeFactory func(b *Base) (modules.Loader, error)

var (
	runtimesMu sync.Mutex
	runtimes   = map[modules.Runtime]RuntimeFactory{}
	// made keeps one loader per runtime and config, so a config reload or a swap reuses it (and its
	// compilation cache) instead of making another.
	made = map[modules.Runtime]*lazyLoader{}
)

// RegisterRuntime makes a runtime available to the binary; cmd/ calls it from a file behind a build
// tag, so a trimmed build can leave a runtime (and its dependencies) out.
func RegisterRuntime(rt modules.Runtime, f RuntimeFactory) {
	runtimesMu.Lock()
	defer runtimesMu.Unlock()
	runtimes[rt] = f
}

// loaders returns the loaders for b; each is made on first use, so checking a config (validate,
// inspect) never creates caches or folders.
func loaders(b *Base) modules.Loaders {
	runtimesMu.Lock()
	defer runtimesMu.Unlock()
	out := modules.Loaders{}
	for rt, f := range runtimes {
		z, ok := made[rt]
		if !ok || z.plugins != b.Plugins {
			z = &lazyLoader{make: f, base: b, plugins: b.Plugins}
			made[rt] = z
		}
		out[rt] = z
	}
	return out
}

// closeLoaders releases what the loaders hold (a WASM compilation cache); call it after modules stop.
func closeLoaders() {
	runtimesMu.Lock()
	defer runtimesMu.Unlock()
	for _, z := range made {
		if c, ok := z.l.(io.Closer); ok {
			_ = c.Close()
		}
	}
	clear(made)
}

// lazyLoader makes its loader on the first New.
type lazyLoader struct {
	once    sync.Once
	make    RuntimeFactory
	base    *Base
	plugins PluginsConfig
	l       modules.Loader
	err     error
}

func (z *lazyLoader) New(spec modules.Spec) (sdk.Module, error) {
	z.once.Do(func() { z.l, z.err = z.make(z.base) })
	if z.err != nil {
		return nil, z.err
	}
	return z.l.New(spec)
}
