package kube_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/host/kube"
	"github.com/kedge-io/kedge/test/k8senv"
)

var (
	env    *k8senv.Env
	leases atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(k8senv.RunTests(m, "host/kube", func(e *k8senv.Env) error { env = e; return nil }))
}

// fast are timings short enough for tests, in the same proportions as the defaults.
func fast(lease string) kube.LeaderElection {
	c := kube.DefaultLeaderElection()
	c.LeaseName, c.Namespace = fmt.Sprintf("%s-%d", lease, leases.Add(1)), "default" // unique under -count
	c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 3*time.Second, 2*time.Second, 250*time.Millisecond
	return c
}

type replica struct {
	e      *kube.Elector
	cancel context.CancelFunc
	reg    *prometheus.Registry
	starts atomic.Int32
	stops  atomic.Int32
}

func startReplica(t *testing.T, client kubernetes.Interface, c kube.LeaderElection, id string) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{cancel: cancel, reg: prometheus.NewRegistry()}
	var err error
	r.e, err = kube.StartElector(ctx, c, kube.ElectorOptions{
		Client: client, Module: "test", Identity: id, Metrics: r.reg,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnStartedLeading: func(context.Context) { r.starts.Add(1) },
		OnStoppedLeading: func() { r.stops.Add(1) },
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-r.e.Done() })
	return r
}

func (r *replica) gauge(t *testing.T) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "kedge_leader" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("kedge_leader not registered")
	return 0
}

// watchOverlap samples every replica every 5 ms until stop and fails the test if two lead at once.
func watchOverlap(t *testing.T, rs ...*replica) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			n := 0
			for _, r := range rs {
				if r.e.Leading() {
					n++
				}
			}
			if n > 1 {
				t.Errorf("%d replicas lead at once", n)
				return
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leaderOf(rs ...*replica) (*replica, *replica) {
	if rs[0].e.Leading() {
		return rs[0], rs[1]
	}
	if rs[1].e.Leading() {
		return rs[1], rs[0]
	}
	return nil, nil
}

func needEnv(t *testing.T) {
	if env == nil {
		t.Skip("needs the control plane (not with -short)")
	}
}

func TestOneOfTwoReplicasLeadsAndTheOtherTakesOverWhenTheLeaderStops(t *testing.T) {
	needEnv(t)
	c := fast("ha-stop")
	a := startReplica(t, env.Client, c, "replica-a")
	b := startReplica(t, env.Client, c, "replica-b")
	stop := watchOverlap(t, a, b)
	defer stop()
	waitFor(t, "one replica leads", 30*time.Second, func() bool { l, _ := leaderOf(a, b); return l != nil })
	leader, other := leaderOf(a, b)
	// The follower stays a follower while the leader renews (several lease durations).
	time.Sleep(2 * c.LeaseDuration)
	if !leader.e.Leading() || other.e.Leading() || other.starts.Load() != 0 {
		t.Fatalf("leadership moved while the leader renewed: leader %v, other %v (started %d times)", leader.e.Leading(), other.e.Leading(), other.starts.Load())
	}
	if leader.gauge(t) != 1 || other.gauge(t) != 0 {
		t.Fatalf("kedge_leader: leader %v, other %v; want 1 and 0", leader.gauge(t), other.gauge(t))
	}
	if other.e.Leader() != leader.e.Identity() {
		t.Fatalf("the follower sees %q as leader, want %q", other.e.Leader(), leader.e.Identity())
	}
	// A graceful stop releases the Lease: the other takes over well before the lease would expire.
	leader.cancel()
	<-leader.e.Done()
	if leader.e.Leading() || leader.stops.Load() != 1 {
		t.Fatalf("a stopped replica still leads (%v) or did not run its stop callback once (%d)", leader.e.Leading(), leader.stops.Load())
	}
	waitFor(t, "the other replica leads after the release", 30*time.Second, other.e.Leading)
	if other.gauge(t) != 1 || other.starts.Load() != 1 {
		t.Fatalf("new leader: kedge_leader %v, started %d times", other.gauge(t), other.starts.Load())
	}
}

// cutProxy forwards TCP to the API server until cut: then every connection is closed and new ones
// are refused, as for a replica cut off from the API server (or a process frozen and killed).
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				u.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(p.Cut)
	return p
}

func (p *cutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

func TestALeaderCutOffFromTheAPIServerStopsActingBeforeAnotherTakesOver(t *testing.T) {
	needEnv(t)
	u, err := url.Parse(env.Config.Host)
	if err != nil || u.Host == "" {
		t.Fatalf("API server address %q: %v", env.Config.Host, err)
	}
	proxy := newCutProxy(t, u.Host)
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://" + proxy.ln.Addr().String()
	cfg.Timeout = time.Second
	cutOff, err := kubernetes.NewForConfig(cfg)
	t.Logf("API server %s via %s", u.Host, cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	c := fast("ha-cut")
	a := startReplica(t, cutOff, c, "replica-a")
	waitFor(t, "replica a leads", 30*time.Second, a.e.Leading)
	b := startReplica(t, env.Client, c, "replica-b")
	stop := watchOverlap(t, a, b)
	defer stop()
	time.Sleep(c.LeaseDuration)
	if b.e.Leading() {
		t.Fatal("b took the Lease while a renewed it")
	}
	proxy.Cut()
	cutAt := time.Now()
	waitFor(t, "the cut-off leader stops acting", 30*time.Second, func() bool { return !a.e.Leading() })
	stoppedAfter := time.Since(cutAt)
	waitFor(t, "the other replica takes over", 60*time.Second, b.e.Leading)
	// Ordering, not timing: a stopped before b started (watchOverlap samples throughout), and a's
	// own view never returns to leading without the API server.
	if a.e.Leading() {
		t.Fatal("the cut-off replica leads again")
	}
	if a.gauge(t) != 0 {
		t.Fatalf("kedge_leader of the cut-off replica: %v, want 0", a.gauge(t))
	}
	t.Logf("cut-off leader stopped acting %s after the cut", stoppedAfter.Round(time.Millisecond))
}

// A Lease whose holder writes renewTime from a wrong clock (an hour behind) is still respected while
// the holder keeps renewing it: followers measure the Lease's age on their own clock from when they
// saw it change, never from the times written in it. Once the holder stops, the replica takes over.
func TestALeaseRenewedFromAWrongClockIsRespectedUntilItsHolderStops(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	c := fast("ha-clock")
	leases := env.Client.CoordinationV1().Leases(c.Namespace)
	holder, secs := "skewed-replica", int32(3)
	past := metav1.NewMicroTime(time.Now().Add(-time.Hour))
	l, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: c.LeaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, AcquireTime: &past, RenewTime: &past}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	renewing, stopRenew := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; renewing.Err() == nil; i++ {
			rt := metav1.NewMicroTime(past.Add(time.Duration(i) * time.Second))
			l.Spec.RenewTime = &rt
			if u, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err == nil {
				l = u
			} else {
				t.Errorf("renewing the skewed lease: %v", err)
				return
			}
			select {
			case <-renewing.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	r := startReplica(t, env.Client, c, "replica-a")
	time.Sleep(3 * c.LeaseDuration)
	if r.e.Leading() || r.starts.Load() != 0 {
		stopRenew()
		wg.Wait()
		t.Fatal("took over a Lease its holder kept renewing (renewTime an hour behind)")
	}
	if r.e.Leader() != holder {
		t.Errorf("observed leader %q, want %q", r.e.Leader(), holder)
	}
	stopRenew()
	wg.Wait()
	waitFor(t, "the replica takes over once the holder stopped", 30*time.Second, r.e.Leading)
}

func TestWithLeaderElectionOffTheReplicaAlwaysLeads(t *testing.T) {
	c := kube.DefaultLeaderElection()
	c.Enable = false
	started := make(chan struct{})
	e, err := kube.StartElector(t.Context(), c, kube.ElectorOptions{Module: "test", Identity: "solo",
		OnStartedLeading: func(context.Context) { close(started) }})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if !e.Leading() {
		t.Fatal("not leading with leader election off")
	}
	var nilElector *kube.Elector
	if !nilElector.Leading() {
		t.Fatal("a nil elector (module without election) must act")
	}
}

func TestLeaderElectionSettingsAreCheckedNamingTheKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*kube.LeaderElection)
		want string
	}{
		{"zero retry", func(c *kube.LeaderElection) { c.RetryPeriod = 0 }, "must be positive"},
		{"renew not below lease", func(c *kube.LeaderElection) { c.RenewDeadline = c.LeaseDuration }, "x.renewDeadline: must be less than leaseDuration (15s), got 15s"},
		{"retry not below renew", func(c *kube.LeaderElection) { c.RetryPeriod = c.RenewDeadline }, "x.retryPeriod"},
		{"sub-second lease", func(c *kube.LeaderElection) { c.LeaseDuration = 500 * time.Millisecond }, "x.leaseDuration: at least 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := kube.DefaultLeaderElection()
			tc.set(&c)
			err := c.Validate("x")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if err := kube.DefaultLeaderElection().Validate("x"); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	off := kube.LeaderElection{}
	if err := off.Validate("x"); err != nil {
		t.Fatalf("a disabled block is not checked: %v", err)
	}
	_, err := kube.StartElector(context.Background(), kube.DefaultLeaderElection(), kube.ElectorOptions{Module: "m"})
	if err == nil || !strings.Contains(err.Error(), "identity") {
		t.Fatalf("no identity: got %v", err)
	}
}
