package cloudstream

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/test/k8senv"
)

// startMetricsReplica starts a cloudstream replica with the metrics API and forward on, and writes
// its replica Lease as cloudhub's ownership does.
func startMetricsReplica(t *testing.T, env *k8senv.Env, dir, id string) (*Module, *prometheus.Registry, context.CancelFunc) {
	t.Helper()
	m := New()
	m.StreamAddress, m.TunnelAddress, m.PKIDir = "127.0.0.1:0", "127.0.0.1:0", dir
	m.ClientCAFile = dir + "/" + pki.CACertName
	m.MetricsAPI.Enable, m.MetricsAPI.Address, m.MetricsAPI.ScrapeInterval = true, "127.0.0.1:0", time.Hour
	m.Forward = ForwardSettings{Enable: true, Address: "127.0.0.1:0", Identity: id, Namespace: "default", DialTimeout: 5 * time.Second}
	SetClient(m, env.Client)
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	if err := m.Start(ctx, &testHost{reg: reg}); err != nil {
		cancel()
		t.Fatal(err)
	}
	stop := func() { cancel(); _ = m.Stop(context.Background()) }
	t.Cleanup(stop)
	holder := id
	if _, err := env.Client.CoordinationV1().Leases("default").Create(ctx, &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "kedge-replica-" + id, Labels: map[string]string{"kedge.io/ownership": "replica"},
			Annotations: map[string]string{"kedge.io/forward-address": m.Forward.Address}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.mapi.rounds.Load() == 0 { // the first round (no tunnels) prunes the store; fill it after
		if time.Now().After(deadline) {
			t.Fatal("no scrape round within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return m, reg, stop
}

// fillUsage gives node two scrapes 10s apart: the node at 1 core, and pod default/<pod> (one
// container c) at 0.25 cores.
func fillUsage(m *Module, node, pod string, t0 time.Time) {
	k := containerKey{"default", pod, "c"}
	m.mapi.store.add(node, &scrape{Node: pt(100, t0, 1<<30), Containers: map[containerKey]point{k: pt(1, t0, 1)}})
	m.mapi.store.add(node, &scrape{Node: pt(110, t0.Add(10*time.Second), 1<<30),
		Containers: map[containerKey]point{k: pt(3.5, t0.Add(10*time.Second), 5<<20)}})
}

func TestKubectlTopThroughAnyReplicaShowsNodesAndPodsHeldByTheOthers(t *testing.T) {
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
	ca, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []string{"edge-a", "edge-b"} {
		if _, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n,
			Labels: map[string]string{"zone": n[len("edge-"):]}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	a, _, _ := startMetricsReplica(t, env, dir, "replica-a")
	b, _, stopB := startMetricsReplica(t, env, dir, "replica-b")
	deadline := time.Now().Add(30 * time.Second)
	for len(ForwardPeers(a)) != 1 { // the replica Lease reaches a's informer
		if time.Now().After(deadline) {
			t.Fatal("replica a did not see replica b's Lease within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	fillUsage(a, "edge-a", "web", t0) // replica a holds edge-a's tunnel, b holds edge-b's
	fillUsage(b, "edge-b", "db", t0)

	front, err := tls.LoadX509KeyPair(fp.CertFile, fp.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	rig := &apiRig{t: t, env: env, fp: fp, m: a, ca: ca, base: "https://" + a.MetricsAPI.Address}
	admin := func(path string, v any) {
		t.Helper()
		code, body := rig.get(&front, path, "admin", "system:masters")
		if code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if err := json.Unmarshal([]byte(body), v); err != nil {
			t.Fatalf("%s: %v in %s", path, err, body)
		}
	}
	const api = "/apis/metrics.k8s.io/v1beta1"
	t.Run("node list through replica a has both replicas' nodes", func(t *testing.T) {
		var l nodeMetricsList
		admin(api+"/nodes", &l)
		if len(l.Items) != 2 || l.Items[0].Name != "edge-a" || l.Items[1].Name != "edge-b" ||
			l.Items[1].Usage.Cpu().Cmp(resource.MustParse("1")) != 0 || l.Items[1].Window.Duration != 10*time.Second {
			t.Fatalf("%+v", l)
		}
	})
	t.Run("a node held by replica b by name through replica a", func(t *testing.T) {
		var nm nodeMetrics
		admin(api+"/nodes/edge-b", &nm)
		if nm.Kind != "NodeMetrics" || nm.Name != "edge-b" || nm.Usage.Memory().Value() != 1<<30 {
			t.Fatalf("%+v", nm)
		}
	})
	t.Run("labelSelector is applied after the merge", func(t *testing.T) {
		var l nodeMetricsList
		admin(api+"/nodes?labelSelector=zone%3Db", &l)
		if len(l.Items) != 1 || l.Items[0].Name != "edge-b" || l.Items[0].Labels["zone"] != "b" {
			t.Fatalf("%+v", l)
		}
	})
	t.Run("pods of both replicas' nodes, and one of b's by name", func(t *testing.T) {
		var l podMetricsList
		admin(api+"/namespaces/default/pods", &l)
		if len(l.Items) != 2 || l.Items[0].Name != "db" || l.Items[1].Name != "web" {
			t.Fatalf("%+v", l)
		}
		var p podMetrics
		admin(api+"/namespaces/default/pods/db", &p)
		if p.Kind != "PodMetrics" || len(p.Containers) != 1 || p.Containers[0].Usage.Cpu().Cmp(resource.MustParse("250m")) != 0 {
			t.Fatalf("%+v", p)
		}
	})
	if got := testutil.ToFloat64(a.fwd.peerQueries.WithLabelValues("ok")); got < 5 {
		t.Fatalf("replica a asked replica b %v times successfully, want at least 5", got)
	}

	t.Run("with replica b gone, a answers with its own nodes and counts the failure", func(t *testing.T) {
		stopB()
		var l nodeMetricsList
		admin(api+"/nodes", &l)
		if len(l.Items) != 1 || l.Items[0].Name != "edge-a" {
			t.Fatalf("%+v", l)
		}
		code, body := rig.get(&front, api+"/nodes/edge-b", "admin", "system:masters")
		if code != 404 {
			t.Fatalf("%d %s", code, body)
		}
		if got := testutil.ToFloat64(a.fwd.peerQueries.WithLabelValues("error")); got < 2 {
			t.Fatalf("peer errors %v, want 2", got)
		}
	})
}
