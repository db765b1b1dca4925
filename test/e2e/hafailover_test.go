package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/test/k8senv"
)

// Failover time, measured: three cloudcores behind HAProxy, HA_FAILOVER_EDGES real edgecores
// (default 6), HA_FAILOVER_ROUNDS rounds (default 10) of: kill -9 the replica holding the most
// nodes, time until every node is held by a survivor (its ownership Lease names a live replica, the
// survivors' connected_nodes add up) and Ready, then start the killed replica again. Reports p50/p99
// and fails if a node turned NotReady at any point. Runs only with HA_FAILOVER_ROUNDS set (it
// takes minutes): HA_FAILOVER_ROUNDS=10 go test -run TestFailoverTimeOfAKilledReplica ./test/e2e/
func TestFailoverTimeOfAKilledReplica(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("HA_FAILOVER_ROUNDS"))
	if rounds <= 0 {
		t.Skip("set HA_FAILOVER_ROUNDS (e.g. 10) to measure failover times")
	}
	nEdges := 6
	if v, err := strconv.Atoi(os.Getenv("HA_FAILOVER_EDGES")); err == nil && v > 0 {
		nEdges = v
	}
	needBinaries(t)
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	ctx := context.Background()
	const ns = "kedge-failover"
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
	for _, r := range rs {
		startReplica(r)
		r.d.waitReady()
	}
	startHAProxy(t, lbHub, lbCerts, rs)
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--ca-secret", ns+"/"+kubestore.DefaultCASecretName,
		"--kubeconfig", k8s.Kubeconfig, "--uses", strconv.Itoa(nEdges))
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	var nodes []string
	for i := range nEdges {
		node := fmt.Sprintf("fo-edge-%d", i)
		edir := filepath.Join(dir, node)
		conf := filepath.Join(dir, node+".yaml")
		waitFor(t, "join of "+node, 60*time.Second, func() (bool, string) {
			code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
				"--node-name", node, "--data-dir", edir, "--config-out", conf,
				"--cert-port", strconv.Itoa(lbCerts), "--hub-port", strconv.Itoa(lbHub))
			return code == 0, out + stderr
		})
		d := start(t, "edgecore", []string{
			"KEDGE_STORE__PATH=" + filepath.Join(dir, node+".db"),
			"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
			"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
			"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime", "KEDGE_MODULES__NORUNTIME__ENABLE=true",
			"KEDGE_MODULES__EDGED__ENABLE=false",
			"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
		}, "--config", conf)
		d.waitReadyOffline()
		nodes = append(nodes, node)
	}
	allReady := func() (bool, string) {
		var not []string
		for _, n := range nodes {
			if s := nodeReadyStatus(k8s.Client, n); s != "True" {
				not = append(not, n+"="+s)
			}
		}
		return len(not) == 0, strings.Join(not, " ")
	}
	waitFor(t, "every node Ready", 120*time.Second, allReady)

	var mu sync.Mutex
	var notReady []string
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for watchCtx.Err() == nil {
			for _, n := range nodes {
				if s := nodeReadyStatus(k8s.Client, n); s == "False" || s == "Unknown" {
					mu.Lock()
					notReady = append(notReady, n+"="+s)
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

	holders := func() map[string]string {
		out := map[string]string{}
		for _, n := range nodes {
			l, err := k8s.Client.CoordinationV1().Leases(ns).Get(ctx, cloudhub.NodeLeaseName(n), metav1.GetOptions{})
			if err == nil && l.Spec.HolderIdentity != nil {
				out[n] = *l.Spec.HolderIdentity
			}
		}
		return out
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
		h := holders()
		for n, holder := range h {
			if alive[holder] == nil {
				return false, fmt.Sprintf("%s still held by %s; connected %v", n, holder, sum)
			}
		}
		if int(sum) != len(nodes) || len(h) != len(nodes) {
			return false, fmt.Sprintf("connected %v, holders %v", sum, h)
		}
		return allReady()
	}
	waitFor(t, "the nodes settled", 60*time.Second, settled)

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
		deadline := killed.Add(120 * time.Second)
		for {
			if ok, _ := settled(); ok {
				break
			}
			if time.Now().After(deadline) {
				_, why := settled()
				t.Fatalf("round %d: the nodes of %s were not all held by survivors and Ready within 120s: %s", round, victim.name, why)
			}
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(killed)
		times = append(times, took)
		moved = append(moved, int(most))
		t.Logf("round %d: killed %s holding %v nodes; all on survivors and Ready after %s", round, victim.name, most, took.Round(10*time.Millisecond))
		startReplica(victim) // back for the next round
		victim.d.waitReady()
		alive[victim.name] = victim
		waitFor(t, "the nodes settled", 60*time.Second, settled)
	}
	stopWatch()
	wg.Wait()
	sorted := append([]time.Duration(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	pct := func(p float64) time.Duration { return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))] }
	t.Logf("failover over %d kills of the replica holding the most of %d nodes (nodes moved per kill %v): p50 %s, p99 %s, max %s",
		len(times), len(nodes), moved, pct(0.5).Round(10*time.Millisecond), pct(0.99).Round(10*time.Millisecond), sorted[len(sorted)-1].Round(10*time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	if len(notReady) > 0 {
		t.Fatalf("nodes turned NotReady during the failovers: %v", notReady)
	}
}
