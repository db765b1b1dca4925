package pluginmanager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
)

// controls picks how modules are listed and swapped: through the host handle (sdk.ModuleLister and
// sdk.ModuleSwapper, the builtin host's) when controlSocket is empty, else through that control socket.
func (m *Module) controls(h sdk.Host) error {
	if m.ControlSocket != "" {
		m.ctl = control.NewClient(m.ControlSocket, m.SwapTimeout)
		return nil
	}
	l, okL := h.(sdk.ModuleLister)
	s, okS := h.(sdk.ModuleSwapper)
	if !okL || !okS {
		return errors.New("controlSocket must be set (edgecore's admin.socket): this host does not list and swap modules through its handle (sdk.ModuleLister, sdk.ModuleSwapper)")
	}
	m.lister, m.swapper = l, s
	return nil
}

// modules lists the host's running modules.
func (m *Module) modules(ctx context.Context) ([]control.Status, error) {
	if m.ctl != nil {
		return m.ctl.Modules(ctx)
	}
	return m.lister.Modules(ctx), nil
}

// swap swaps module name in; through the host handle it waits while the host is still starting its
// modules (a last good version restored at start), until ctx ends.
func (m *Module) swap(ctx context.Context, name string, rt control.Runtime, path, sha256 string) (control.SwapReport, error) {
	if m.ctl != nil {
		return m.ctl.Swap(ctx, name, rt, path, sha256)
	}
	ctx, cancel := context.WithTimeout(ctx, m.SwapTimeout)
	defer cancel()
	wait := 50 * time.Millisecond
	for {
		rep, err := m.swapper.SwapModule(ctx, name, rt, path, sha256)
		if !errors.Is(err, sdk.ErrHostStarting) {
			return rep, err
		}
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("%w (gave up waiting: %v)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
}
