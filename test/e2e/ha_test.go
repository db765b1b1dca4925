package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/test/k8senv"
)

// haReplica is one cloudcore of the HA cluster.
type haReplica struct {
	name       string
	hub, certs int
	d          *daemon
}

// haEdge is one joined edgecore.
type haEdge struct {
	node   string
	d      *daemon
	client kubernetes.Interface // its MetaServer
}

// startHAProxy runs Debian's haproxy in TCP mode in front of the replicas' hub and certificate ports.
func startHAProxy(t *testing.T, hubPort, certPort int, rs []*haReplica) {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("this test needs Debian's haproxy (hack/test.sh installs it): apt-get install haproxy")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  retries 3\n  option redispatch\n")
	for _, fe := range []struct {
		name string
		port int
		of   func(*haReplica) int
	}{{"hub", hubPort, func(r *haReplica) int { return r.hub }}, {"certs", certPort, func(r *haReplica) int { return r.certs }}} {
		fmt.Fprintf(&b, "frontend %s\n  bind 127.0.0.1:%d\n  default_backend %s_be\nbackend %s_be\n  balance roundrobin\n", fe.name, fe.port, fe.name, fe.name)
		for _, r := range rs {
			fmt.Fprintf(&b, "  server %s 127.0.0.1:%d check inter 300ms fall 1 rise 2\n", r.name, fe.of(r))
		}
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", cfg, "-db")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", out)
		}
	})
}

func nodeReadyStatus(k kubernetes.Interface, node string) string {
	n, err := k.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		return "error: " + err.Error()
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return string(c.Status)
		}
	}
	return "none"
}

// The acceptance of cloudcore HA with real binaries: three cloudcores behind HAProxy (TCP mode, hub
// and certificate ports) sharing the CA Secret, recording node ownership and electing leaders; three
// edgecores joined through HAProxy. kill -9 of the replica holding the most nodes: every node
// reconnects to a survivor (the ownership Leases say so), stays Ready, and pods created after the
// kill reach their nodes. Then SIGTERM of the survivor holding more nodes drains them to the last
// replica. No node turns NotReady at any point.
func TestThreeCloudcoresBehindHAProxyLoseNoNodeToKillOrSIGTERM(t *testing.T) {
	needBinaries(t)
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	ctx := context.Background()
	const ns = "kedge-ha"
	if _, err := k8s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var rs []*haReplica
	for i := range 3 {
		rs = append(rs, &haReplica{name: fmt.Sprintf("cc-%d", i), hub: freePort(t), certs: freePort(t)})
	}
	lbHub, lbCerts := freePort(t), freePort(t)
	startReplica := func(r *haReplica) {
		r.d = start(t, "cloudcore", []string{
			"KEDGE_INSTANCE__NAME=" + r.name, "KEDGE_SHUTDOWNTIMEOUT=15s",
			"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(r.hub),
			"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(r.certs),
			"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + filepath.Join(dir, r.name, "pki"),
			"KEDGE_MODULES__CLOUDHUB__HEARTBEAT=1s", "KEDGE_MODULES__CLOUDHUB__ACKTIMEOUT=2s",
			"KEDGE_MODULES__CLOUDHUB__DRAIN=3s",
			"KEDGE_MODULES__CLOUDHUB__CASECRET__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__CASECRET__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__CASECRET__NAMESPACE=" + ns,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__NAMESPACE=" + ns, "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__REPLICALEASEDURATION=6s",
			"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true", "KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__EDGECONTROLLER__NODEGRACEPERIOD=10s", "KEDGE_MODULES__EDGECONTROLLER__INVENTORYWAIT=2s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__NAMESPACE=" + ns,
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__LEASEDURATION=4s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__RENEWDEADLINE=3s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__RETRYPERIOD=500ms",
		})
	}
	for _, r := range rs { // one at a time: the first creates the CA Secret, the others load it
		startReplica(r)
		r.d.waitReady()
	}
	startHAProxy(t, lbHub, lbCerts, rs)

	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--ca-secret", ns+"/"+kubestore.DefaultCASecretName,
		"--kubeconfig", k8s.Kubeconfig, "--uses", "3")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	var edges []*haEdge
	for i := range 3 {
		e := &haEdge{node: fmt.Sprintf("ha-edge-%d", i)}
		edir := filepath.Join(dir, e.node)
		conf := filepath.Join(dir, e.node+".yaml")
		waitFor(t, "join of "+e.node+" through haproxy", 60*time.Second, func() (bool, string) {
			code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
				"--node-name", e.node, "--data-dir", edir, "--config-out", conf,
				"--cert-port", strconv.Itoa(lbCerts), "--hub-port", strconv.Itoa(lbHub))
			return code == 0, out + stderr
		})
		meta := "127.0.0.1:" + strconv.Itoa(freePort(t))
		e.d = start(t, "edgecore", []string{
			"KEDGE_STORE__PATH=" + filepath.Join(dir, e.node+".db"),
			"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
			"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
			"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime", "KEDGE_MODULES__NORUNTIME__ENABLE=true",
			"KEDGE_MODULES__EDGED__ENABLE=false",
			"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=" + meta,
		}, "--config", conf)
		e.d.waitReadyOffline()
		if e.client, err = kubernetes.NewForConfig(&rest.Config{Host: "https://" + meta, BearerTokenFile: filepath.Join(edir, "metaserver-admin.token"),
			TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(edir, "metaserver.crt")}}); err != nil {
			t.Fatal(err)
		}
		edges = append(edges, e)
	}
	allReady := func() (bool, string) {
		var not []string
		for _, e := range edges {
			if s := nodeReadyStatus(k8s.Client, e.node); s != "True" {
				not = append(not, e.node+"="+s)
			}
		}
		return len(not) == 0, strings.Join(not, " ")
	}
	waitFor(t, "every node Ready", 90*time.Second, allReady)

	// From here on no node may turn NotReady (False or Unknown) — sampled every 200 ms.
	var mu sync.Mutex
	var notReady []string
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for watchCtx.Err() == nil {
			for _, e := range edges {
				if s := nodeReadyStatus(k8s.Client, e.node); s == "False" || s == "Unknown" {
					mu.Lock()
					notReady = append(notReady, e.node+"="+s)
					mu.Unlock()
				}
			}
			select {
			case <-watchCtx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	defer func() { stopWatch(); wg.Wait() }()

	holders := func() map[string]string { // node -> holder in its ownership Lease
		out := map[string]string{}
		for _, e := range edges {
			l, err := k8s.Client.CoordinationV1().Leases(ns).Get(ctx, cloudhub.NodeLeaseName(e.node), metav1.GetOptions{})
			if err == nil && l.Spec.HolderIdentity != nil {
				out[e.node] = *l.Spec.HolderIdentity
			}
		}
		return out
	}
	waitFor(t, "every node's ownership recorded", 30*time.Second, func() (bool, string) {
		h := holders()
		return len(h) == 3, fmt.Sprint(h)
	})
	alive := map[string]*haReplica{}
	for _, r := range rs {
		alive[r.name] = r
	}
	// connected sums what the replicas still running report, and checks the Leases name only them.
	settled := func(want int) (bool, string) {
		sum := 0.0
		for _, r := range alive {
			sum += r.d.metric("kedge_cloudhub_connected_nodes")
		}
		h := holders()
		for n, holder := range h {
			if alive[holder] == nil {
				return false, fmt.Sprintf("%s still held by %s; connected %v", n, holder, sum)
			}
		}
		return int(sum) == want && len(h) == want, fmt.Sprintf("connected %v, holders %v", sum, h)
	}
	waitFor(t, "the nodes settled", 30*time.Second, func() (bool, string) { return settled(3) })

	// kill -9 the replica holding the most nodes.
	var victim *haReplica
	most := -1.0
	for _, r := range rs {
		if n := r.d.metric("kedge_cloudhub_connected_nodes"); n > most {
			victim, most = r, n
		}
	}
	t.Logf("killing %s (holds %v nodes): %v", victim.name, most, holders())
	_ = victim.d.cmd.Process.Kill()
	<-victim.d.exited
	delete(alive, victim.name)
	killed := time.Now()
	waitFor(t, "every node on a surviving replica", 60*time.Second, func() (bool, string) { return settled(3) })
	t.Logf("all nodes held by survivors %s after kill -9: %v", time.Since(killed).Round(100*time.Millisecond), holders())
	waitFor(t, "every node Ready after the kill", 60*time.Second, allReady)

	// Pods created after the kill reach their nodes (through whichever replica holds each).
	for _, e := range edges {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "after-kill-" + e.node, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: e.node, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}}}}
		if _, err := k8s.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range edges {
		waitFor(t, "pod after-kill-"+e.node+" on its node", 60*time.Second, func() (bool, string) {
			c, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := e.client.CoreV1().Pods("default").Get(c, "after-kill-"+e.node, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return true, ""
		})
	}

	// SIGTERM the survivor holding more nodes: it drains them to the last replica.
	var term *haReplica
	most = -1
	for _, r := range alive {
		if n := r.d.metric("kedge_cloudhub_connected_nodes"); n > most {
			term, most = r, n
		}
	}
	held := term.d.metric("kedge_cloudhub_connected_nodes")
	if err := term.d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-term.d.exited
	delete(alive, term.name)
	if !strings.Contains(term.d.stderr.String(), "draining") && held > 0 {
		t.Fatalf("%s held %v nodes and did not drain:\n%s", term.name, held, term.d.stderr)
	}
	waitFor(t, "every node on the last replica", 60*time.Second, func() (bool, string) { return settled(3) })
	waitFor(t, "every node Ready after the SIGTERM", 60*time.Second, allReady)

	stopWatch()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(notReady) > 0 {
		t.Fatalf("nodes turned NotReady during the failovers: %v", notReady)
	}
}
