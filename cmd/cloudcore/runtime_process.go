//go:build !kedge_custom || kedge_process

package main

import (
	"github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/process"
)

// runtime: process — modules as plugin executables (go-plugin over gRPC).
func init() {
	daemon.RegisterRuntime(modules.Process, func(b *daemon.Base) (modules.Loader, error) {
		return process.NewLoader(process.Options{Dir: b.Plugins.Dir}), nil
	})
}
