package modules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
)

// Deps are the host services the manager hands to modules.
type Deps struct {
	NodeName string
	Router   *router.Router
	Store    *store.DB
	Logger   *slog.Logger
	Metrics  prometheus.Registerer // may be nil
	// StartTimeout bounds each module's Start; StopTimeout bounds draining plus Stop per module.
	StartTimeout, StopTimeout time.Duration
	// Mailbox is the default mailbox capacity.
	Mailbox int
}

// Manager starts planned modules in order and stops them in reverse order.
type Manager struct {
	deps    Deps
	metrics *metrics
	mu      sync.Mutex
	running []*running
	started bool // Start finished and Stop has not begun
}

type running struct {
	planned Planned
	host    *hostHandle
	mailbox *router.Mailbox
	cancel  context.CancelFunc // ends the module's lifetime context
	done    chan struct{}      // closed when the delivery loop returned
}

// NewManager returns a manager using deps.
func NewManager(deps Deps) *Manager {
	if deps.StartTimeout == 0 {
		deps.StartTimeout = 30 * time.Second
	}
	if deps.StopTimeout == 0 {
		deps.StopTimeout = 5 * time.Second
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	return &Manager{deps: deps, metrics: newMetrics(deps.Metrics)}
}

// Start starts mods in order. If one fails, the ones already started are stopped and the error names
// the module.
func (mgr *Manager) Start(ctx context.Context, mods []Planned) error {
	for _, p := range mods {
		if err := mgr.startOne(ctx, p); err != nil {
			stopErr := mgr.Stop(context.WithoutCancel(ctx))
			return errors.Join(fmt.Errorf("start module %s: %w", p.Info.Name, err), stopErr)
		}
	}
	mgr.mu.Lock()
	mgr.started = true
	mgr.mu.Unlock()
	return nil
}

func (mgr *Manager) startOne(ctx context.Context, p Planned) error {
	name := p.Info.Name
	capacity := p.Info.Mailbox
	if capacity == 0 {
		capacity = mgr.deps.Mailbox
	}
	mb, err := mgr.deps.Router.Register(name, p.Info.Group, router.Options{Capacity: capacity, Policy: router.Block})
	if err != nil {
		return err
	}
	h := &hostHandle{
		name:   name,
		node:   mgr.deps.NodeName,
		router: mgr.deps.Router,
		store:  mgr.deps.Store.Objects(name),
		logger: mgr.deps.Logger.With("module", name),
		reg:    wrapRegisterer(mgr.deps.Metrics, name),
	}
	// The lifetime context outlives the caller's: modules run until Stop, not until Start returns.
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	startErr := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				startErr <- fmt.Errorf("panic in Start: %v\n%s", r, debug.Stack())
			}
		}()
		startErr <- p.Module.Start(life, h)
	}()
	select {
	case err = <-startErr:
	case <-time.After(mgr.deps.StartTimeout):
		err = fmt.Errorf("Start did not return within %s", mgr.deps.StartTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		mgr.deps.Router.Unregister(name)
		return err
	}
	r := &running{planned: p, host: h, mailbox: mb, cancel: cancel, done: make(chan struct{})}
	go mgr.deliver(life, r)
	mgr.mu.Lock()
	mgr.running = append(mgr.running, r)
	mgr.mu.Unlock()
	mgr.metrics.up.WithLabelValues(name).Set(1)
	h.logger.Info("module started", "group", p.Info.Group, "runtime", string(p.Settings.Runtime))
	return nil
}

// deliver hands queued messages to the module one at a time until the mailbox is closed and drained
// or the lifetime context ends.
func (mgr *Manager) deliver(ctx context.Context, r *running) {
	defer close(r.done)
	name := r.planned.Info.Name
	ok, failed := mgr.metrics.handled.WithLabelValues(name, "ok"), mgr.metrics.handled.WithLabelValues(name, "error")
	seconds := mgr.metrics.seconds.WithLabelValues(name)
	for {
		m, err := r.mailbox.Receive(ctx)
		if err != nil {
			return
		}
		start := time.Now()
		if err := mgr.handle(ctx, r, m); err != nil {
			failed.Inc()
			r.host.logger.Warn("handle message failed", "msg", m.String(), "err", err)
			if m.Header.Sync && !m.IsReply() {
				if rerr := r.host.Reply(ctx, m.ErrorReply(name, err)); rerr != nil && !errors.Is(rerr, router.ErrNoWaiter) {
					r.host.logger.Warn("reply with error failed", "msg", m.Header.ID, "err", rerr)
				}
			}
		} else {
			ok.Inc()
		}
		seconds.Observe(time.Since(start).Seconds())
	}
}

// handle turns a panic in a module into an error for that message, so one bad message cannot take
// the whole host down.
func (mgr *Manager) handle(ctx context.Context, r *running, m message.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return r.planned.Module.Handle(ctx, m)
}

// Stop stops the running modules in reverse start order. Each module first stops receiving (senders
// get an error instead of queueing), its queued messages are handled (within StopTimeout), its
// context is cancelled, and then its Stop runs.
func (mgr *Manager) Stop(ctx context.Context) error {
	mgr.mu.Lock()
	rs := slices.Clone(mgr.running)
	mgr.running, mgr.started = nil, false
	mgr.mu.Unlock()
	var errs []error
	for _, r := range slices.Backward(rs) {
		if err := mgr.stopOne(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (mgr *Manager) stopOne(ctx context.Context, r *running) error {
	name := r.planned.Info.Name
	defer r.cancel()
	defer mgr.metrics.up.WithLabelValues(name).Set(0)
	budget, cancel := context.WithTimeout(ctx, mgr.deps.StopTimeout)
	defer cancel()
	mgr.deps.Router.Unregister(name)
	select {
	case <-r.done:
	case <-budget.Done():
		r.cancel() // abandon the rest of the queue and the message in hand
		<-r.done
		r.host.logger.Warn("module did not drain its mailbox in time; the rest was dropped on shutdown", "timeout", mgr.deps.StopTimeout)
	}
	// The module's goroutines end with its context; Stop then waits for them and releases resources.
	r.cancel()
	if err := r.planned.Module.Stop(budget); err != nil {
		return fmt.Errorf("stop module %s: %w", name, err)
	}
	r.host.logger.Info("module stopped")
	return nil
}

// Ready reports nil when every module has started and is healthy.
func (mgr *Manager) Ready(ctx context.Context) error {
	mgr.mu.Lock()
	rs, started := slices.Clone(mgr.running), mgr.started
	mgr.mu.Unlock()
	if !started {
		return errors.New("modules are not started")
	}
	var errs []error
	for _, r := range rs {
		if hc, ok := r.planned.Module.(sdk.HealthChecker); ok {
			if err := hc.Healthy(ctx); err != nil {
				errs = append(errs, fmt.Errorf("module %s: %w", r.planned.Info.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Running returns the names of the running modules in start order.
func (mgr *Manager) Running() []string {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	names := make([]string, len(mgr.running))
	for i, r := range mgr.running {
		names[i] = r.planned.Info.Name
	}
	return names
}
