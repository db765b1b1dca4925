// Package compile says how Kedge compiles WASM modules, so the runtime and ahead-of-time
// compilation agree: a module compiled ahead (wasmpack -cache, at image build time) is found in the
// on-disk compilation cache by every edgecore using that directory, which then skips the ~0.5 s
// (on a small device, seconds) cold compile of a Go guest.
package compile

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/kedge-io/kedge/wasm/instrument"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// Stop is how a running guest is stopped at its deadline.
type Stop string

const (
	// StopCheck: the module was instrumented (wasm/instrument): a check of a flag at every loop
	// header, set by the host's watchdog, compiled without wazero's termination checks.
	StopCheck Stop = "check"
	// StopWazero: wazero's termination checks (WithCloseOnContextDone), for an interruptible
	// module the instrumenter refused (an instruction it does not know, no memory, …).
	StopWazero Stop = "wazero"
	// StopNone: no check at all (`interruptible: false`): a call computing in a loop cannot be
	// stopped; one that sleeps or calls the host can.
	StopNone Stop = "none"
)

// Prepare returns the code Kedge compiles for a module's code (see Code) and how it will be
// stopped: instrumented for an interruptible module, unchanged otherwise. When instrumenting fails,
// the code is returned unchanged with StopWazero and the reason, for the caller to log.
func Prepare(code []byte, interruptible bool) ([]byte, Stop, error) {
	if !interruptible {
		return code, StopNone, nil
	}
	out, _, err := instrument.Module(code)
	if err != nil {
		return code, StopWazero, err
	}
	return out, StopCheck, nil
}

// ConfigForStop is the runtime configuration for code Prepare returned with stop: wazero's
// termination checks only for StopWazero.
func ConfigForStop(stop Stop) wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().WithCloseOnContextDone(stop == StopWazero)
}

// Config is the runtime configuration with wazero's termination checks (StopWazero): the compiler
// engine where wazero supports the platform (its interpreter elsewhere). Compiled code is cached
// under a hash of the code and the configuration, so everything that compiles for Kedge must go
// through Prepare and ConfigForStop (Ahead does).
func Config() wazero.RuntimeConfig {
	return ConfigForStop(StopWazero)
}

// ConfigFor is the configuration with (true) or without wazero's termination checks. Kedge's
// default is instrumented code without them: use Prepare and ConfigForStop.
func ConfigFor(checks bool) wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().WithCloseOnContextDone(checks)
}

// Workers returns ctx asking wazero to compile a module's functions on every core (it uses one by
// default): a cold compile then takes about 1/GOMAXPROCS of the time.
func Workers(ctx context.Context) context.Context {
	return experimental.WithCompilationWorkers(ctx, runtime.GOMAXPROCS(0))
}

// Code returns what is compiled for a packed module: the module without its manifest section, so
// modules differing only in their manifests share compiled code.
func Code(wasm []byte) (manifest.Manifest, []byte, error) {
	return manifest.Split(wasm)
}

// Ahead compiles a packed module into the compilation cache in dir, exactly as the runtime would.
func Ahead(ctx context.Context, dir string, wasm []byte) error {
	return AheadFor(ctx, dir, wasm, true)
}

// AheadFor is Ahead for a module run interruptible or not: the code is prepared (instrumented)
// exactly as the runtime prepares it, so the cache entries match.
func AheadFor(ctx context.Context, dir string, wasm []byte, interruptible bool) error {
	_, code, err := Code(wasm)
	if err != nil {
		return err
	}
	code, stop, _ := Prepare(code, interruptible) // a refused module is compiled with wazero's checks, as the runtime does
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cache, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return fmt.Errorf("compilation cache %s: %w", dir, err)
	}
	defer cache.Close(ctx)
	rt := wazero.NewRuntimeWithConfig(ctx, ConfigForStop(stop).WithCompilationCache(cache))
	defer rt.Close(ctx)
	if _, err := rt.CompileModule(Workers(ctx), code); err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	return nil
}
