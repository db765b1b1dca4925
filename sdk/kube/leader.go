package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/kedge-io/kedge/sdk"
)

// LeaderElection is the config block of a cloud module that must act once however many cloudcore
// replicas run: the replicas elect a leader through a coordination.k8s.io Lease (client-go's
// leaderelection) and only the leader acts.
type LeaderElection struct {
	Enable        bool          `yaml:"enable" doc:"Elect a leader among the cloudcore replicas through a Lease; only the leader acts. Off: this replica always acts (run exactly one)."`
	Namespace     string        `yaml:"namespace" doc:"Namespace of the Lease; empty: $POD_NAMESPACE, else default."`
	LeaseName     string        `yaml:"leaseName" doc:"Name of the Lease; empty: kedge-<module>."`
	Identity      string        `yaml:"identity" doc:"This replica's name in the Lease; empty: the cloudcore instance name (instance.name). Must differ between replicas."`
	LeaseDuration time.Duration `yaml:"leaseDuration" doc:"How long the others wait, after they last saw the Lease renewed, before taking it over."`
	RenewDeadline time.Duration `yaml:"renewDeadline" doc:"The leader stops acting when it has not renewed the Lease for this long (less than leaseDuration)."`
	RetryPeriod   time.Duration `yaml:"retryPeriod" doc:"How often the Lease is renewed, and a follower tries to take it."`
}

// DefaultLeaderElection is the block's defaults (those of kube-controller-manager): enabled,
// 15 s lease, 10 s renew deadline, 2 s retry period.
func DefaultLeaderElection() LeaderElection {
	return LeaderElection{Enable: true, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
}

// Validate names the first setting that is wrong; prefix is the block's config key
// (e.g. "modules.rolloutcontroller.leaderElection").
func (c LeaderElection) Validate(prefix string) error {
	if !c.Enable {
		return nil
	}
	switch {
	case c.LeaseDuration <= 0 || c.RenewDeadline <= 0 || c.RetryPeriod <= 0:
		return sdk.BadSetting(prefix, "leaseDuration, renewDeadline and retryPeriod must be positive")
	case c.LeaseDuration < time.Second:
		return sdk.BadSetting(prefix+".leaseDuration", "at least 1s (the Lease holds whole seconds), got %s", c.LeaseDuration)
	case c.RenewDeadline >= c.LeaseDuration:
		return sdk.BadSetting(prefix+".renewDeadline", "must be less than leaseDuration (%s), got %s: the leader must stop acting before another replica may take over", c.LeaseDuration, c.RenewDeadline)
	case c.RetryPeriod >= c.RenewDeadline:
		return sdk.BadSetting(prefix+".retryPeriod", "must be less than renewDeadline (%s), got %s", c.RenewDeadline, c.RetryPeriod)
	}
	return nil
}

// Elector tells a module whether this replica leads. Leading is checked before every action that
// must happen once; it turns false as soon as the election is lost, and also when the Lease has not
// been renewed for renewDeadline (measured on this process's monotonic clock from the moment the
// last successful renewal was sent), even if client-go has not yet given up — so a replica cut off
// from the API server, or one whose wall clock is wrong, stops acting before any other replica can
// take the Lease over (the others wait leaseDuration > renewDeadline from when they last saw it
// change, on their own clocks).
type Elector struct {
	cfg      LeaderElection
	lock     *trackedLock
	elected  atomic.Bool
	always   bool // leader election off: this replica always leads
	leader   atomic.Value
	log      *slog.Logger
	gauge    prometheus.Gauge
	changes  *prometheus.CounterVec
	done     chan struct{}
	onStart  func(context.Context)
	onStop   func()
	describe string
	cancel   context.CancelFunc // ends the campaign (Stop)
}

// ElectorOptions are what StartElector needs besides the config block.
type ElectorOptions struct {
	Client   kubernetes.Interface
	Module   string // module name: the default Lease name is kedge-<module>
	Identity string // default identity (the instance name)
	Logger   *slog.Logger
	Metrics  prometheus.Registerer
	// OnStartedLeading runs (in its own goroutine) each time this replica becomes the leader; ctx
	// ends when it stops leading.
	OnStartedLeading func(ctx context.Context)
	// OnStoppedLeading runs each time this replica stops leading.
	OnStoppedLeading func()
}

// StartElector starts campaigning for the Lease until ctx ends or Stop (then the Lease is released
// if held, so another replica takes over at once). With the block disabled it returns an Elector
// that always leads (OnStartedLeading runs once).
func StartElector(ctx context.Context, c LeaderElection, o ElectorOptions) (_ *Elector, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	e := &Elector{cfg: c, log: o.Logger, done: make(chan struct{}), onStart: o.OnStartedLeading, onStop: o.OnStoppedLeading, cancel: cancel}
	e.leader.Store("")
	e.gauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_leader",
		Help: "1 while this replica leads (holds the module's leader-election Lease and renewed it within renewDeadline), else 0."})
	e.changes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_leader_transitions_total",
		Help: "Times this replica started or stopped leading, by event (started, stopped)."}, []string{"event"})
	if o.Metrics != nil {
		for _, col := range []prometheus.Collector{e.gauge, e.changes} {
			if err := o.Metrics.Register(col); err != nil {
				return nil, err
			}
		}
	}
	if !c.Enable {
		e.always = true
		e.gauge.Set(1)
		e.leader.Store(o.Identity)
		close(e.done)
		if e.onStart != nil {
			go e.onStart(ctx)
		}
		return e, nil
	}
	if err := c.Validate("leaderElection"); err != nil {
		return nil, err
	}
	if c.Namespace == "" {
		c.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.LeaseName == "" {
		c.LeaseName = "kedge-" + o.Module
	}
	if c.Identity == "" {
		c.Identity = o.Identity
	}
	if c.Identity == "" {
		return nil, errors.New("leaderElection.identity: empty, and the instance has no name (instance.name)")
	}
	if o.Client == nil {
		return nil, errors.New("leader election needs an API client")
	}
	e.cfg = c
	inner, err := resourcelock.New(resourcelock.LeasesResourceLock, c.Namespace, c.LeaseName,
		o.Client.CoreV1(), o.Client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: c.Identity})
	if err != nil {
		return nil, fmt.Errorf("leader election lock %s/%s: %w", c.Namespace, c.LeaseName, err)
	}
	e.lock = &trackedLock{Interface: inner, identity: c.Identity}
	e.describe = c.Namespace + "/" + c.LeaseName
	// Validate the timings with client-go's own checks before anything runs.
	if _, err := e.newElector(); err != nil {
		return nil, fmt.Errorf("leaderElection: %w", err)
	}
	go e.campaign(ctx)
	return e, nil
}

func (e *Elector) newElector() (*leaderelection.LeaderElector, error) {
	return leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            e.lock,
		LeaseDuration:   e.cfg.LeaseDuration,
		RenewDeadline:   e.cfg.RenewDeadline,
		RetryPeriod:     e.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.describe,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: e.started,
			OnStoppedLeading: e.stopped,
			OnNewLeader: func(id string) {
				e.leader.Store(id)
				e.log.Info("leader observed", "lease", e.describe, "leader", id, "self", id == e.cfg.Identity)
			},
		},
	})
}

// campaign runs elections until ctx ends: a replica that lost the Lease becomes a candidate again.
func (e *Elector) campaign(ctx context.Context) {
	defer close(e.done)
	for ctx.Err() == nil {
		le, err := e.newElector()
		if err != nil { // checked in StartElector; cannot change since
			e.log.Error("leader election not started", "lease", e.describe, "err", err)
			return
		}
		le.Run(ctx)
		if ctx.Err() == nil {
			select { // lost the Lease: try again after a retry period
			case <-ctx.Done():
			case <-time.After(e.cfg.RetryPeriod):
			}
		}
	}
}

func (e *Elector) started(ctx context.Context) {
	e.elected.Store(true)
	e.gauge.Set(1)
	e.changes.WithLabelValues("started").Inc()
	e.log.Info("leading: this replica acts", "lease", e.describe, "identity", e.cfg.Identity)
	if e.onStart != nil {
		e.onStart(ctx)
	}
}

func (e *Elector) stopped() {
	if !e.elected.Swap(false) {
		return // client-go also calls this when it never led
	}
	e.gauge.Set(0)
	e.changes.WithLabelValues("stopped").Inc()
	e.log.Warn("stopped leading: this replica no longer acts", "lease", e.describe, "identity", e.cfg.Identity)
	if e.onStop != nil {
		e.onStop()
	}
}

// Leading reports whether this replica may act now: it was elected, and its last successful renewal
// of the Lease was sent less than renewDeadline ago (so no other replica can hold the Lease yet).
func (e *Elector) Leading() bool {
	if e == nil || e.always {
		return true
	}
	if !e.elected.Load() {
		return false
	}
	if !e.lock.freshWithin(e.cfg.RenewDeadline) {
		e.gauge.Set(0)
		return false
	}
	e.gauge.Set(1)
	return true
}

// Leader is the identity of the leader this replica last observed ("" before any).
func (e *Elector) Leader() string { return e.leader.Load().(string) }

// Identity is this replica's name in the Lease.
func (e *Elector) Identity() string { return e.cfg.Identity }

// Lease is namespace/name of the Lease ("" with leader election off).
func (e *Elector) Lease() string { return e.describe }

// Done is closed when the campaign ended (ctx ended and the Lease was released).
func (e *Elector) Done() <-chan struct{} { return e.done }

// Stop ends the campaign and waits (until ctx ends) for the Lease to be released, so another
// replica takes over at once. A nil Elector (never started) is stopped already.
func (e *Elector) Stop(ctx context.Context) {
	if e == nil {
		return
	}
	e.cancel()
	select {
	case <-e.done:
	case <-ctx.Done():
	}
}

// trackedLock records when a write of the Lease naming this replica as holder last succeeded (the
// time the request was sent, on the monotonic clock).
type trackedLock struct {
	resourcelock.Interface
	identity string
	last     atomic.Int64 // nanoseconds since start, 0: never
}

var clockStart = time.Now()

func (l *trackedLock) write(ler resourcelock.LeaderElectionRecord, do func() error) error {
	sent := time.Since(clockStart)
	err := do()
	if err == nil && ler.HolderIdentity == l.identity {
		l.last.Store(int64(sent) + 1)
	} else if err == nil {
		l.last.Store(0) // released
	}
	return err
}

func (l *trackedLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	return l.write(ler, func() error { return l.Interface.Create(ctx, ler) })
}

func (l *trackedLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	return l.write(ler, func() error { return l.Interface.Update(ctx, ler) })
}

func (l *trackedLock) freshWithin(d time.Duration) bool {
	last := l.last.Load()
	return last != 0 && time.Since(clockStart)-time.Duration(last-1) < d
}
