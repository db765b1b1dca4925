package sdk

import (
	"context"
	"errors"

	"github.com/kedge-io/kedge/sdk/control"
)

// ModuleLister is implemented by a host that lists its running modules (the builtin host does): the
// same answer as `module ls` and the control socket's GET /v1/modules, without the socket. Status
// reads each module's health (HealthChecker) on the way, so do not call it from a module's Healthy.
// pluginmanager uses it to check the modules it swapped and to report the node's inventory.
type ModuleLister interface {
	Modules(ctx context.Context) []control.Status
}

// ModuleSwapper is implemented by a host that hot-swaps its modules (the builtin host does, once
// every module has started; before that SwapModule returns an error wrapping ErrHostStarting). It is the same swap as
// `module swap` and the control socket's POST /v1/modules/{name}/swap, serialised with them: name
// keeps its settings and runs runtime (with the plugin file path and its sha256 for process and
// wasm). An error means the old instance keeps running.
type ModuleSwapper interface {
	SwapModule(ctx context.Context, name string, runtime control.Runtime, path, sha256 string) (control.SwapReport, error)
}

// HostClasser is implemented by a host that knows the device class it was built as (the builtin host
// does): "minimal", "gateway" or "full" for `make edgecore-<class>` and release builds, "full" for a
// plain `go build`, "custom" for a build with a hand-picked set of modules (-tags kedge_custom ...).
type HostClasser interface {
	HostClass() string
}

// StartWaiter is implemented by a host that starts its modules one after another (the builtin host
// does). A module that has started may hear from the outside before the modules after it have: a
// send to one of those fails with ErrUnknownModule although it will run in a moment. Planned says
// whether name is one of the host's modules, started yet or not; Started is closed once the host has
// started them all (or failed to). cloudhub uses it so an edge's message that arrives while cloudcore
// starts waits for its controller instead of being refused. Do not wait for Started inside Start or
// Handle: a module started after yours may be waiting for you.
type StartWaiter interface {
	Started() <-chan struct{}
	Planned(name string) bool
}

// ErrHostStarting: the host does not swap modules yet (it is still starting its modules); try again.
var ErrHostStarting = errors.New("the host is still starting its modules")
