package cloudstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudstream/wire"
)

// MetricsAPISettings configure the resource metrics API (metrics.k8s.io/v1beta1) cloudstream serves
// for `kubectl top`, filled from each edge node over its stream tunnel.
type MetricsAPISettings struct {
	Enable           bool          `yaml:"enable" doc:"Serve metrics.k8s.io/v1beta1 (kubectl top) as an aggregated API, scraping every edge node over its stream tunnel."`
	Address          string        `yaml:"address" doc:"Listen address of the metrics API (https; the APIService's Service points here, port 10007)."`
	ScrapeInterval   time.Duration `yaml:"scrapeInterval" doc:"How often every connected node is scraped; CPU usage is the rate between the last two scrapes."`
	ScrapeTimeout    time.Duration `yaml:"scrapeTimeout" doc:"Limit of one node's scrape; a stalled node holds only its own slot this long."`
	Concurrency      int           `yaml:"concurrency" doc:"Nodes scraped at the same time."`
	ServiceName      string        `yaml:"serviceName" doc:"Name of the Service the APIService names; its in-cluster DNS name <name>.<namespace>.svc is in the serving certificate."`
	ServiceNamespace string        `yaml:"serviceNamespace" doc:"Namespace of that Service."`
	CloudNodes       bool          `yaml:"cloudNodes" doc:"Also scrape the nodes without a stream tunnel (kubelet nodes) through the API server's node proxy /api/v1/nodes/<node>/proxy/metrics/resource, so cloudcore replaces metrics-server for the whole cluster."`
	AuthRefresh      time.Duration `yaml:"authRefresh" doc:"How often the front-proxy client CA (configmap kube-system/extension-apiserver-authentication) is read again."`
}

func defaultMetricsAPI() MetricsAPISettings {
	return MetricsAPISettings{Address: "0.0.0.0:10007", ScrapeInterval: 15 * time.Second, ScrapeTimeout: 10 * time.Second,
		Concurrency: 8, ServiceName: "kedge-metrics", ServiceNamespace: "kedge-system", AuthRefresh: time.Minute}
}

// maxStatsBytes bounds one node's answer.
const maxStatsBytes = 32 << 20

// window is a node's last two scrapes.
type window struct {
	prev, last *scrape
}

// metricsStore keeps the last two scrapes per node.
type metricsStore struct {
	mu    sync.RWMutex
	nodes map[string]*window
}

func (s *metricsStore) add(node string, sc *scrape) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodes == nil {
		s.nodes = map[string]*window{}
	}
	w := s.nodes[node]
	if w == nil {
		w = &window{}
		s.nodes[node] = w
	}
	w.prev, w.last = w.last, sc
}

// keep forgets every node not in live.
func (s *metricsStore) keep(live map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range s.nodes {
		if !live[n] {
			delete(s.nodes, n)
		}
	}
}

// usage is a computed CPU rate (nanocores) and memory working set over a window.
type usage struct {
	NanoCores int64
	Memory    uint64
	At        time.Time
	Window    time.Duration
}

// rate computes usage as metrics-server does: cores = Δcpu_seconds / Δt between two readings; the
// memory is the newer reading's. No result when a reading is missing, time did not advance or the
// counter went back (a restarted container).
func rate(prev, last point) (usage, bool) {
	if !prev.hasCPU || !last.hasCPU || !last.hasMem {
		return usage{}, false
	}
	dt := last.CPUAt.Sub(prev.CPUAt)
	if dt <= 0 || last.CPU < prev.CPU {
		return usage{}, false
	}
	cores := (last.CPU - prev.CPU) / dt.Seconds()
	return usage{NanoCores: int64(cores * 1e9), Memory: last.Mem, At: last.CPUAt, Window: dt}, true
}

// nodeUsage is a node's usage, if two scrapes give one.
func (s *metricsStore) nodeUsage(node string) (usage, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	w := s.nodes[node]
	if w == nil || w.prev == nil || w.last == nil {
		return usage{}, false
	}
	return rate(w.prev.Node, w.last.Node)
}

// podUsage is one pod's containers' usage.
type podUsage struct {
	Namespace, Pod string
	Node           string
	At             time.Time
	Window         time.Duration
	Containers     []namedUsage
}

type namedUsage struct {
	Name string
	usage
}

// pods returns the usage of every pod whose every container has a rate (as metrics-server, a pod
// with a container lacking one is left out until the next scrape), sorted by namespace and name.
func (s *metricsStore) pods() []podUsage {
	s.mu.RLock()
	defer s.mu.RUnlock()
	byPod := map[[2]string]*podUsage{}
	broken := map[[2]string]bool{}
	for node, w := range s.nodes {
		if w.prev == nil || w.last == nil {
			continue
		}
		for k, last := range w.last.Containers {
			pk := [2]string{k.Namespace, k.Pod}
			u, ok := rate(w.prev.Containers[k], last)
			if !ok {
				broken[pk] = true
				continue
			}
			p := byPod[pk]
			if p == nil {
				p = &podUsage{Namespace: k.Namespace, Pod: k.Pod, Node: node}
				byPod[pk] = p
			}
			p.Containers = append(p.Containers, namedUsage{Name: k.Container, usage: u})
			if u.At.After(p.At) {
				p.At = u.At
			}
			p.Window = max(p.Window, u.Window)
		}
	}
	out := make([]podUsage, 0, len(byPod))
	for k, p := range byPod {
		if broken[k] {
			continue
		}
		sort.Slice(p.Containers, func(i, j int) bool { return p.Containers[i].Name < p.Containers[j].Name })
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Pod < out[j].Pod
	})
	return out
}

// nodeNames are the nodes with a usage.
func (s *metricsStore) nodeNames() []string {
	s.mu.RLock()
	names := make([]string, 0, len(s.nodes))
	for n := range s.nodes {
		names = append(names, n)
	}
	s.mu.RUnlock()
	sort.Strings(names)
	return names
}

// startMetricsAPI serves metrics.k8s.io and starts the scrape loop.
func (m *Module) startMetricsAPI(ctx context.Context, ca *pki.CA, ips []net.IP, names []string) error {
	c := &m.MetricsAPI
	svc := c.ServiceName + "." + c.ServiceNamespace + ".svc"
	serving, err := pki.NewServerCert(ctx, ca, pki.FileStorage{Dir: filepath.Join(m.PKIDir, "metricsapi")},
		pki.ServerCertOptions{IPs: ips, DNSNames: append([]string{svc, svc + ".cluster.local"}, names...), Logger: m.host.Logger()})
	if err != nil {
		return fmt.Errorf("metricsAPI serving certificate: %w", err)
	}
	m.mapi = &metricsAPI{m: m, auth: &frontProxy{client: m.client, refresh: c.AuthRefresh}, inflight: map[string]bool{},
		scrapes: newScrapeMetrics()}
	lctx, cancel := context.WithCancel(m.life)
	m.mapi.cancel = cancel
	if err := m.mapi.scrapes.register(m.host.Metrics()); err != nil {
		cancel()
		return err
	}
	// The client certificate is asked for, not verified in the handshake: the front-proxy CA is read
	// from the cluster and checked per request, so a refusal is a clear 401, not a TLS alert.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: serving.GetCertificate,
		ClientAuth: tls.RequestClientCert, NextProtos: []string{"http/1.1"}}
	if err := m.listen(&c.Address, cfg, http.HandlerFunc(m.mapi.serveHTTP), pki.HandshakeErrorLog(m.host.Logger(), "metricsAPI", nil)); err != nil {
		cancel()
		return fmt.Errorf("metricsAPI: %w", err)
	}
	m.wg.Go(func() { m.mapi.loop(lctx) })
	m.host.Logger().Info("serving metrics.k8s.io/v1beta1", "address", c.Address, "service", svc, "scrapeInterval", c.ScrapeInterval)
	return nil
}

// metricsAPI is the running metrics API.
type metricsAPI struct {
	m       *Module
	store   metricsStore
	auth    *frontProxy
	scrapes *scrapeMetrics
	cancel  context.CancelFunc
	rounds  atomic.Int64 // scrape rounds started (tests wait on it)

	mu       sync.Mutex
	inflight map[string]bool // nodes being scraped
	wg       sync.WaitGroup
}

// loop scrapes every node now and then every scrapeInterval until ctx ends.
func (a *metricsAPI) loop(ctx context.Context) {
	c := a.m.MetricsAPI
	sem := make(chan struct{}, c.Concurrency)
	tick := time.NewTicker(c.ScrapeInterval)
	defer tick.Stop()
	defer a.wg.Wait()
	for {
		a.round(ctx, sem)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// round starts a scrape of every node not still being scraped; it does not wait for them.
func (a *metricsAPI) round(ctx context.Context, sem chan struct{}) {
	live := map[string]bool{}
	a.m.mu.Lock()
	for n := range a.m.tunnels {
		live[n] = true
	}
	a.m.mu.Unlock()
	targets := map[string]func(context.Context) (io.ReadCloser, error){}
	for n := range live {
		targets[n] = func(ctx context.Context) (io.ReadCloser, error) { return a.m.openStats(ctx, n) }
	}
	if a.m.MetricsAPI.CloudNodes {
		for _, n := range a.cloudNodes(ctx, live) {
			live[n] = true
			targets[n] = func(ctx context.Context) (io.ReadCloser, error) { return a.proxyStats(ctx, n) }
		}
	}
	a.store.keep(live)
	defer a.rounds.Add(1)
	for node, open := range targets {
		a.mu.Lock()
		busy := a.inflight[node]
		a.inflight[node] = true
		a.mu.Unlock()
		if busy {
			a.scrapes.results.WithLabelValues("skipped_busy").Inc()
			continue
		}
		a.wg.Go(func() {
			defer func() {
				a.mu.Lock()
				delete(a.inflight, node)
				a.mu.Unlock()
			}()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			a.scrapeNode(ctx, node, open)
		})
	}
}

// scrapeNode reads one node's resource metrics within scrapeTimeout and stores them.
func (a *metricsAPI) scrapeNode(ctx context.Context, node string, open func(context.Context) (io.ReadCloser, error)) {
	ctx, cancel := context.WithTimeout(ctx, a.m.MetricsAPI.ScrapeTimeout)
	defer cancel()
	began := time.Now()
	body, err := open(ctx)
	if err == nil {
		var sc *scrape
		sc, err = parseResourceMetrics(io.LimitReader(body, maxStatsBytes), time.Now())
		_ = body.Close()
		if err == nil {
			a.store.add(node, sc)
		}
	}
	a.scrapes.duration.Observe(time.Since(began).Seconds())
	if err != nil {
		a.scrapes.results.WithLabelValues("error").Inc()
		a.m.host.Logger().Warn("metrics scrape failed", "node", node, "err", err)
		return
	}
	a.scrapes.results.WithLabelValues("ok").Inc()
}

// openStats opens a stats session on node's tunnel and returns the metrics text that follows the
// edge's 200. The session is closed when ctx ends.
func (m *Module) openStats(ctx context.Context, node string) (io.ReadCloser, error) {
	timeout := m.SessionTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	sc, err := m.open(node, timeout)
	if err != nil {
		return nil, err
	}
	done := m.track(sc.conn)
	stop := context.AfterFunc(ctx, func() { _ = sc.conn.Close() })
	fail := func(err error) (io.ReadCloser, error) { stop(); done(); return nil, err }
	if d, ok := ctx.Deadline(); ok {
		_ = sc.conn.SetDeadline(d)
	}
	if err := wire.WriteLine(sc.conn, wire.Request{Kind: wire.KindStats}); err != nil {
		return fail(fmt.Errorf("node %s: sending the stats request: %w", node, err))
	}
	var st wire.Status
	if err := wire.ReadLine(sc.rd, &st); err != nil {
		return fail(fmt.Errorf("node %s: reading its stats answer: %w", node, err))
	}
	if st.Code != http.StatusOK {
		return fail(fmt.Errorf("node %s refused stats: %d %s", node, st.Code, st.Error))
	}
	return &sessionBody{Reader: sc.rd, close: func() { stop(); done() }}, nil
}

type sessionBody struct {
	io.Reader
	once  sync.Once
	close func()
}

func (b *sessionBody) Close() error { b.once.Do(b.close); return nil }

// ScrapeNode returns node's resource metrics text as its edge answers a stats session (for tests
// and diagnostics).
func (m *Module) ScrapeNode(ctx context.Context, node string) ([]byte, error) {
	body, err := m.openStats(ctx, node)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(io.LimitReader(body, maxStatsBytes))
}

// cloudNodes lists the nodes without a stream tunnel whose kubelet is not cloudstream's endpoint.
func (a *metricsAPI) cloudNodes(ctx context.Context, edge map[string]bool) []string {
	lctx, cancel := context.WithTimeout(ctx, a.m.MetricsAPI.ScrapeTimeout)
	defer cancel()
	list, err := a.m.client.CoreV1().Nodes().List(lctx, metav1.ListOptions{})
	if err != nil {
		a.m.host.Logger().Warn("metricsAPI: listing nodes for cloudNodes", "err", err)
		return nil
	}
	ep := a.m.endpoint()
	var out []string
	for _, n := range list.Items {
		if edge[n.Name] {
			continue
		}
		if ep.Address != "" && n.Status.DaemonEndpoints.KubeletEndpoint.Port == ep.Port && hasAddress(n.Status.Addresses, ep.Address) {
			continue // an edge node whose tunnel is down: its kubelet endpoint is us
		}
		out = append(out, n.Name)
	}
	return out
}

// proxyStats reads a kubelet node's /metrics/resource through the API server's node proxy.
func (a *metricsAPI) proxyStats(ctx context.Context, node string) (io.ReadCloser, error) {
	rc, err := a.m.client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy", "metrics", "resource").Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("node %s through the API server's node proxy: %w", node, err)
	}
	return rc, nil
}
