package modules

import (
	"context"
	"errors"
	"testing"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
)

// keeper is a test module that keeps its host handle.
type keeper struct{ h sdk.Host }

func (k *keeper) Start(_ context.Context, h sdk.Host) error { k.h = h; return nil }
func (*keeper) Stop(context.Context) error                  { return nil }
func (*keeper) Handle(context.Context, sdk.Message) error   { return nil }

// A module lists, swaps and learns the build class through its host handle: the capabilities
// pluginmanager uses instead of the control socket.
func TestHostHandleListsModulesSwapsThroughTheHostsSwapperAndNamesTheClass(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	k := &keeper{}
	p := []Planned{{Info: sdk.Info{Name: "keeper", Group: "test"}, Module: k, Settings: Settings{Runtime: Builtin}}}
	if err := h.mgr.Start(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.mgr.Stop(ctx) })

	l, ok := k.h.(sdk.ModuleLister)
	if !ok {
		t.Fatal("host handle is no sdk.ModuleLister")
	}
	if st := l.Modules(ctx); len(st) != 1 || st[0].Name != "keeper" || st[0].Runtime != control.Builtin || st[0].Release != Version {
		t.Fatalf("Modules = %+v, want keeper, builtin, release %s", st, Version)
	}
	if c, ok := k.h.(sdk.HostClasser); !ok || c.HostClass() != "full" {
		t.Fatalf("HostClass: want full for a build without kedge_custom")
	}
	Class = "gateway"
	t.Cleanup(func() { Class = "" })
	if c := k.h.(sdk.HostClasser).HostClass(); c != "gateway" {
		t.Fatalf("HostClass with Class stamped gateway = %q", c)
	}

	s := k.h.(sdk.ModuleSwapper)
	if _, err := s.SwapModule(ctx, "keeper", control.Builtin, "", ""); !errors.Is(err, sdk.ErrHostStarting) {
		t.Fatalf("swap before the host set its swapper: %v, want ErrHostStarting", err)
	}
	var asked control.SwapRequest
	h.mgr.SetSwapper(func(_ context.Context, name string, req control.SwapRequest) (SwapReport, error) {
		asked = req
		return SwapReport{Module: name, To: req.Runtime}, nil
	})
	rep, err := s.SwapModule(ctx, "keeper", control.Process, "/p/keeper", "ab")
	if err != nil || rep.Module != "keeper" || asked.Path != "/p/keeper" || asked.SHA256 != "ab" || asked.Runtime != control.Process {
		t.Fatalf("swap through the host: %+v, %v (asked %+v)", rep, err, asked)
	}

	// A swapper held up by another change (a reload waiting for this module to stop) does not hold the
	// module past its context.
	release := make(chan struct{})
	defer close(release)
	h.mgr.SetSwapper(func(ctx context.Context, name string, req control.SwapRequest) (SwapReport, error) {
		<-release
		return SwapReport{}, ctx.Err()
	})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.SwapModule(cctx, "keeper", control.Builtin, "", ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("swap with an ended context while the swapper waits: %v, want context.Canceled", err)
	}
}
