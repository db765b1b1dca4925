package modules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
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
	// PrepareTimeout bounds a Preparer's Prepare (a WASM module's compile), which runs before Start
	// and outside StartTimeout (default DefaultPrepareTimeout).
	PrepareTimeout time.Duration
	// Mailbox is the default mailbox capacity.
	Mailbox int
	// SwapHealthTimeout bounds how long a swap polls its new instance until healthy before rolling
	// back (default 10s); a swap may set its own with WithHealthTimeout.
	SwapHealthTimeout time.Duration
}

// Manager starts planned modules in order, swaps them while they run, and stops them in reverse order.
type Manager struct {
	deps    Deps
	metrics *metrics
	mu      sync.Mutex
	running []*running
	started bool // Start finished and Stop has not begun
	// planned are the modules Start was given; allStarted is closed when Start returns (started or
	// failed): sdk.StartWaiter. stopping is set when Stop begins (a send to a planned module then
	// wraps sdk.ErrHostStopping).
	planned    map[string]bool
	allStarted chan struct{}
	stopping   bool
	// swapper serves sdk.ModuleSwapper for the modules (the daemon's swap, serialised with the
	// control socket's); nil until the host sets it once every module started.
	swapper Swapper
}

// Swapper swaps module name to another runtime or file, keeping its settings (the daemon's swap).
type Swapper func(ctx context.Context, name string, req control.SwapRequest) (SwapReport, error)

// SetSwapper lets modules swap through their host handle (sdk.ModuleSwapper) with s.
func (mgr *Manager) SetSwapper(s Swapper) {
	mgr.mu.Lock()
	mgr.swapper = s
	mgr.mu.Unlock()
}

// running is one module slot: its mailbox and delivery loop, which outlive any one instance.
type running struct {
	name    string
	mailbox *router.Mailbox
	stop    context.CancelFunc // ends the delivery loop even if the mailbox is not drained
	done    chan struct{}      // closed when the delivery loop returned

	// mu is held while a message is handled; a swap takes it to change instances between messages.
	mu sync.Mutex
	// view guards cur and gaps for readers that must not wait for the message in hand (Status,
	// Gather, Planned): a module whose Handle asks for the modules' status (pluginmanager, through
	// the control socket) would otherwise wait for itself. Writers hold mu, then view.
	view sync.Mutex
	cur  *instance
	// swapped is set by a swap; the next Handle then records the gap: how long a ready message waited
	// with no instance handling it (from its receipt or the previous Handle's end, whichever is later).
	swapped bool
	pending atomic.Bool // a swap waits for mu: receipt times are taken to measure the gap
	lastEnd time.Time
	gaps    []time.Duration // the recorded gaps, newest last (bounded), for reports
}

// instance is one started module value with its own host handle and lifetime.
type instance struct {
	planned Planned
	host    *hostHandle
	reg     *prometheus.Registry // the instance's own metrics; replaced with it on a swap
	life    context.Context
	cancel  context.CancelFunc
	// prepared and started are how long its Prepare (0 for a module without) and Start took.
	prepared, started time.Duration
}

// DefaultPrepareTimeout is how long a module's Prepare may take by default (see sdk/control).
const DefaultPrepareTimeout = control.DefaultPrepareTimeout

// DefaultSwapHealthTimeout is how long a swap waits for its new instance to become healthy, unless
// Deps or the swap say otherwise.
const DefaultSwapHealthTimeout = 10 * time.Second

// NewManager returns a manager using deps.
func NewManager(deps Deps) *Manager {
	if deps.StartTimeout == 0 {
		deps.StartTimeout = 30 * time.Second
	}
	if deps.PrepareTimeout <= 0 {
		deps.PrepareTimeout = DefaultPrepareTimeout
	}
	if deps.StopTimeout == 0 {
		deps.StopTimeout = 5 * time.Second
	}
	if deps.SwapHealthTimeout <= 0 {
		deps.SwapHealthTimeout = DefaultSwapHealthTimeout
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	return &Manager{deps: deps, metrics: newMetrics(deps.Metrics), allStarted: make(chan struct{})}
}

// Start starts mods in order. If one fails, the ones already started are stopped and the error names
// the module.
func (mgr *Manager) Start(ctx context.Context, mods []Planned) error {
	mgr.mu.Lock()
	mgr.planned = make(map[string]bool, len(mods))
	for _, p := range mods {
		mgr.planned[p.Info.Name] = true
	}
	mgr.mu.Unlock()
	defer mgr.closeAllStarted()
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

func (mgr *Manager) closeAllStarted() {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	select {
	case <-mgr.allStarted:
	default:
		close(mgr.allStarted)
	}
}

// unknown adds sdk.ErrHostStopping to err (a send to module to that the router did not know) when to
// is one of the planned modules and the host is stopping.
func (mgr *Manager) unknown(to string, err error) error {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	if mgr.stopping && mgr.planned[to] {
		return fmt.Errorf("%w: %w", sdk.ErrHostStopping, err)
	}
	return err
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
	inst, err := mgr.startInstance(ctx, p)
	if err != nil {
		mgr.deps.Router.Unregister(name)
		return err
	}
	loop, stop := context.WithCancel(context.WithoutCancel(ctx))
	r := &running{name: name, mailbox: mb, stop: stop, done: make(chan struct{}), cur: inst}
	go mgr.deliver(loop, r)
	mgr.mu.Lock()
	mgr.running = append(mgr.running, r)
	mgr.mu.Unlock()
	mgr.metrics.up.WithLabelValues(name).Set(1)
	inst.host.logger.Info("module started", "group", p.Info.Group, "runtime", string(p.Settings.Runtime))
	return nil
}

// startInstance prepares (a Preparer, bounded by PrepareTimeout) and starts (bounded by StartTimeout)
// one module value with a fresh host handle.
func (mgr *Manager) startInstance(ctx context.Context, p Planned) (*instance, error) {
	name := p.Info.Name
	var prepared time.Duration
	if pr, ok := p.Module.(Preparer); ok {
		began := time.Now()
		if err := bounded(ctx, mgr.deps.PrepareTimeout, "Prepare", pr.Prepare); err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		prepared = time.Since(began)
		mgr.metrics.prepare.WithLabelValues(name).Observe(prepared.Seconds())
	}
	reg := prometheus.NewRegistry()
	h := &hostHandle{
		name:   name,
		node:   mgr.deps.NodeName,
		router: mgr.deps.Router,
		store:  mgr.deps.Store.Objects(name),
		outbox: mgr.deps.Store.Outbox(),
		logger: mgr.deps.Logger.With("module", name),
		reg:    prometheus.WrapRegistererWith(prometheus.Labels{"module": name}, reg),
		mgr:    mgr,
	}
	// The lifetime context outlives the caller's: modules run until stopped, not until Start returns.
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	began := time.Now()
	if err := bounded(ctx, mgr.deps.StartTimeout, "Start", func(context.Context) error { return p.Module.Start(life, h) }); err != nil {
		cancel()
		return nil, err
	}
	return &instance{planned: p, host: h, reg: reg, life: life, cancel: cancel, prepared: prepared, started: time.Since(began)}, nil
}

// bounded runs fn (Prepare or Start, named what) in its own goroutine, turning a panic into an error,
// and gives up after timeout or when ctx ends. fn's context ends when bounded gives up.
func bounded(ctx context.Context, timeout time.Duration, what string, fn func(context.Context) error) error {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic in %s: %v\n%s", what, r, debug.Stack())
			}
		}()
		done <- fn(fctx)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%s did not return within %s", what, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// deliver hands queued messages to the current instance one at a time until the mailbox is closed
// and drained or the loop is stopped.
func (mgr *Manager) deliver(loop context.Context, r *running) {
	defer close(r.done)
	ok, failed := mgr.metrics.handled.WithLabelValues(r.name, "ok"), mgr.metrics.handled.WithLabelValues(r.name, "error")
	seconds := mgr.metrics.seconds.WithLabelValues(r.name)
	for {
		m, err := r.mailbox.Receive(loop)
		if err != nil {
			return
		}
		var got time.Time // only needed to measure a swap's gap; the clock costs on the hot path
		if r.pending.Load() {
			got = time.Now()
		}
		r.mu.Lock()
		inst := r.cur
		start := time.Now()
		if r.swapped {
			r.swapped = false
			r.pending.Store(false)
			gap := start.Sub(later(got, r.lastEnd))
			mgr.metrics.swapGap.WithLabelValues(r.name).Observe(gap.Seconds())
			r.view.Lock()
			r.gaps = append(r.gaps[max(0, len(r.gaps)-15):], gap)
			r.view.Unlock()
		}
		err = handle(inst.life, inst, m)
		end := time.Now()
		r.lastEnd = end
		r.mu.Unlock()
		if err != nil {
			failed.Inc()
			inst.host.logger.Warn("handle message failed", "msg", m.String(), "err", err)
			if m.Header.Sync && !m.IsReply() {
				if rerr := inst.host.Reply(inst.life, m.ErrorReply(r.name, err)); rerr != nil && !errors.Is(rerr, router.ErrNoWaiter) {
					inst.host.logger.Warn("reply with error failed", "msg", m.Header.ID, "err", rerr)
				}
			}
		} else {
			ok.Inc()
		}
		seconds.Observe(end.Sub(start).Seconds())
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// handle turns a panic in a module into an error for that message, so one bad message cannot take
// the whole host down.
func handle(ctx context.Context, inst *instance, m message.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return inst.planned.Module.Handle(ctx, m)
}

// Stop stops the running modules in reverse start order. Each module first stops receiving (senders
// get an error instead of queueing), its queued messages are handled (within StopTimeout), its
// context is cancelled, and then its Stop runs.
func (mgr *Manager) Stop(ctx context.Context) error {
	mgr.mu.Lock()
	rs := slices.Clone(mgr.running)
	mgr.running, mgr.started, mgr.stopping = nil, false, true
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
	defer mgr.metrics.up.WithLabelValues(r.name).Set(0)
	budget, cancel := context.WithTimeout(ctx, mgr.deps.StopTimeout)
	defer cancel()
	mgr.deps.Router.Unregister(r.name)
	r.view.Lock()
	inst := r.cur
	r.view.Unlock()
	select {
	case <-r.done:
	case <-budget.Done():
		r.stop()      // abandon the rest of the queue
		inst.cancel() // and the message in hand
		<-r.done
		inst.host.logger.Warn("module did not drain its mailbox in time; the rest was dropped on shutdown", "timeout", mgr.deps.StopTimeout)
	}
	r.stop()
	return stopInstance(budget, inst)
}

// stopInstance ends an instance's context (its goroutines stop) and then calls its Stop.
func stopInstance(ctx context.Context, inst *instance) error {
	inst.cancel()
	if err := inst.planned.Module.Stop(ctx); err != nil {
		return fmt.Errorf("stop module %s: %w", inst.planned.Info.Name, err)
	}
	inst.host.logger.Info("module stopped")
	return nil
}

// Ready reports nil when every module has started and is healthy.
func (mgr *Manager) Ready(ctx context.Context) error {
	var errs []error
	for _, st := range mgr.Status(ctx) {
		if st.Health != "" {
			errs = append(errs, fmt.Errorf("module %s: %s", st.Name, st.Health))
		}
	}
	mgr.mu.Lock()
	started := mgr.started
	mgr.mu.Unlock()
	if !started {
		errs = append(errs, errors.New("modules are not started"))
	}
	return errors.Join(errs...)
}

// Links reports the modules that hold a link to a remote peer (sdk.LinkChecker), by name: "up" or
// "down: why"; the error names every link that is down (nil when all are up or there are none).
func (mgr *Manager) Links(ctx context.Context) (map[string]string, error) {
	links := map[string]string{}
	var errs []error
	for _, st := range mgr.Status(ctx) {
		if st.Link == "" {
			continue
		}
		links[st.Name] = st.Link
		if st.Link != "up" {
			errs = append(errs, fmt.Errorf("module %s: link %s", st.Name, st.Link))
		}
	}
	return links, errors.Join(errs...)
}

// Running returns the names of the running modules in start order.
func (mgr *Manager) Running() []string {
	mgr.mu.Lock()
	defer mgr.mu.Unlock()
	names := make([]string, len(mgr.running))
	for i, r := range mgr.running {
		names[i] = r.name
	}
	return names
}

// Status describes a running module for `module ls` and /readyz (see sdk/control).
type Status = control.Status

// Status reports every running module in start order.
func (mgr *Manager) Status(ctx context.Context) []Status {
	mgr.mu.Lock()
	rs := slices.Clone(mgr.running)
	mgr.mu.Unlock()
	out := make([]Status, 0, len(rs))
	for _, r := range rs {
		r.view.Lock()
		inst, gaps := r.cur, slices.Clone(r.gaps)
		r.view.Unlock()
		p := inst.planned
		st := Status{
			Name: r.name, Group: p.Info.Group, Runtime: p.Settings.Runtime, Path: p.Settings.Path,
			Queued: r.mailbox.Len(), Requires: p.Info.Requires,
			Handled:  counterValue(mgr.metrics.handled.WithLabelValues(r.name, "ok")),
			Failed:   counterValue(mgr.metrics.handled.WithLabelValues(r.name, "error")),
			Swaps:    counterValue(mgr.metrics.swaps.WithLabelValues(r.name, "ok")),
			SwapGaps: gaps,
		}
		st.Release, st.SHA256, st.Version = releaseOf(p)
		if p.Settings.Runtime != Builtin {
			st.Digest = p.Settings.SHA256
		}
		if hc, ok := p.Module.(sdk.HealthChecker); ok {
			if err := hc.Healthy(ctx); err != nil {
				st.Health = err.Error()
			}
		}
		if lc, ok := p.Module.(sdk.LinkChecker); ok {
			st.Link = "up"
			if err := lc.LinkUp(ctx); err != nil {
				st.Link = "down: " + err.Error()
			}
		}
		out = append(out, st)
	}
	return out
}

// releaseOf says which release runs p: see Status.Release, SHA256 and Version.
func releaseOf(p Planned) (release, sum, combined string) {
	if p.Settings.Runtime == Builtin {
		return Version, "", Version
	}
	release = "-"
	if v, ok := p.Module.(interface{ Version() string }); ok && v.Version() != "" {
		release = v.Version() // a process plugin's stamped version, a WASM manifest's version
	}
	if len(p.Settings.SHA256) >= 12 {
		sum = "sha256:" + p.Settings.SHA256[:12]
	}
	switch {
	case sum == "":
		combined = release
	case release == "-":
		combined = sum
	default:
		combined = release + " (" + sum + ")"
	}
	return release, sum, combined
}

// Version is the host binary's version, reported for builtin modules (the daemon sets it).
var Version = "dev"

// Gather collects the metrics of every running module's current instance (a swapped-out instance's
// metrics leave with it; counters of a new instance start from zero, which Prometheus reads as a reset).
func (mgr *Manager) Gather() ([]*dto.MetricFamily, error) {
	mgr.mu.Lock()
	rs := slices.Clone(mgr.running)
	mgr.mu.Unlock()
	gs := make(prometheus.Gatherers, 0, len(rs))
	for _, r := range rs {
		r.view.Lock()
		gs = append(gs, r.cur.reg)
		r.view.Unlock()
	}
	return gs.Gather()
}

var _ prometheus.Gatherer = (*Manager)(nil)
