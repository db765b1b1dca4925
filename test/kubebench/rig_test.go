// Package kubebench measures and checks the whole downstream path for pods, in one process: a real
// kube-apiserver and etcd (test/k8senv), a cloud host running cloudhub and the real edgecontroller,
// and N edge hosts each running edgehub and metamanager with their own SQLite store, joined through
// the real certificate server and connected over mTLS websockets. A tiny module named "edged" on each
// edge host is metamanager's consumer for pods: metamanager tells it only after the pod is written to
// SQLite, so its arrival time is "stored on the edge".
package kubebench

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/plugins/builtin/edgehub"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/test/k8senv"
)

// The control plane is started on first use (a -short run or a run of other tests never starts it)
// and stopped when the package's tests end.
var (
	envOnce sync.Once
	env     *k8senv.Env
	envErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if env != nil {
		_ = env.Stop()
	}
	os.Exit(code)
}

// controlPlane returns the shared control plane, skipping with -short or KEDGE_SKIP_K8S.
func controlPlane(tb testing.TB) *k8senv.Env {
	tb.Helper()
	if testing.Short() || os.Getenv("KEDGE_SKIP_K8S") != "" {
		tb.Skip("needs a kube-apiserver and many edge hosts (not with -short or KEDGE_SKIP_K8S)")
	}
	envOnce.Do(func() { env, envErr = k8senv.Start() })
	if envErr != nil {
		tb.Fatalf("control plane: %v", envErr)
	}
	return env
}

// host is one side, as cloudcore or edgecore run it: a router, a store and a module manager.
type host struct {
	db  *store.DB
	mgr *modules.Manager
}

// logger keeps 100 hosts' info lines out of the benchmark output; warnings still show.
var logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func startHost(identity, dbPath, synchronous string, mods []modules.Planned) (*host, error) {
	db, err := store.Open(dbPath, store.Options{Synchronous: synchronous})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	mgr := modules.NewManager(modules.Deps{NodeName: identity, Router: router.New(reg), Store: db, Metrics: reg,
		Logger: logger.With("host", identity), StopTimeout: 5 * time.Second})
	if err := mgr.Start(context.Background(), mods); err != nil {
		db.Close()
		return nil, fmt.Errorf("host %s: %w", identity, err)
	}
	return &host{db: db, mgr: mgr}, nil
}

func (h *host) stop() {
	_ = h.mgr.Stop(context.Background())
	_ = h.db.Close()
}

func builtin(info sdk.Info, m sdk.Module) modules.Planned {
	return modules.Planned{Info: info, Settings: modules.Settings{Runtime: modules.Builtin}, Module: m}
}

// arrival is one pod handed to an edge node's consumer, after metamanager stored it.
type arrival struct {
	node string
	at   time.Time
}

// arrivals collects, across every edge host, which pods reached which node and when, and which
// nodes have received their own Node object (their first message after joining).
type arrivals struct {
	mu       sync.Mutex
	pods     map[string][]arrival // "<ns>/<name>" -> every arrival of that pod
	podCount int                  // first arrivals
	nodes    map[string]bool      // node -> got its own Node object
}

func newArrivals() *arrivals {
	return &arrivals{pods: map[string][]arrival{}, nodes: map[string]bool{}}
}

func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.podCount
}

func (a *arrivals) nodesSeen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.nodes)
}

func (a *arrivals) of(pod string) []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]arrival(nil), a.pods[pod]...)
}

// consumer is the "edged" of one edge host: metamanager's consumer for pods and nodes. It takes the
// clock first thing in Handle; metamanager sends to it only after the SQLite write returned.
type consumer struct {
	node string
	all  *arrivals
}

func (c *consumer) Start(context.Context, sdk.Host) error { return nil }
func (c *consumer) Stop(context.Context) error            { return nil }

func (c *consumer) Handle(_ context.Context, m sdk.Message) error {
	now := time.Now()
	if m.Route.Operation == message.OpDelete {
		return nil
	}
	res, err := message.ParseEdge(m.Route.Resource)
	if err != nil {
		return err
	}
	c.all.mu.Lock()
	defer c.all.mu.Unlock()
	switch res.Type {
	case edgecontroller.TypePod:
		k := res.Namespace + "/" + res.Name
		if len(c.all.pods[k]) == 0 {
			c.all.podCount++
		}
		c.all.pods[k] = append(c.all.pods[k], arrival{node: c.node, at: now})
	case edgecontroller.TypeNode:
		if res.Name == c.node {
			c.all.nodes[c.node] = true
		}
	}
	return nil
}

// sink takes the edge's hub events (connected / disconnected); nothing here needs them.
type sink struct{}

func (sink) Start(context.Context, sdk.Host) error     { return nil }
func (sink) Stop(context.Context) error                { return nil }
func (sink) Handle(context.Context, sdk.Message) error { return nil }

// rig is a cloud and its edge nodes, all connected and reconciled, against the shared control plane.
type rig struct {
	tb     testing.TB
	env    *k8senv.Env
	ns     string
	nodes  []string
	cloud  *host
	hub    *cloudhub.Module
	edges  []*host
	all    *arrivals
	client kubernetes.Interface // the pod creators' client, QPS and burst raised

	watchMu sync.Mutex
	watched map[string]time.Time // pod name -> when a plain watch of the namespace saw it added
}

var rigSeq atomic.Int64

// newRig starts a cloud host (cloudhub + edgecontroller on the control plane, defaults otherwise)
// and n edge hosts (edgehub + metamanager + the consumer, defaults otherwise, MetaServer off since
// 100 of them cannot share its port), joins each node through the certificate server, and returns
// once every Node exists in the API and every node has received its own Node object — that is, its
// inventory was reconciled and downstream messages flow to it.
// options change a rig's defaults; the zero value is the shipped defaults.
type options struct {
	hub      func(*cloudhub.Module) // changes cloudhub's settings before it starts
	edgeSync string                 // the edges' store.synchronous; "" is edgecore's default, full (one fsync per write)
}

func newRig(tb testing.TB, tag string, n int, opts options) *rig {
	tb.Helper()
	e := controlPlane(tb)
	seq := rigSeq.Add(1)
	r := &rig{tb: tb, env: e, ns: fmt.Sprintf("kubebench-%s-%d", tag, seq), all: newArrivals()}
	dir := tb.TempDir()
	ctx := context.Background()

	cfg := rest.CopyConfig(e.Config)
	cfg.QPS, cfg.Burst = 5000, 5000
	var err error
	if r.client, err = kubernetes.NewForConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.ns}}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	r.watchPods()

	hub := cloudhub.New()
	hub.Address, hub.CertServerAddress, hub.PKIDir = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(dir, "pki")
	if opts.hub != nil {
		opts.hub(hub)
	}
	if opts.edgeSync == "" {
		opts.edgeSync = "full"
	}
	ec := edgecontroller.New()
	ec.Kubeconfig = e.Kubeconfig
	hubInfo, _ := sdk.Lookup(cloudhub.Name)
	ecInfo, _ := sdk.Lookup(edgecontroller.Name)
	if r.cloud, err = startHost("cloudcore-"+r.ns, filepath.Join(dir, "cloud.db"), "full", []modules.Planned{builtin(hubInfo, hub), builtin(ecInfo, ec)}); err != nil {
		tb.Fatal(err)
	}
	r.hub = hub
	tb.Cleanup(r.teardown)

	ca, _, err := pki.LoadOrCreateCA(ctx, pki.FileStorage{Dir: hub.PKIDir})
	if err != nil {
		tb.Fatal(err)
	}
	// One token for the n nodes of this rig (each joins once).
	tok, _, err := pki.CreateToken(ctx, ca, pki.FileRecords{Dir: hub.PKIDir}, pki.TokenOptions{TTL: time.Hour, Uses: n})
	if err != nil {
		tb.Fatal(err)
	}
	_, port, _ := strings.Cut(hub.Address, ":")
	mmInfo, _ := sdk.Lookup(metamanager.Name)
	ehInfo, _ := sdk.Lookup(edgehub.Name)
	for i := range n {
		node := fmt.Sprintf("kb%d-%s-e%03d", seq, tag, i)
		r.nodes = append(r.nodes, node)
		certs, err := pki.Join(ctx, pki.JoinOptions{CertServer: hub.CertServerAddress, Token: tok.String(), NodeName: node, Dir: filepath.Join(dir, node, "certs")})
		if err != nil {
			tb.Fatalf("join %s: %v", node, err)
		}
		mm := metamanager.New()
		mm.Consumers = map[string]string{edgecontroller.TypePod: "edged", edgecontroller.TypeNode: "edged"}
		mm.MetaServer.Enable = false
		eh := edgehub.New()
		eh.Server = "localhost:" + port
		eh.CAFile, eh.CertFile, eh.KeyFile = certs.CAFile, certs.CertFile, certs.KeyFile
		eh.BackoffMin, eh.BackoffMax = 50*time.Millisecond, time.Second // the first dial may race cloudhub's start
		edge, err := startHost(node, filepath.Join(dir, node, "edge.db"), opts.edgeSync, []modules.Planned{
			builtin(sdk.Info{Name: "edged", Group: "edged"}, &consumer{node: node, all: r.all}),
			builtin(sdk.Info{Name: "edgeevents", Group: "hubevents"}, sink{}),
			builtin(mmInfo, mm),
			builtin(ehInfo, eh),
		})
		if err != nil {
			tb.Fatal(err)
		}
		r.edges = append(r.edges, edge)
	}
	r.waitProgress("edge nodes receiving their own Node object", r.all.nodesSeen, n)
	for _, node := range r.nodes { // implied by the Node message, checked anyway
		got, err := e.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			tb.Fatalf("node %s joined but its Node is not readable: %v", node, err)
		}
		if _, ok := got.Labels[edgecontroller.EdgeLabel]; !ok {
			tb.Fatalf("node %s has no %s label: %v", node, edgecontroller.EdgeLabel, got.Labels)
		}
	}
	return r
}

// watchPods records when a watch of the rig's namespace (as an informer holds one) sees each pod
// added: the API's share of the latency, to tell it from Kedge's.
func (r *rig) watchPods() {
	r.tb.Helper()
	r.watched = map[string]time.Time{}
	w, err := r.env.Client.CoreV1().Pods(r.ns).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		r.tb.Fatal(err)
	}
	r.tb.Cleanup(w.Stop)
	go func() {
		for ev := range w.ResultChan() {
			now := time.Now()
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Added {
				r.watchMu.Lock()
				r.watched[p.Name] = now
				r.watchMu.Unlock()
			}
		}
	}()
}

// watchedAt is when the watch saw pod name added (zero: not seen).
func (r *rig) watchedAt(name string) time.Time {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	return r.watched[name]
}

func (r *rig) watchedCount() int {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	return len(r.watched)
}

// teardown stops the edges, then the cloud, and removes the rig's pods and Nodes from the API so a
// later rig's controller does not carry them.
func (r *rig) teardown() {
	var wg sync.WaitGroup
	for _, e := range r.edges {
		wg.Go(e.stop)
	}
	wg.Wait()
	r.cloud.stop()
	ctx := context.Background()
	zero := int64(0)
	_ = r.env.Client.CoreV1().Pods(r.ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	for _, n := range r.nodes {
		_ = r.env.Client.CoreV1().Nodes().Delete(ctx, n, metav1.DeleteOptions{})
	}
}

// pod is a minimal pod bound to node (there is no scheduler: spec.nodeName is set at creation).
func (r *rig) pod(name, node string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}}}}
}

// created is one pod create: the time just before the call and the time it returned.
type created struct {
	name, node   string
	start, taken time.Time
}

// createPods creates count pods named <prefix>-<i>, pod i on node i mod len(nodes), from creators
// goroutines; it returns when every create call returned.
func (r *rig) createPods(prefix string, count, creators int) []created {
	r.tb.Helper()
	out := make([]created, count)
	next := make(chan int)
	errs := make(chan error, creators)
	var wg sync.WaitGroup
	for range creators {
		wg.Go(func() {
			for i := range next {
				p := r.pod(fmt.Sprintf("%s-%04d", prefix, i), r.nodes[i%len(r.nodes)])
				start := time.Now()
				_, err := r.client.CoreV1().Pods(r.ns).Create(context.Background(), p, metav1.CreateOptions{})
				out[i] = created{name: p.Name, node: p.Spec.NodeName, start: start, taken: time.Now()}
				if err != nil {
					errs <- fmt.Errorf("create pod %s: %w", p.Name, err)
					return
				}
			}
		})
	}
	var failed error
feed:
	for i := range count {
		select {
		case next <- i:
		case failed = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if failed == nil {
		select {
		case failed = <-errs:
		default:
		}
	}
	if failed != nil {
		r.tb.Fatal(failed)
	}
	return out
}

// waitProgress waits until count reaches want, failing only when it stops moving for a minute: a
// loaded machine may be slow, a stalled pipeline is not allowed.
func (r *rig) waitProgress(what string, count func() int, want int) {
	r.tb.Helper()
	last, since := -1, time.Now()
	for {
		n := count()
		if n >= want {
			return
		}
		if n != last {
			last, since = n, time.Now()
		}
		if time.Since(since) > time.Minute {
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			r.tb.Fatalf("%s stalled at %d of %d for a minute\n%s", what, n, want, kedgeStacks(stacks.String()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kedgeStacks keeps the goroutine groups that run Kedge code, to see where a stall sits.
func kedgeStacks(all string) string {
	var out []string
	for _, g := range strings.Split(all, "\n\n") {
		if strings.Contains(g, "kedge-io/kedge/plugins") || strings.Contains(g, "kedge-io/kedge/host/hub") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
