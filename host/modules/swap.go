package modules

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
)

// SwapReport says what a swap did (see sdk/control).
type SwapReport = control.SwapReport

// ErrRolledBack wraps the reason a new instance was refused; the old one kept running.
var ErrRolledBack = errors.New("swap rolled back: the old instance keeps running")

// SwapOption changes one swap.
type SwapOption func(*swapOptions)

type swapOptions struct {
	healthTimeout time.Duration
}

// WithHealthTimeout bounds how long this swap waits for the new instance to become healthy, instead
// of Deps.SwapHealthTimeout. d must be positive; zero keeps the manager's default.
func WithHealthTimeout(d time.Duration) SwapOption {
	return func(o *swapOptions) {
		if d > 0 {
			o.healthTimeout = d
		}
	}
}

// Swap replaces the running module next.Info.Name with next while messages flow: the new instance is
// prepared (a Preparer such as a WASM module compiles, bounded by Deps.PrepareTimeout) and started
// (bounded by Deps.StartTimeout) beside the old and polled until healthy (sdk.HealthChecker; a module without it is healthy
// at once), with a backoff from 50 ms to 500 ms, for up to the health timeout (Deps.SwapHealthTimeout
// or WithHealthTimeout). Meanwhile the old instance keeps handling the mailbox. Then delivery is held
// between two messages (the old instance finishes the one in hand), the instances are switched, queued
// messages continue in order into the new one, and the old one is stopped. If the new instance fails
// to start or is still unhealthy at the deadline, it is stopped and the old one keeps running; the
// error wraps ErrRolledBack and carries the last health error.
func (mgr *Manager) Swap(ctx context.Context, next Planned, opts ...SwapOption) (SwapReport, error) {
	o := swapOptions{healthTimeout: mgr.deps.SwapHealthTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	name := next.Info.Name
	r := mgr.find(name)
	if r == nil {
		return SwapReport{}, fmt.Errorf("swap %s: no such module is running", name)
	}
	r.view.Lock()
	old := r.cur
	r.view.Unlock()
	rep := SwapReport{Module: name, From: old.planned.Settings.Runtime, To: next.Settings.Runtime}
	if next.Info.Group != old.planned.Info.Group {
		return rep, fmt.Errorf("swap %s: group %q differs from the running module's %q; routing cannot change in a swap", name, next.Info.Group, old.planned.Info.Group)
	}
	fail := func(err error) (SwapReport, error) {
		mgr.metrics.swaps.WithLabelValues(name, "rolled_back").Inc()
		old.host.logger.Warn("swap rolled back", "to", string(next.Settings.Runtime), "err", err)
		return rep, fmt.Errorf("swap %s: %w: %w", name, ErrRolledBack, err)
	}
	inst, err := mgr.startInstance(ctx, next)
	if err != nil {
		return fail(fmt.Errorf("new instance did not start: %w", err))
	}
	rep.Prepared, rep.Started = inst.prepared, inst.started
	if err := mgr.awaitHealthy(ctx, next.Module, o.healthTimeout); err != nil {
		_ = stopInstance(context.WithoutCancel(ctx), inst)
		return fail(fmt.Errorf("new instance is unhealthy: %w", err))
	}

	r.pending.Store(true)
	begin := time.Now()
	r.mu.Lock() // waits for the message the old instance is handling
	r.view.Lock()
	r.cur = inst
	r.view.Unlock()
	r.swapped = true
	rep.Queued = r.mailbox.Len()
	r.mu.Unlock()
	rep.Paused = time.Since(begin)

	mgr.metrics.swaps.WithLabelValues(name, "ok").Inc()
	inst.host.logger.Info("module swapped", "from", string(rep.From), "to", string(rep.To), "paused", rep.Paused, "queued", rep.Queued,
		"prepared", rep.Prepared, "started", rep.Started)
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mgr.deps.StopTimeout)
	defer cancel()
	if err := stopInstance(stopCtx, old); err != nil {
		old.host.logger.Warn("old instance did not stop cleanly after the swap", "err", err)
	}
	return rep, nil
}

// Health polling backoff of a swap's new instance: the first retry after swapPollMin, doubling up to
// swapPollMax.
const (
	swapPollMin = 50 * time.Millisecond
	swapPollMax = 500 * time.Millisecond
)

// awaitHealthy polls m's health until it reports healthy or timeout passes; the error is the last
// health error, saying how many checks failed over how long.
func (mgr *Manager) awaitHealthy(ctx context.Context, m sdk.Module, timeout time.Duration) error {
	hc, ok := m.(sdk.HealthChecker)
	if !ok {
		return nil
	}
	deadline, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := swapPollMin
	for polls := 1; ; polls++ {
		err := healthy(deadline, hc)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (swap cancelled after %d health checks)", err, polls)
		}
		if deadline.Err() != nil {
			return fmt.Errorf("%w (still unhealthy after %d health checks within %s)", err, polls, timeout)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-deadline.Done():
			t.Stop()
			// One last check at the deadline, bounded like any other: the module may have just become
			// ready while we slept.
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(timeout, swapPollMax))
			err = healthy(last, hc)
			cancel()
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%w (swap cancelled after %d health checks)", err, polls+1)
			}
			return fmt.Errorf("%w (still unhealthy after %d health checks within %s)", err, polls+1, timeout)
		}
		wait = min(2*wait, swapPollMax)
	}
}

// healthy runs one health check, turning a panic into an error.
func healthy(ctx context.Context, hc sdk.HealthChecker) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in Healthy: %v", p)
		}
	}()
	return hc.Healthy(ctx)
}

func (mgr *Manager) find(name string) *running {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	for _, r := range mgr.running {
		if r.name == name {
			return r
		}
	}
	return nil
}

// Add starts a module while the others run (a reload that enables it). Its requirements must already
// be running; the config check guarantees that for a valid config.
func (mgr *Manager) Add(ctx context.Context, p Planned) error {
	if mgr.find(p.Info.Name) != nil {
		return fmt.Errorf("add module %s: already running", p.Info.Name)
	}
	for _, req := range p.Info.Requires {
		if mgr.find(req) == nil {
			return fmt.Errorf("add module %s: requires %s, which is not running", p.Info.Name, req)
		}
	}
	if err := mgr.startOne(ctx, p); err != nil {
		return fmt.Errorf("add module %s: %w", p.Info.Name, err)
	}
	return nil
}

// Remove stops one running module (a reload that disables it), as Stop does for all.
func (mgr *Manager) Remove(ctx context.Context, name string) error {
	mgr.mu.Lock()
	var r *running
	for i, x := range mgr.running {
		if x.name == name {
			r = x
			mgr.running = append(mgr.running[:i:i], mgr.running[i+1:]...)
			break
		}
	}
	mgr.mu.Unlock()
	if r == nil {
		return fmt.Errorf("remove module %s: not running", name)
	}
	return mgr.stopOne(ctx, r)
}

// Planned returns the running instance's plan of a module (for a reload's comparison).
func (mgr *Manager) Planned(name string) (Planned, bool) {
	r := mgr.find(name)
	if r == nil {
		return Planned{}, false
	}
	r.view.Lock()
	defer r.view.Unlock()
	return r.cur.planned, true
}
