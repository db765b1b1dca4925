package modules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
)

// hostHandle is what a builtin module sees of the host: sdk.Host, bound to the module's name.
type hostHandle struct {
	name, node string
	router     *router.Router
	store      *store.Objects
	outbox     *store.Outbox
	logger     *slog.Logger
	reg        prometheus.Registerer
	mgr        *Manager
}

var (
	_ sdk.Host           = (*hostHandle)(nil)
	_ sdk.OutboxProvider = (*hostHandle)(nil)
	_ sdk.HostVersioner  = (*hostHandle)(nil)
	_ sdk.HostClasser    = (*hostHandle)(nil)
	_ sdk.ModuleLister   = (*hostHandle)(nil)
	_ sdk.StartWaiter    = (*hostHandle)(nil)
	_ sdk.ModuleSwapper  = (*hostHandle)(nil)
)

// HostClass is the device class the binary was built as (see Class).
func (h *hostHandle) HostClass() string { return BuildClass() }

// Modules lists the host's running modules (Manager.Status).
func (h *hostHandle) Modules(ctx context.Context) []control.Status { return h.mgr.Status(ctx) }

// SwapModule swaps module name through the host's swapper (the daemon's, the control socket's swap).
func (h *hostHandle) SwapModule(ctx context.Context, name string, rt control.Runtime, path, sha256 string) (control.SwapReport, error) {
	h.mgr.mu.Lock()
	swap := h.mgr.swapper
	h.mgr.mu.Unlock()
	if swap == nil {
		return control.SwapReport{}, fmt.Errorf("swap of module %s: %w (it swaps once every module has started)", name, sdk.ErrHostStarting)
	}
	// The swapper may wait for another change (a config reload, an operator's swap) that waits for
	// this module to stop: give up when ctx ends, as a control-socket client would (the swap then
	// runs with the ended ctx and fails).
	type result struct {
		rep control.SwapReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := swap(ctx, name, control.SwapRequest{Runtime: rt, Path: path, SHA256: sha256})
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		return r.rep, r.err
	case <-ctx.Done():
		return control.SwapReport{}, fmt.Errorf("swap of module %s: %w", name, context.Cause(ctx))
	}
}

// HostVersion is the host binary's version (Version).
func (h *hostHandle) HostVersion() string { return Version }

// Outbox is the node's upstream outbox, shared by the host (the hub module drains it).
func (h *hostHandle) Outbox() sdk.Outbox { return h.outbox }

func (h *hostHandle) Name() string     { return h.name }
func (h *hostHandle) NodeName() string { return h.node }

func (h *hostHandle) Send(ctx context.Context, to string, m sdk.Message) error {
	m.Route.Source = h.name
	err := h.router.Send(ctx, to, m)
	if errors.Is(err, sdk.ErrUnknownModule) {
		return h.mgr.unknown(to, err)
	}
	return err
}

func (h *hostHandle) SendToGroup(ctx context.Context, group string, m sdk.Message) error {
	m.Route.Source = h.name
	return h.router.SendToGroup(ctx, group, m)
}

func (h *hostHandle) SendSync(ctx context.Context, to string, m sdk.Message, timeout time.Duration) (sdk.Message, error) {
	m.Route.Source = h.name
	resp, err := h.router.SendSync(ctx, to, m, timeout)
	if errors.Is(err, sdk.ErrUnknownModule) {
		return resp, h.mgr.unknown(to, err)
	}
	return resp, err
}

// Started is closed once the host has started every module (or failed to): sdk.StartWaiter.
func (h *hostHandle) Started() <-chan struct{} { return h.mgr.allStarted }

// Planned says whether name is one of the host's modules, started yet or not: sdk.StartWaiter.
func (h *hostHandle) Planned(name string) bool {
	h.mgr.mu.Lock()
	defer h.mgr.mu.Unlock()
	return h.mgr.planned[name]
}

func (h *hostHandle) Reply(ctx context.Context, m sdk.Message) error {
	m.Route.Source = h.name
	return h.router.Reply(ctx, m)
}

func (h *hostHandle) Store() sdk.Store               { return h.store }
func (h *hostHandle) Logger() *slog.Logger           { return h.logger }
func (h *hostHandle) Metrics() prometheus.Registerer { return h.reg }

// metrics are the manager's own, per module.
type metrics struct {
	up      *prometheus.GaugeVec
	handled *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	swaps   *prometheus.CounterVec
	swapGap *prometheus.HistogramVec
	prepare *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kedge_module_up",
			Help: "1 while the module runs."}, []string{"module"}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_module_handled_total",
			Help: "Messages handled by the module, by result (ok, error)."}, []string{"module", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kedge_module_handle_seconds",
			Help:    "Time the module spent handling one message.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}, []string{"module"}),
	}
	m.swaps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_module_swaps_total",
		Help: "Hot swaps of the module, by result (ok, rolled_back)."}, []string{"module", "result"})
	m.swapGap = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kedge_module_swap_gap_seconds",
		Help:    "Time from switching instances in a swap to the new instance taking its first message.",
		Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}, []string{"module"})
	m.prepare = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kedge_module_prepare_seconds",
		Help:    "How long a module's Prepare took before its Start (a WASM module's compile, or its load from the compilation cache).",
		Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10)}, []string{"module"})
	if reg != nil {
		reg.MustRegister(m.up, m.handled, m.seconds, m.swaps, m.swapGap, m.prepare)
	}
	return m
}

// counterValue reads a counter's current value (for status pages).
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
