package modules

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/sdk"
)

// gated is a test module whose Start and Stop wait for their gates (nil: at once); it answers every
// sync request with OK. inStart, when set, runs inside Start with the host handle.
type gated struct {
	name                string
	startGate, stopGate chan struct{}
	inStart             func(h sdk.Host)
	host                sdk.Host
}

func (g *gated) Start(ctx context.Context, h sdk.Host) error {
	g.host = h
	if g.inStart != nil {
		g.inStart(h)
	}
	if g.startGate != nil {
		<-g.startGate
	}
	return nil
}

func (g *gated) Handle(ctx context.Context, m sdk.Message) error {
	r, err := m.Reply(g.name, "OK")
	if err != nil {
		return err
	}
	return g.host.Reply(ctx, r)
}

func (g *gated) Stop(context.Context) error {
	if g.stopGate != nil {
		<-g.stopGate
	}
	return nil
}

func gatedPlan(mods ...*gated) []Planned {
	var out []Planned
	for _, g := range mods {
		out = append(out, Planned{Info: sdk.Info{Name: g.name, Group: g.name}, Settings: Settings{Runtime: Builtin}, Module: g})
	}
	return out
}

func newGatedManager(t *testing.T) *Manager {
	t.Helper()
	return newHarnessWith(t, func(d *Deps) { d.StopTimeout, d.StartTimeout = 30*time.Second, time.Minute }).mgr
}

// TestTheHostSaysWhichModulesArePlannedAndWhenAllHaveStarted proves sdk.StartWaiter, which keeps an
// edge's message from being refused while cloudcore starts: cloudhub (started first) can tell a
// controller the host has yet to start from a module that is not there, and wait for the start.
// The host itself does not wait: a send to a module not started yet fails at once, from inside a
// Start too (the module it would wait for can only start after it).
func TestTheHostSaysWhichModulesArePlannedAndWhenAllHaveStarted(t *testing.T) {
	mgr := newGatedManager(t)
	inStart := make(chan error, 1)
	first := &gated{name: "first"}
	// early takes its time to start (a controller listing its informers); late, after it, has no
	// mailbox yet.
	early := &gated{name: "early", startGate: make(chan struct{}), inStart: func(h sdk.Host) {
		_, err := h.SendSync(context.Background(), "late", message.New("early", "test", message.OpQuery, "ns/t/1"), 20*time.Second)
		inStart <- err
	}}
	late := &gated{name: "late"}
	started := make(chan error, 1)
	go func() { started <- mgr.Start(context.Background(), gatedPlan(first, early, late)) }()
	t.Cleanup(func() { _ = mgr.Stop(context.Background()) })

	select {
	case err := <-inStart:
		if !errors.Is(err, sdk.ErrUnknownModule) {
			t.Fatalf("a send from inside Start to a module started later: %v; want ErrUnknownModule at once", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a send from inside Start waited for a module that starts after it")
	}
	waitFor(t, "first to have started", func() bool { return len(mgr.Running()) == 1 })
	sw, ok := first.host.(sdk.StartWaiter)
	if !ok {
		t.Fatal("the builtin host handle is not an sdk.StartWaiter")
	}
	for name, want := range map[string]bool{"first": true, "early": true, "late": true, "ghost": false} {
		if got := sw.Planned(name); got != want {
			t.Errorf("Planned(%q) = %v, want %v", name, got, want)
		}
	}
	if _, err := first.host.SendSync(context.Background(), "late", message.New("first", "test", message.OpQuery, "ns/t/2"), 20*time.Second); !errors.Is(err, sdk.ErrUnknownModule) {
		t.Fatalf("send to a module not started yet: %v; want ErrUnknownModule at once (the host does not wait)", err)
	}
	select {
	case <-sw.Started():
		t.Fatal("Started closed while a module was still starting")
	default:
	}
	close(early.startGate)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	select {
	case <-sw.Started():
	case <-time.After(15 * time.Second):
		t.Fatal("Started not closed after every module started")
	}
	if _, err := first.host.SendSync(context.Background(), "late", message.New("first", "test", message.OpQuery, "ns/t/3"), time.Minute); err != nil {
		t.Fatalf("send to late once started: %v", err)
	}
}

// TestASendToAModuleStoppedWithTheHostSaysTheHostIsStopping proves a module that outlives another on
// shutdown (cloudhub outlives the controllers) can tell "stopped with the host" from "not a module
// here": it then leaves the message unanswered for its sender to send again, instead of refusing it.
func TestASendToAModuleStoppedWithTheHostSaysTheHostIsStopping(t *testing.T) {
	mgr := newGatedManager(t)
	first := &gated{name: "first"}
	late := &gated{name: "late", stopGate: make(chan struct{})}
	if err := mgr.Start(context.Background(), gatedPlan(first, late)); err != nil {
		t.Fatal(err)
	}
	if _, err := first.host.SendSync(context.Background(), "late", message.New("first", "test", message.OpQuery, "ns/t/1"), time.Minute); err != nil {
		t.Fatalf("send while running: %v", err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Stop(context.Background()) }()
	// late stops first (reverse order) and is held in its Stop: first still runs.
	waitFor(t, "late to stop receiving", func() bool {
		_, err := first.host.SendSync(context.Background(), "late", message.New("first", "test", message.OpQuery, "ns/t/2"), time.Minute)
		return err != nil
	})
	_, err := first.host.SendSync(context.Background(), "late", message.New("first", "test", message.OpQuery, "ns/t/3"), time.Minute)
	if !errors.Is(err, sdk.ErrHostStopping) || !errors.Is(err, sdk.ErrUnknownModule) {
		t.Errorf("send to a module stopped with the host: %v; want ErrHostStopping (and ErrUnknownModule)", err)
	}
	if err := first.host.Send(context.Background(), "late", message.New("first", "test", message.OpUpdate, "ns/t/4")); !errors.Is(err, sdk.ErrHostStopping) {
		t.Errorf("async send to a module stopped with the host: %v; want ErrHostStopping", err)
	}
	if _, err := first.host.SendSync(context.Background(), "ghost", message.New("first", "test", message.OpQuery, "ns/t/5"), time.Minute); errors.Is(err, sdk.ErrHostStopping) || !errors.Is(err, sdk.ErrUnknownModule) {
		t.Errorf("send to a module that was never planned, while stopping: %v; want ErrUnknownModule only", err)
	}
	close(late.stopGate)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}
