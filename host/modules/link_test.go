package modules

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kedge-io/kedge/sdk"
)

// linkModule holds a link to a remote peer that the test cuts and restores.
type linkModule struct {
	probe
	up *atomic.Bool
}

func (m *linkModule) LinkUp(context.Context) error {
	if !m.up.Load() {
		return errors.New("not connected to the cloud")
	}
	return nil
}

// A module whose link is down (an edge node offline) keeps the node ready: Ready is nil, Links names
// the link as down, Status says so beside a healthy module; when the link returns Links is nil.
func TestLinkDownIsNotUnreadinessButLinksReportsIt(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	up := &atomic.Bool{}
	hub := sdk.Info{Name: "hub", Group: "test", Enabled: true,
		New: func() sdk.Module { return &linkModule{probe: probe{name: "hub", j: h.j, Greeting: "hello"}, up: up} }}
	if err := h.mgr.Start(ctx, h.plan(t, info(h.j, "a", true), hub)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.mgr.Stop(ctx) })
	if err := h.mgr.Ready(ctx); err != nil {
		t.Fatalf("Ready with the link down: %v, want nil (the node serves offline)", err)
	}
	links, err := h.mgr.Links(ctx)
	if err == nil || !strings.Contains(err.Error(), "module hub: link down: not connected to the cloud") {
		t.Fatalf("Links error %v", err)
	}
	if len(links) != 1 || !strings.HasPrefix(links["hub"], "down: ") {
		t.Fatalf("links %v: want only hub, down", links)
	}
	for _, st := range h.mgr.Status(ctx) {
		if (st.Name == "hub") != (st.Link != "") || st.Health != "" {
			t.Fatalf("status %+v", st)
		}
	}
	up.Store(true)
	if links, err := h.mgr.Links(ctx); err != nil || links["hub"] != "up" {
		t.Fatalf("link restored: %v %v", links, err)
	}
}
