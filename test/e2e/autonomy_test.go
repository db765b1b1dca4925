package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/faultproxy"
	"github.com/kedge-io/kedge/test/k8senv"
)

// edgeNode is one more edgecore with edged joined to an edgedCluster, its cloud link through a fault
// proxy the test cuts.
type edgeNode struct {
	e      *edgedCluster
	name   string
	config string
	env    []string
	proxy  *faultproxy.Proxy
	d      *daemon
}

// joinEdge joins another edge node (its own token, store, edged root, MetaServer and broker ports)
// whose edgehub dials cloudhub through a fault proxy.
func (e *edgedCluster) joinEdge(name string) *edgeNode {
	t := e.t
	t.Helper()
	proxy, err := faultproxy.New("127.0.0.1:" + strconv.Itoa(e.hubPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", e.pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	dir := filepath.Join(e.dir, name)
	n := &edgeNode{e: e, name: name, config: filepath.Join(dir, "edgecore.yaml"), proxy: proxy}
	code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", name, "--data-dir", dir, "--config-out", n.config,
		"--cert-port", strconv.Itoa(e.certPort), "--hub-port", strconv.Itoa(e.hubPort))
	if code != 0 {
		t.Fatalf("join %s: %d %s %s", name, code, out, stderr)
	}
	ep, _ := crienv.Start(t)
	n.env = []string{
		"KEDGE_STORE__PATH=" + filepath.Join(dir, "edge.db"),
		"KEDGE_MODULES__EDGEHUB__SERVER=" + proxy.Addr(),
		"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
		"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__NORUNTIME__ENABLE=false",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=edged",
		"KEDGE_MODULES__EDGED__ENABLE=true",
		"KEDGE_MODULES__EDGED__CRIENDPOINT=" + ep,
		"KEDGE_MODULES__EDGED__ROOTDIR=" + filepath.Join(dir, "edged"),
		"KEDGE_MODULES__EDGED__PODSANDBOXIMAGE=" + crienv.Pause,
		"KEDGE_MODULES__EDGED__STATUSPERIOD=500ms",
		"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
	}
	n.d = start(t, "edgecore", n.env, "--config", n.config)
	n.d.waitReadyOffline()
	return n
}

func (n *edgeNode) ready() (bool, string) {
	node, err := n.e.k8s.Client.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
	if err != nil {
		return false, err.Error()
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue && !hasTaint(node, corev1.TaintNodeUnreachable), fmt.Sprintf("%s %s taints %v", c.Status, c.Reason, node.Spec.Taints)
		}
	}
	return false, "no Ready condition"
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == corev1.TaintEffectNoExecute {
			return true
		}
	}
	return false
}

// get answers an admin endpoint with its status code and body.
func (d *daemon) get(path string) (int, string) {
	d.t.Helper()
	resp, err := http.Get("http://" + d.admin + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// cut takes the node offline: every open connection through its proxy is closed, new ones refused.
func (n *edgeNode) cut() { n.proxy.Refuse(true); n.proxy.Cut() }

func (n *edgeNode) heal() { n.proxy.Refuse(false) }

// sleeper is a pod on node whose one container sleeps; terminationGracePeriodSeconds 2.
func (e *edgedCluster) sleeper(name, node string) {
	e.t.Helper()
	e.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels: {e2e: autonomy}
spec:
  nodeName: %s
  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: localhost/busybox:local
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
`, name, node))
}

func disrupted(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func unlimited(p *corev1.Pod) bool {
	n := 0
	for _, t := range p.Spec.Tolerations {
		if (t.Key == corev1.TaintNodeUnreachable || t.Key == corev1.TaintNodeNotReady) && t.Effect == corev1.TaintEffectNoExecute {
			if t.TolerationSeconds != nil {
				return false
			}
			n++
		}
	}
	return n == 2
}

// Offline autonomy against the real node lifecycle and taint-eviction controllers
// (kube-controller-manager), with real edgecore + edged + containerd, time scaled down: the node
// monitor grace period is 6 s and the API server's default unreachable/not-ready tolerations 5 s
// (300 s in a default cluster; E2E_REAL_AUTONOMY=1 runs the real 300 s / 50 s and a 7-minute
// outage). Two edge nodes go offline at the same moment, behind fault proxies; a third stays connected
// (a cluster whose every node is unreachable makes the node lifecycle controller assume a
// control-plane outage and evict nothing). The node without autonomy has its pods evicted by the
// taint-eviction controller, and on reconnect its edge kills them; the node labelled
// kedge.io/autonomy=true, offline several times that eviction window, keeps its pods — same pod UIDs,
// same container IDs in containerd — and nothing is evicted after it reconnects. While offline its
// edgecore's /readyz stays 200, /readyz/cloud is 503 and kedge_edgehub_connected is 0.
func TestAutonomousEdgeNodeKeepsItsPodsOfflineWhileANodeWithoutAutonomyIsEvicted(t *testing.T) {
	realTiming := os.Getenv("E2E_REAL_AUTONOMY") != ""
	tolerationSecs, grace, outage := "5", "6s", 3 // outage: multiples of the measured eviction window
	if realTiming {
		tolerationSecs, grace = "300", "50s"
	}
	e := newEdgedCluster(t, k8senv.APIServerFlag("default-unreachable-toleration-seconds", tolerationSecs),
		k8senv.APIServerFlag("default-not-ready-toleration-seconds", tolerationSecs))
	e.startControllerManager("--node-monitor-period", "1s", "--node-monitor-grace-period", grace)
	ctx := context.Background()

	auto, plain := e.joinEdge("e2e-auto"), e.joinEdge("e2e-plain")
	for _, n := range []*edgeNode{auto, plain} {
		waitFor(t, n.name+" Ready", 90*time.Second, n.ready)
	}
	e.kubectl("label", "node", auto.name, "kedge.io/autonomy=true")
	for _, p := range []struct{ name, node string }{{"auto-1", auto.name}, {"auto-2", auto.name}, {"plain-1", plain.name}} {
		e.sleeper(p.name, p.node)
	}
	type kept struct {
		uid types.UID
		id  string
	}
	before := map[string]kept{}
	for _, name := range []string{"auto-1", "auto-2", "plain-1"} {
		e.waitKubectlRunning(name, "0")
		p, err := e.pod(name)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = kept{uid: p.UID, id: e.running(string(p.UID), "c")["c"]}
	}
	for _, name := range []string{"auto-1", "auto-2"} {
		waitFor(t, name+" tolerates its node being unreachable without limit", 30*time.Second, func() (bool, string) {
			p, err := e.pod(name)
			if err != nil {
				return false, err.Error()
			}
			return unlimited(p), fmt.Sprint(p.Spec.Tolerations)
		})
	}
	if p, _ := e.pod("plain-1"); unlimited(p) {
		t.Fatalf("the pod on the node without autonomy was given unlimited tolerations: %v", p.Spec.Tolerations)
	}
	if code, body := auto.d.get("/readyz/cloud"); code != http.StatusOK {
		t.Fatalf("/readyz/cloud while connected: %d %s", code, body)
	}

	// Both offline at once.
	cutAt := time.Now()
	auto.cut()
	plain.cut()
	waitFor(t, "the edge knows it is offline", 30*time.Second, func() (bool, string) {
		return auto.d.metric("kedge_edgehub_connected") == 0, "connected"
	})
	code, body := auto.d.get("/readyz/cloud")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "edgehub") {
		t.Fatalf("/readyz/cloud offline: %d %s, want 503 naming edgehub", code, body)
	}
	if code, body := auto.d.get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz offline: %d %s, want 200 (the node serves its pods offline)", code, body)
	}

	waitFor(t, "the taint-eviction controller evicts plain-1", 10*time.Minute, func() (bool, string) {
		p, err := e.pod("plain-1")
		if apierrors.IsNotFound(err) {
			return true, "gone"
		}
		if err != nil {
			return false, err.Error()
		}
		return p.DeletionTimestamp != nil, fmt.Sprintf("deletionTimestamp %v conditions %v", p.DeletionTimestamp, p.Status.Conditions)
	})
	window := time.Since(cutAt)
	if p, err := e.pod("plain-1"); err == nil && !disrupted(p) {
		t.Fatalf("plain-1 deleted, but not by the taint-eviction controller: %v", p.Status.Conditions)
	}
	t.Logf("the node without autonomy lost its pod %s after the cut", window.Round(time.Second))
	hold := time.Duration(outage) * window
	if realTiming {
		hold = 7 * time.Minute
	}
	// The autonomous node stays offline for several eviction windows; its edgecore stays ready and its
	// pods stay, in the API and in containerd.
	for time.Since(cutAt) < hold {
		for _, name := range []string{"auto-1", "auto-2"} {
			p, err := e.pod(name)
			if err != nil || p.DeletionTimestamp != nil || disrupted(p) {
				t.Fatalf("%s on the autonomous node after %s offline: %v %+v", name, time.Since(cutAt).Round(time.Second), err, p)
			}
		}
		if code, body := auto.d.get("/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz offline after %s: %d %s", time.Since(cutAt).Round(time.Second), code, body)
		}
		time.Sleep(time.Second)
	}
	n, err := e.k8s.Client.CoreV1().Nodes().Get(ctx, auto.name, metav1.GetOptions{})
	if err != nil || !hasTaint(n, corev1.TaintNodeUnreachable) {
		t.Fatalf("the autonomous node was not tainted unreachable while offline (the test proves nothing): %v %v", err, n.Spec.Taints)
	}
	t.Logf("the autonomous node was offline %s (%.1f eviction windows), tainted %v", time.Since(cutAt).Round(time.Second),
		float64(time.Since(cutAt))/float64(window), n.Spec.Taints)

	// Reconnect both.
	auto.heal()
	plain.heal()
	waitFor(t, auto.name+" Ready and untainted again", 2*time.Minute, auto.ready)
	waitFor(t, "plain-1 killed by its edge on reconnect and gone", 2*time.Minute, func() (bool, string) {
		_, err := e.pod("plain-1")
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if code, body := auto.d.get("/readyz/cloud"); code != http.StatusOK {
		t.Fatalf("/readyz/cloud after reconnecting: %d %s", code, body)
	}
	if auto.d.metric("kedge_edgehub_connected") != 1 {
		t.Fatal("kedge_edgehub_connected is not 1 after reconnecting")
	}
	for _, name := range []string{"auto-1", "auto-2"} {
		e.waitKubectlRunning(name, "0")
	}
	// Nothing is evicted after the reconnect either: a few more node-monitor periods, then the same
	// pods, the same containers.
	settle := time.Now()
	waitFor(t, "the node lifecycle controller saw the node healthy for a while", time.Minute, func() (bool, string) {
		ok, detail := auto.ready()
		return ok && time.Since(settle) > 10*time.Second, detail
	})
	for _, name := range []string{"auto-1", "auto-2"} {
		p, err := e.pod(name)
		if err != nil || p.DeletionTimestamp != nil || disrupted(p) || p.UID != before[name].uid {
			t.Fatalf("%s after reconnecting: %v %+v", name, err, p)
		}
		if id := e.running(string(p.UID), "c")["c"]; id != before[name].id {
			t.Fatalf("%s's container is %s, was %s before the outage", name, id, before[name].id)
		}
	}
}
