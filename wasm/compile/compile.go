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

	"github.com/kedge-io/kedge/wasm/manifest"
)

// Config is the runtime configuration every Kedge WASM module runs with: the compiler engine where
// wazero supports the platform (its interpreter elsewhere), and the termination checks that let a
// deadline stop a guest in a loop. Compiled code is cached under a hash of the code and these
// choices, so everything that compiles for Kedge must start from Config.
func Config() wazero.RuntimeConfig {
	return ConfigFor(true)
}

// ConfigFor is Config for a module that is interruptible (the default) or not. A module that is not
// interruptible is compiled without wazero's termination checks: calls into it cost far less (no
// goroutine per call, no exit to Go at every loop header), but a call looping in pure computation
// can no longer be stopped. wazero keys compiled code by this choice too, so both kinds share one
// compilation cache without mixing.
func ConfigFor(interruptible bool) wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().WithCloseOnContextDone(interruptible)
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

// AheadFor is Ahead for a module run interruptible or not (see ConfigFor).
func AheadFor(ctx context.Context, dir string, wasm []byte, interruptible bool) error {
	_, code, err := Code(wasm)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cache, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return fmt.Errorf("compilation cache %s: %w", dir, err)
	}
	defer cache.Close(ctx)
	rt := wazero.NewRuntimeWithConfig(ctx, ConfigFor(interruptible).WithCompilationCache(cache))
	defer rt.Close(ctx)
	if _, err := rt.CompileModule(Workers(ctx), code); err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	return nil
}
