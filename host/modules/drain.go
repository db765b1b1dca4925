package modules

import (
	"context"
	"slices"
	"sync"

	"github.com/kedge-io/kedge/sdk"
)

// Drain calls Drain on every running module that implements sdk.Drainer, all at once, and waits for
// them (or ctx): it runs before Stop, while every module still runs, so work handed over meanwhile
// (a node's last reports) is still handled.
func (mgr *Manager) Drain(ctx context.Context) {
	mgr.mu.Lock()
	rs := slices.Clone(mgr.running)
	mgr.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		r.view.Lock()
		inst := r.cur
		r.view.Unlock()
		if d, ok := inst.planned.Module.(sdk.Drainer); ok {
			wg.Go(func() { d.Drain(ctx) })
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
