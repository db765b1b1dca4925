//go:build !kedge_custom || kedge_wasm

package main

import (
	"github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/host/modules"
	wasmrt "github.com/kedge-io/kedge/wasm/runtime"
)

// runtime: wasm — sandboxed WebAssembly modules (wazero), compiled once into plugins.cacheDir.
func init() {
	daemon.RegisterRuntime(modules.WASM, func(b *daemon.Base) (modules.Loader, error) {
		return wasmrt.NewLoader(wasmrt.Options{CacheDir: b.Plugins.CacheDir})
	})
}
