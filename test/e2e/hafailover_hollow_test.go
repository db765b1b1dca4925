package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/test/edgemark"
	"github.com/kedge-io/kedge/test/k8senv"
)

// Failover time with hollow nodes (test/edgemark): three cloudcores (built without -race, as they
// would run) behind HAProxy, HA_FAILOVER_HOLLOW hollow edge nodes (e.g. 1000) joined and connected
// through it; HA_FAILOVER_ROUNDS rounds (default 3) of kill -9 of the replica holding the most
// nodes, timed until every node is connected to a survivor, no ownership Lease names the dead replica
// and every node is Ready; then the replica is started again. Reports p50/p99/max and fails if a node
// turned NotReady (sampled every second). Runs only with HA_FAILOVER_HOLLOW set:
// HA_FAILOVER_HOLLOW=1000 go test -count=1 -v -timeout 60m -run TestFailoverTimeWithHollowNodes ./test/e2e/
func TestFailoverTimeWithHollowNodes(t *testing.T) {
	nodes, _ := strconv.Atoi(os.Getenv("HA_FAILOVER_HOLLOW"))
	if nodes <= 0 {
		t.Skip("set HA_FAILOVER_HOLLOW (e.g. 1000) to measure failover with hollow nodes")
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("HA_FAILOVER_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	needBinaries(t)
	if err := edgemark.CheckFDs(nodes, 1); err != nil {
		t.Fatal(err)
	}
	const bin = "cloudcore-norace"
	build := exec.Command("go", "build", "-o", filepath.Join(binDir, bin), "github.com/kedge-io/kedge/cmd/cloudcore")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cloudcore without -race: %v\n%s", err, out)
	}
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	ctx := context.Background()
	const ns = "kedge-failover-hollow"
	if _, err := k8s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var rs []*haReplica
	for i := range 3 {
		rs = append(rs, &haReplica{name: fmt.Sprintf("hf-cc-%d", i), hub: freePort(t), certs: freePort(t)})
	}
	lbHub, lbCerts := freePort(t), freePort(t)
	startReplica := func(r *haReplica) {
		r.d = start(t, bin, []string{
			"KEDGE_INSTANCE__NAME=" + r.name, "KEDGE_SHUTDOWNTIMEOUT=15s", "KEDGE_LOG__LEVEL=warn",
			"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(r.hub),
			"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(r.certs),
			"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + filepath.Join(dir, r.name, "pki"),
			"KEDGE_MODULES__CLOUDHUB__HEARTBEAT=5s",
			"KEDGE_MODULES__CLOUDHUB__CASECRET__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__CASECRET__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__CASECRET__NAMESPACE=" + ns,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__NAMESPACE=" + ns, "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__REPLICALEASEDURATION=6s",
			"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true", "KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__EDGECONTROLLER__NODEGRACEPERIOD=40s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__NAMESPACE=" + ns,
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__LEASEDURATION=4s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__RENEWDEADLINE=3s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__RETRYPERIOD=500ms",
		})
	}
	for _, r := range rs {
		startReplica(r)
		r.d.waitReady()
	}
	startHAProxy(t, lbHub, lbCerts, rs)
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--ca-secret", ns+"/"+kubestore.DefaultCASecretName,
		"--kubeconfig", k8s.Kubeconfig, "--uses", strconv.Itoa(nodes), "--ttl", "2h")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	sim, err := edgemark.Start(ctx, edgemark.Options{HubAddress: "127.0.0.1:" + strconv.Itoa(lbHub), CertServer: "127.0.0.1:" + strconv.Itoa(lbCerts),
		Tokens: []string{strings.TrimSpace(token)}, CertDir: filepath.Join(dir, "hollow"), Nodes: nodes, Prefix: "hf", Rate: 100,
		StatusPeriod: 10 * time.Second, Heartbeat: 5 * time.Second, BackoffMin: 200 * time.Millisecond, BackoffMax: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)

	readyCount := func() (ready, notReady int) {
		list, err := k8s.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: edgecontroller.EdgeLabel})
		if err != nil {
			return 0, 0
		}
		for _, n := range list.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						ready++
					} else {
						notReady++
					}
				}
			}
		}
		return ready, notReady
	}
	alive := map[string]*haReplica{}
	for _, r := range rs {
		alive[r.name] = r
	}
	settled := func() (bool, string) {
		sum := 0.0
		for _, r := range alive {
			sum += r.d.metric("kedge_cloudhub_connected_nodes")
		}
		if int(sum) != nodes {
			return false, fmt.Sprintf("connected %v of %d", sum, nodes)
		}
		leases, err := k8s.Client.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{LabelSelector: "kedge.io/ownership=node"})
		if err != nil {
			return false, err.Error()
		}
		held := 0
		for _, l := range leases.Items {
			if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
				continue
			}
			if alive[*l.Spec.HolderIdentity] == nil {
				return false, fmt.Sprintf("%s still held by %s", l.Name, *l.Spec.HolderIdentity)
			}
			held++
		}
		if held != nodes {
			return false, fmt.Sprintf("%d Leases held", held)
		}
		if ready, _ := readyCount(); ready != nodes {
			return false, fmt.Sprintf("%d of %d Ready", ready, nodes)
		}
		return true, ""
	}
	start := time.Now()
	waitFor(t, "every hollow node joined, connected and Ready", 20*time.Minute, settled)
	t.Logf("%d hollow nodes joined, connected and Ready after %s: %s", nodes, time.Since(start).Round(time.Second), sim.Stats())

	var mu sync.Mutex
	worstNotReady := 0
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for watchCtx.Err() == nil {
			if _, nr := readyCount(); nr > 0 {
				mu.Lock()
				worstNotReady = max(worstNotReady, nr)
				mu.Unlock()
			}
			select {
			case <-watchCtx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	defer func() { stopWatch(); wg.Wait() }()

	var times []time.Duration
	var moved []int
	for round := range rounds {
		var victim *haReplica
		most := -1.0
		for _, r := range rs {
			if n := r.d.metric("kedge_cloudhub_connected_nodes"); n > most {
				victim, most = r, n
			}
		}
		_ = victim.d.cmd.Process.Kill()
		killed := time.Now()
		<-victim.d.exited
		delete(alive, victim.name)
		deadline := killed.Add(5 * time.Minute)
		for {
			if ok, _ := settled(); ok {
				break
			}
			if time.Now().After(deadline) {
				_, why := settled()
				t.Fatalf("round %d: the %v nodes of %s were not all on survivors and Ready within 5m: %s", round, most, victim.name, why)
			}
			time.Sleep(100 * time.Millisecond)
		}
		took := time.Since(killed)
		times = append(times, took)
		moved = append(moved, int(most))
		t.Logf("round %d: killed %s holding %v nodes; all on survivors and Ready after %s", round, victim.name, most, took.Round(10*time.Millisecond))
		startReplica(victim)
		victim.d.waitReady()
		alive[victim.name] = victim
	}
	stopWatch()
	wg.Wait()
	sorted := append([]time.Duration(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	pct := func(p float64) time.Duration { return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))] }
	t.Logf("failover of %d hollow nodes over %d kills (nodes moved per kill %v): p50 %s, p99 %s, max %s; hollow nodes: %s",
		nodes, len(times), moved, pct(0.5).Round(10*time.Millisecond), pct(0.99).Round(10*time.Millisecond),
		sorted[len(sorted)-1].Round(10*time.Millisecond), sim.Stats())
	mu.Lock()
	defer mu.Unlock()
	if worstNotReady > 0 {
		t.Fatalf("up to %d nodes were NotReady during the failovers", worstNotReady)
	}
}
