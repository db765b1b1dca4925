package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/test/k8senv"
	"github.com/kedge-io/kedge/test/slow"
)

// cluster is a real control plane, a cloudcore with edgecontroller, and one joined edgecore.
type cluster struct {
	t                        *testing.T
	k8s                      *k8senv.Env
	dir, pkiDir              string
	hubPort, certPort        int
	cloud, edge              *daemon
	node, edgeConfig, edgeDB string
	metaServer               string
	edgeClient               kubernetes.Interface
	edgeEnv                  []string // appended to edgecore's environment (later entries win)
	cloudEnv                 []string // appended to cloudcore's environment (later entries win)

	// kubeletClient is the API server's kubelet client certificate (cloudstream's clientCAFile).
	kubeletClient *k8senv.KubeletClient
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterWith(t, nil)
}

// newClusterWith is newCluster with extra edgecore environment (e.g. edged in place of noruntime)
// and options for the kube-apiserver (extra flags, API aggregation).
func newClusterWith(t *testing.T, edgeEnv []string, opts ...k8senv.Option) *cluster {
	t.Helper()
	return newClusterIn(t, "", edgeEnv, opts...)
}

// newClusterIn is newClusterWith whose cloudcore keeps its CA in pkiDir (empty: a fresh folder), so a
// test can make the CA first and hand it to the kube-apiserver.
func newClusterIn(t *testing.T, pkiDir string, edgeEnv []string, opts ...k8senv.Option) *cluster {
	t.Helper()
	needBinaries(t)
	kc, err := k8senv.NewKubeletClient(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env, err := k8senv.Start(append([]k8senv.Option{k8senv.WithKubeletClient(kc)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	dir := t.TempDir()
	if pkiDir == "" {
		pkiDir = filepath.Join(dir, "pki")
	}
	c := &cluster{t: t, k8s: env, dir: dir, pkiDir: pkiDir, hubPort: freePort(t), certPort: freePort(t),
		node: "e2e-edge", edgeConfig: filepath.Join(dir, "edgecore.yaml"), edgeDB: filepath.Join(dir, "edge.db"), edgeEnv: edgeEnv}
	c.kubeletClient = kc
	c.startCloud()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", c.pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", c.node, "--data-dir", filepath.Join(dir, "edge"), "--config-out", c.edgeConfig,
		"--cert-port", strconv.Itoa(c.certPort), "--hub-port", strconv.Itoa(c.hubPort))
	if code != 0 {
		t.Fatalf("join: %d %s %s", code, out, stderr)
	}
	c.metaServer = "127.0.0.1:" + strconv.Itoa(freePort(t))
	c.startEdge()
	if c.edgeClient, err = kubernetes.NewForConfig(&rest.Config{Host: "https://" + c.metaServer, BearerTokenFile: filepath.Join(dir, "edge", "metaserver-admin.token"),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(dir, "edge", "metaserver.crt")}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) startCloud() {
	c.cloud = start(c.t, "cloudcore", append([]string{
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(c.hubPort),
		"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(c.certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + c.pkiDir,
		"KEDGE_MODULES__CLOUDHUB__HEARTBEAT=1s", "KEDGE_MODULES__CLOUDHUB__ACKTIMEOUT=2s",
		"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true",
		"KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + c.k8s.Kubeconfig,
		"KEDGE_MODULES__EDGECONTROLLER__NODEGRACEPERIOD=3s",
		"KEDGE_MODULES__EDGECONTROLLER__INVENTORYWAIT=2s",
		// Time scaled like the rest: the autonomy test runs kube-controller-manager with a 6 s
		// node-monitor-grace-period, inside which the Lease must be renewed (default 10 s).
		"KEDGE_MODULES__EDGECONTROLLER__LEASERENEWINTERVAL=1s",
	}, c.cloudEnv...))
	c.cloud.waitReady()
}

// startEdge runs edgecore on the joined config, its store kept across restarts, with noruntime as the
// pod consumer (no container runtime in this test).
func (c *cluster) startEdge() {
	c.edge = start(c.t, "edgecore", append([]string{
		"KEDGE_STORE__PATH=" + c.edgeDB,
		"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime",
		"KEDGE_MODULES__NORUNTIME__ENABLE=true",
		"KEDGE_MODULES__EDGED__ENABLE=false", // join turns edged on; these tests run no containers
		"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=" + c.metaServer,
	}, c.edgeEnv...), "--config", c.edgeConfig)
	c.edge.waitReadyOffline()
}

// waitReadyOffline waits until every module started, whether or not the cloud link is up (a module
// other than edgehub may still be unready offline, e.g. a mapper that registers through the cloud).
func (d *daemon) waitReadyOffline() {
	d.t.Helper()
	d.waitLog("msg=running")
}

// waitFor polls cond until it holds, giving up after limit scaled by KEDGE_TEST_TIMEOUT_SCALE.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	limit = slow.Scale(limit)
	deadline := time.Now().Add(limit)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, limit, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) nodeReady() (bool, string) {
	n, err := c.k8s.Client.CoreV1().Nodes().Get(context.Background(), c.node, metav1.GetOptions{})
	if err != nil {
		return false, err.Error()
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue, string(cond.Status) + " " + cond.Reason
		}
	}
	return false, "no Ready condition"
}

func (c *cluster) createPod(name string, refs ...string) *corev1.Pod {
	c.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: c.node, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}}}}
	for _, cm := range refs {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: cm, VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}})
		p.Spec.Containers[0].EnvFrom = append(p.Spec.Containers[0].EnvFrom, corev1.EnvFromSource{
			SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm + "-secret"}}})
	}
	p, err := c.k8s.Client.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// onEdge reads a pod from the edge's MetaServer (served from its SQLite store).
func (c *cluster) onEdge(name string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.edgeClient.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
}

func (c *cluster) waitOnEdge(name string, cond func(*corev1.Pod) bool) *corev1.Pod {
	c.t.Helper()
	var got *corev1.Pod
	waitFor(c.t, "pod "+name+" on the edge", 60*time.Second, func() (bool, string) {
		p, err := c.onEdge(name)
		if err != nil {
			return false, err.Error()
		}
		got = p
		return cond == nil || cond(p), p.ResourceVersion
	})
	return got
}

func (c *cluster) kubectl(args ...string) string {
	c.t.Helper()
	out, err := c.k8s.Kubectl(args...)
	if err != nil {
		c.t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return out
}

// The acceptance path of the Kubernetes work, with the real binaries: the node registers and is
// Ready; a bound pod is stored on the edge and its status from the edge reaches the API; offline the
// edge restarts and still serves its pods and config from SQLite; on reconnect it resyncs; another
// node is refused this node's Secret.
func TestEdgeNodeJoinsKubernetesRunsOfflineAcrossRestartsAndResyncs(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
	out := c.kubectl("get", "nodes", "--show-labels")
	if !strings.Contains(out, c.node) || !strings.Contains(out, "Ready") || !strings.Contains(out, "node-role.kubernetes.io/edge=") {
		t.Fatalf("kubectl get nodes:\n%s", out)
	}
	n, _ := c.k8s.Client.CoreV1().Nodes().Get(ctx, c.node, metav1.GetOptions{})
	if n.Status.Capacity.Cpu().IsZero() || n.Status.Capacity.Memory().IsZero() {
		t.Fatalf("node capacity not reported: %v", n.Status.Capacity)
	}

	// A pod bound to the node, with a ConfigMap and a Secret.
	if _, err := c.k8s.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Data: map[string]string{"v": "1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.k8s.Client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret"}, StringData: map[string]string{"pw": "s3cret"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p1 := c.createPod("p1", "app")
	c.waitOnEdge("p1", nil)
	waitFor(t, "pod status written by the edge", 60*time.Second, func() (bool, string) {
		out, _ := c.k8s.Kubectl("get", "pod", "p1", "--no-headers")
		return strings.Contains(out, "NoContainerRuntime"), out
	})
	cm, err := c.edgeClient.CoreV1().ConfigMaps("default").Get(ctx, "app", metav1.GetOptions{})
	if err != nil || cm.Data["v"] != "1" {
		t.Fatalf("configmap on the edge: %v %v", err, cm)
	}

	// Another node (a real node certificate from the same CA) asks cloudcore for this node's Secret.
	c.intruderIsRefused("app-secret")

	// Offline: cloudcore goes away; the edge restarts twice and serves what it has from SQLite.
	if code, _ := c.cloud.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("cloudcore exit %d", code)
	}
	for i := range 2 {
		if code, _ := c.edge.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Fatalf("edgecore exit %d (restart %d)", code, i)
		}
		c.startEdge()
		p := c.waitOnEdge("p1", nil)
		if p.UID != p1.UID {
			t.Fatalf("restart %d: pod on the edge has uid %s, want %s", i, p.UID, p1.UID)
		}
		if cm, err := c.edgeClient.CoreV1().ConfigMaps("default").Get(ctx, "app", metav1.GetOptions{}); err != nil || cm.Data["v"] != "1" {
			t.Fatalf("restart %d: configmap on the edge: %v", i, err)
		}
	}
	// Meanwhile the API changes: a new pod, a changed ConfigMap, and p1 is deleted.
	p2 := c.createPod("p2")
	if _, err := c.k8s.Client.CoreV1().ConfigMaps("default").Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Data: map[string]string{"v": "2"}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	grace := int64(60)
	if err := c.k8s.Client.CoreV1().Pods("default").Delete(ctx, "p1", metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.k8s.Client.CoreV1().Pods("default").Get(ctx, "p1", metav1.GetOptions{}); err != nil {
		t.Fatalf("p1 must wait for its node to confirm the deletion: %v", err)
	}

	// The link returns: new objects applied, the deletion completed through the edge, statuses pushed.
	c.startCloud()
	c.waitOnEdge("p2", func(p *corev1.Pod) bool { return p.UID == p2.UID })
	waitFor(t, "p1's deletion completed after its node confirmed it", 60*time.Second, func() (bool, string) {
		_, err := c.k8s.Client.CoreV1().Pods("default").Get(ctx, "p1", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	waitFor(t, "p1 removed from the edge", 60*time.Second, func() (bool, string) {
		_, err := c.onEdge("p1")
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	waitFor(t, "p2's status from the edge", 60*time.Second, func() (bool, string) {
		p, err := c.k8s.Client.CoreV1().Pods("default").Get(ctx, "p2", metav1.GetOptions{})
		return err == nil && p.Status.Reason == "NoContainerRuntime", fmt.Sprint(err)
	})
	waitFor(t, "node Ready again", 60*time.Second, c.nodeReady)
}

// intruderIsRefused joins a second node with a real token and certificate, dials cloudhub as that
// node, and asks for c.node's Secret: cloudcore answers forbidden and counts it.
func (c *cluster) intruderIsRefused(secret string) {
	t := c.t
	t.Helper()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", c.pkiDir)
	if code != 0 {
		t.Fatalf("token create: %s", stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := pki.Join(ctx, pki.JoinOptions{CertServer: "127.0.0.1:" + strconv.Itoa(c.certPort), Token: strings.TrimSpace(token), NodeName: "intruder", Dir: filepath.Join(c.dir, "intruder")})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(res.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := hub.Dial(ctx, hub.DialOptions{URL: "wss://127.0.0.1:" + strconv.Itoa(c.hubPort), NodeID: "intruder",
		TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := c.cloud.metric("kedge_edgecontroller_denied_total")
	q := message.New("intruder", "resource", message.OpQuery, "default/secret/"+secret)
	q.Header.Sync = true
	if err := conn.Send(ctx, q); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := conn.Receive(ctx)
		if err != nil {
			t.Fatalf("no answer to the intruder's query: %v", err)
		}
		if resp.Header.ParentID != q.Header.ID {
			continue // objects or inventory traffic for the new node
		}
		if resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), "forbidden") || strings.Contains(string(resp.Content), "s3cret") {
			t.Fatalf("intruder's query answered %s %s", resp.Route.Operation, resp.Content)
		}
		break
	}
	if after := c.cloud.metric("kedge_edgecontroller_denied_total"); after != before+1 {
		t.Fatalf("denied_total %v -> %v, want +1", before, after)
	}
}
