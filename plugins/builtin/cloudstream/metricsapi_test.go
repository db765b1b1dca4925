package cloudstream

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/test/k8senv"
)

type testHost struct {
	sdk.Host
	reg *prometheus.Registry
	log io.Writer // nil: discarded
}

func (h *testHost) Name() string     { return Name }
func (h *testHost) NodeName() string { return "cloud" }
func (h *testHost) Logger() *slog.Logger {
	if h.log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(h.log, nil))
}
func (h *testHost) Metrics() prometheus.Registerer { return h.reg }

func TestParseResourceMetricsTakesTheKubeletSeriesAndNamesBadLines(t *testing.T) {
	fallback := time.UnixMilli(5000)
	good := `# HELP node_cpu_usage_seconds_total x
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 12.5 1700000000000
node_memory_working_set_bytes 1.048576e+06 1700000000001
container_cpu_usage_seconds_total{container="c",namespace="ns",pod="p"} 3 1700000000002
container_memory_working_set_bytes{container="c",namespace="ns",pod="p"} 4096
container_start_time_seconds{container="c",namespace="ns",pod="p"} 1.7e+09 1700000000002
pod_cpu_usage_seconds_total{namespace="ns",pod="p"} 3 1700000000002
scrape_error 0
`
	cases := []struct {
		name, text, wantErr string
		check               func(t *testing.T, s *scrape)
	}{
		{name: "node and container series with their timestamps; no timestamp takes the scrape time", text: good, check: func(t *testing.T, s *scrape) {
			if s.Node.CPU != 12.5 || !s.Node.CPUAt.Equal(time.UnixMilli(1700000000000)) || s.Node.Mem != 1048576 {
				t.Fatalf("node %+v", s.Node)
			}
			c := s.Containers[containerKey{"ns", "p", "c"}]
			if c.CPU != 3 || c.Mem != 4096 || !c.MemAt.Equal(fallback) || len(s.Containers) != 1 || s.ScrapeErr {
				t.Fatalf("containers %+v", s.Containers)
			}
		}},
		{name: "escaped quotes and commas inside label values", text: `container_cpu_usage_seconds_total{container="a\"b",namespace="n,s",pod="p"} 1 2` + "\n", check: func(t *testing.T, s *scrape) {
			if _, ok := s.Containers[containerKey{"n,s", "p", `a"b`}]; !ok {
				t.Fatalf("containers %+v", s.Containers)
			}
		}},
		{name: "scrape_error 1 is kept", text: "scrape_error 1\n", check: func(t *testing.T, s *scrape) {
			if !s.ScrapeErr {
				t.Fatal("scrape_error lost")
			}
		}},
		{name: "a value that is no number names the line", text: "# x\nnode_cpu_usage_seconds_total abc\n", wantErr: `metrics line 2 "node_cpu_usage_seconds_total abc": value "abc" is not a number`},
		{name: "a label value without its closing quote", text: `container_cpu_usage_seconds_total{container="c 1` + "\n", wantErr: "label container: unterminated value"},
		{name: "a label set without its closing brace", text: `container_cpu_usage_seconds_total{container="c" 1` + "\n", wantErr: "label without '='"},
		{name: "a container series without its pod label", text: `container_cpu_usage_seconds_total{container="c",namespace="ns"} 1` + "\n", wantErr: "needs the labels namespace, pod and container"},
		{name: "a timestamp that is not milliseconds", text: "node_cpu_usage_seconds_total 1 1.5\n", wantErr: `timestamp "1.5"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := parseResourceMetrics(strings.NewReader(c.text), fallback)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, s)
		})
	}
}

func pt(cpu float64, at time.Time, mem uint64) point {
	return point{CPU: cpu, CPUAt: at, Mem: mem, MemAt: at, hasCPU: true, hasMem: true}
}

func TestRateIsCPUSecondsOverElapsedTimeAsMetricsServerComputesIt(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name       string
		prev, last point
		want       usage
		ok         bool
	}{
		{name: "half a core over 10s", prev: pt(10, t0, 1), last: pt(15, t0.Add(10*time.Second), 2048),
			want: usage{NanoCores: 500_000_000, Memory: 2048, At: t0.Add(10 * time.Second), Window: 10 * time.Second}, ok: true},
		{name: "idle is zero, not missing", prev: pt(10, t0, 1), last: pt(10, t0.Add(time.Second), 7),
			want: usage{NanoCores: 0, Memory: 7, At: t0.Add(time.Second), Window: time.Second}, ok: true},
		{name: "a counter that went back (restart) gives nothing", prev: pt(10, t0, 1), last: pt(2, t0.Add(time.Second), 1)},
		{name: "time that did not advance gives nothing", prev: pt(10, t0, 1), last: pt(11, t0, 1)},
		{name: "a first reading alone gives nothing", prev: point{}, last: pt(11, t0, 1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := rate(c.prev, c.last)
			if ok != c.ok || got != c.want {
				t.Fatalf("got %+v %v, want %+v %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func TestPodsLeaveOutAPodWithAContainerWithoutARate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var s metricsStore
	s.add("n", &scrape{Containers: map[containerKey]point{{"ns", "a", "c"}: pt(1, t0, 1), {"ns", "b", "c"}: pt(1, t0, 1)}})
	s.add("n", &scrape{Containers: map[containerKey]point{{"ns", "a", "c"}: pt(2, t0.Add(time.Second), 1),
		{"ns", "b", "c"}: pt(2, t0.Add(time.Second), 1), {"ns", "b", "new"}: pt(2, t0.Add(time.Second), 1)}})
	pods := s.pods()
	if len(pods) != 1 || pods[0].Pod != "a" || pods[0].Containers[0].NanoCores != 1e9 {
		t.Fatalf("pods %+v", pods)
	}
	s.keep(map[string]bool{})
	if len(s.pods()) != 0 || len(s.nodeNames()) != 0 {
		t.Fatal("a node without a tunnel is kept")
	}
}

// apiRig is cloudstream with the metrics API on a real kube-apiserver started with aggregation.
type apiRig struct {
	t    *testing.T
	env  *k8senv.Env
	fp   *k8senv.FrontProxy
	m    *Module
	ca   *pki.CA
	base string
}

func newAPIRig(t *testing.T) *apiRig {
	t.Helper()
	dir := t.TempDir()
	fp, err := k8senv.NewFrontProxy(dir)
	if err != nil {
		t.Fatal(err)
	}
	env, err := k8senv.Start(k8senv.WithAggregation(fp))
	if err != nil {
		t.Skipf("no control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ca, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: dir}) // cloudhub's, made first
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	m.StreamAddress, m.TunnelAddress, m.PKIDir = "127.0.0.1:0", "127.0.0.1:0", dir
	m.ClientCAFile = filepath.Join(dir, pki.CACertName) // any CA: the stream server is not called here
	m.MetricsAPI.Enable, m.MetricsAPI.Address, m.MetricsAPI.ScrapeInterval = true, "127.0.0.1:0", time.Hour
	SetClient(m, env.Client)
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Start(ctx, &testHost{reg: prometheus.NewRegistry()}); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = m.Stop(context.Background()) })
	deadline := time.Now().Add(10 * time.Second)
	for m.mapi.rounds.Load() == 0 { // the first round (no tunnels) prunes the store; fill it after
		if time.Now().After(deadline) {
			t.Fatal("no scrape round within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &apiRig{t: t, env: env, fp: fp, m: m, ca: ca, base: "https://" + m.MetricsAPI.Address}
}

// get calls the metrics API with cert (none: nil) as the user and groups headers say.
func (r *apiRig) get(cert *tls.Certificate, path, user string, groups ...string) (int, string) {
	r.t.Helper()
	cfg := &tls.Config{RootCAs: r.ca.Pool(), ServerName: "kedge-metrics.kedge-system.svc"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	req, _ := http.NewRequest(http.MethodGet, r.base+path, nil)
	if user != "" {
		req.Header.Set("X-Remote-User", user)
	}
	for _, g := range groups {
		req.Header.Add("X-Remote-Group", g)
	}
	resp, err := client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsAPIServesNodesAndPodsToTheFrontProxyOnly(t *testing.T) {
	r := newAPIRig(t)
	ctx := context.Background()
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db", Labels: map[string]string{"app": "db"}}},
	} {
		p.Spec = corev1.PodSpec{NodeName: "edge-a", Containers: []corev1.Container{{Name: "c", Image: "x"}}}
		if _, err := r.env.Client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"edge-a", "edge-b"} {
		if _, err := r.env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n,
			Labels: map[string]string{"zone": strings.TrimPrefix(n, "edge-")}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second) // the JSON timestamp has seconds
	for _, n := range []string{"edge-a", "edge-b"} {
		r.m.mapi.store.add(n, &scrape{Node: pt(100, t0, 1<<30), Containers: map[containerKey]point{}})
	}
	r.m.mapi.store.add("edge-a", &scrape{Node: pt(115, t0.Add(10*time.Second), 1<<30), Containers: map[containerKey]point{}})
	r.m.mapi.store.add("edge-b", &scrape{Node: pt(100.5, t0.Add(10*time.Second), 1<<20), Containers: map[containerKey]point{}})
	// The pods' containers: web 0.25 cores, db 0.1 cores.
	r.m.mapi.store.nodes["edge-a"].prev.Containers = map[containerKey]point{{"default", "web", "c"}: pt(1, t0, 1), {"default", "db", "c"}: pt(1, t0, 1)}
	r.m.mapi.store.nodes["edge-a"].last.Containers = map[containerKey]point{{"default", "web", "c"}: pt(3.5, t0.Add(10*time.Second), 5<<20), {"default", "db", "c"}: pt(2, t0.Add(10*time.Second), 1<<20)}

	front, err := tls.LoadX509KeyPair(r.fp.CertFile, r.fp.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	wrongCN, err := r.fp.ClientCert("someone-else")
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	otherFP, err := k8senv.NewFrontProxy(otherDir)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := tls.LoadX509KeyPair(otherFP.CertFile, otherFP.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	const nodes = "/apis/metrics.k8s.io/v1beta1/nodes"

	refusals := []struct {
		name, path, user string
		cert             *tls.Certificate
		groups           []string
		code             int
		want             string
	}{
		{name: "no client certificate is 401", path: nodes, user: "admin", code: 401, want: "no client certificate"},
		{name: "a certificate of another CA is 401", path: nodes, cert: &otherCA, user: "admin", code: 401, want: "not from the requestheader client CA"},
		{name: "a CN outside requestheader-allowed-names is 401", path: nodes, cert: &wrongCN, user: "admin", code: 401, want: `"someone-else" is not in requestheader-allowed-names`},
		{name: "no user header is 401", path: nodes, cert: &front, code: 401, want: "names no user"},
		{name: "a user without RBAC is 403 naming the user and resource", path: nodes, cert: &front, user: "nobody", groups: []string{"system:authenticated"}, code: 403, want: `user "nobody" cannot list nodes.metrics.k8s.io at the cluster scope`},
		{name: "namespaced refusal names the namespace", path: "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web", cert: &front, user: "nobody", code: 403, want: "cannot get pods.metrics.k8s.io web in the namespace default"},
		{name: "an unknown resource is 404", path: "/apis/metrics.k8s.io/v1beta1/services", cert: &front, user: "admin", groups: []string{"system:masters"}, code: 404, want: "not a metrics.k8s.io/v1beta1 resource path"},
		{name: "a node without metrics is 404", path: nodes + "/edge-z", cert: &front, user: "admin", groups: []string{"system:masters"}, code: 404, want: `nodes.metrics.k8s.io "edge-z" not found`},
		{name: "a bad labelSelector is 400", path: nodes + "?labelSelector=a%3D%3D%3Db", cert: &front, user: "admin", groups: []string{"system:masters"}, code: 400, want: "labelSelector"},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			code, body := r.get(c.cert, c.path, c.user, c.groups...)
			var st metav1.Status
			if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" || int(st.Code) != code {
				t.Fatalf("not a Status: %d %s", code, body)
			}
			if code != c.code || !strings.Contains(st.Message, c.want) {
				t.Fatalf("got %d %s, want %d with %q", code, body, c.code, c.want)
			}
		})
	}

	admin := func(path string, v any) {
		t.Helper()
		code, body := r.get(&front, path, "admin", "system:masters")
		if code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if err := json.Unmarshal([]byte(body), v); err != nil {
			t.Fatalf("%s: %v in %s", path, err, body)
		}
	}
	t.Run("discovery lists nodes and pods", func(t *testing.T) {
		var rl metav1.APIResourceList
		admin("/apis/metrics.k8s.io/v1beta1", &rl)
		if rl.GroupVersion != "metrics.k8s.io/v1beta1" || len(rl.APIResources) != 2 || rl.APIResources[1].Kind != "PodMetrics" {
			t.Fatalf("%+v", rl)
		}
	})
	t.Run("node list gives the CPU rate and memory of every node", func(t *testing.T) {
		var l nodeMetricsList
		admin(nodes, &l)
		if l.Kind != "NodeMetricsList" || len(l.Items) != 2 {
			t.Fatalf("%+v", l)
		}
		a := l.Items[0]
		if a.Name != "edge-a" || a.Usage.Cpu().Cmp(resource.MustParse("1500m")) != 0 || a.Usage.Memory().Value() != 1<<30 ||
			a.Window.Duration != 10*time.Second || !a.Timestamp.Time.Equal(t0.Add(10*time.Second)) {
			t.Fatalf("%+v", a)
		}
	})
	t.Run("labelSelector and fieldSelector restrict nodes", func(t *testing.T) {
		var l nodeMetricsList
		admin(nodes+"?labelSelector=zone%3Db", &l)
		if len(l.Items) != 1 || l.Items[0].Name != "edge-b" || l.Items[0].Labels["zone"] != "b" {
			t.Fatalf("%+v", l)
		}
		admin(nodes+"?fieldSelector=metadata.name%3Dedge-a", &l)
		if len(l.Items) != 1 || l.Items[0].Name != "edge-a" {
			t.Fatalf("%+v", l)
		}
	})
	t.Run("pods: all namespaces, one namespace, a label, one by name", func(t *testing.T) {
		var l podMetricsList
		admin("/apis/metrics.k8s.io/v1beta1/pods", &l)
		if len(l.Items) != 2 || l.Items[0].Name != "db" || l.Items[1].Name != "web" {
			t.Fatalf("%+v", l)
		}
		admin("/apis/metrics.k8s.io/v1beta1/namespaces/other/pods", &l)
		if len(l.Items) != 0 {
			t.Fatalf("%+v", l)
		}
		admin("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb", &l)
		if len(l.Items) != 1 || l.Items[0].Name != "web" {
			t.Fatalf("%+v", l)
		}
		var p podMetrics
		admin("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web", &p)
		if p.Kind != "PodMetrics" || len(p.Containers) != 1 || p.Containers[0].Usage.Cpu().Cmp(resource.MustParse("250m")) != 0 ||
			p.Containers[0].Usage.Memory().Value() != 5<<20 {
			t.Fatalf("%+v", p)
		}
	})
	t.Run("a user RBAC lets list pods in one namespace gets them", func(t *testing.T) {
		if _, err := r.env.Client.RbacV1().Roles("default").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "top"},
			Rules: []rbacv1.PolicyRule{{Verbs: []string{"list"}, APIGroups: []string{"metrics.k8s.io"}, Resources: []string{"pods"}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.env.Client.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "top"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "top"},
			Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "viewer"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second) // the API server's RBAC cache sees the binding soon after
		for {
			code, body := r.get(&front, "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods", "viewer")
			if code == 200 && strings.Contains(body, `"web"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d %s", code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		code, body := r.get(&front, nodes, "viewer")
		if code != 403 {
			t.Fatalf("%d %s", code, body)
		}
	})
}
