package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-io/kedge/test/k8senv"
)

// Kedge's edgecore under KubeEdge v1.23.1's cloudcore keeps its node Lease in kube-node-lease through
// the hub, as KubeEdge's edged does (query, then insert or update), so kube-controller-manager's node
// lifecycle controller (grace period 20 s here) keeps the Node Ready although the edge reports its
// status only every 5 minutes: the Lease's renewTime moves every few seconds, holder the node, and
// Ready stays True over three grace periods. Without the Lease the node would turn Unknown after 20 s.
func TestKedgeEdgecoreKeepsItsNodeLeaseThroughUpstreamCloudcoreSoTheNodeStaysReadyBetweenRareStatusReports(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "cloudcore")
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kcfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(kcfg)
	const grace = 20 * time.Second
	runControllerManager(t, env, "--node-monitor-period", "1s", "--node-monitor-grace-period", grace.String())
	hubPort, certPort, cloudLog := upstreamCloudcore(t, keDir, env)
	token := upstreamToken(t, kc)

	node := fmt.Sprintf("kedge-lease-%d", os.Getpid()%100000)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgecore.yaml")
	waitFor(t, "edgecore join with the upstream token", time.Minute, func() (bool, string) {
		code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", token,
			"--node-name", node, "--data-dir", dir, "--config-out", cfg,
			"--cert-port", strconv.Itoa(certPort), "--hub-port", strconv.Itoa(hubPort))
		return code == 0, fmt.Sprintf("exit %d: %s %s", code, out, stderr)
	})
	edge := start(t, "edgecore", []string{
		"KEDGE_STORE__PATH=" + filepath.Join(dir, "edge.db"),
		"KEDGE_MODULES__NODESTATUS__INTERVAL=5m", // one report at start (the registration), then none during the test
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=5s",
		"KEDGE_MODULES__EDGEHUB__LEASEDURATION=8s", // renewed every 2 s
		"KEDGE_MODULES__NORUNTIME__ENABLE=true",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime",
		"KEDGE_MODULES__EDGED__ENABLE=false",
	}, "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Kedge edgecore log (last 8 KiB):\n%s", tail(edge.stderr.String(), 8<<10))
			t.Logf("upstream cloudcore's lease lines:\n%s", grepLines(cloudLog.String(), "lease", 20))
		}
	})
	ctx := context.Background()
	ready := func() (bool, string) {
		n, err := kc.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, fmt.Sprintf("Ready=%s (%s) heartbeat %s", c.Status, c.Reason, c.LastHeartbeatTime)
			}
		}
		return false, "no Ready condition"
	}
	waitFor(t, "Node "+node+" registered through upstream cloudcore and Ready", 3*time.Minute, ready)
	var first time.Time
	waitFor(t, "the node's Lease in kube-node-lease, held by the node", 2*time.Minute, func() (bool, string) {
		l, err := kc.CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != node || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil || *l.Spec.LeaseDurationSeconds != 8 {
			return false, fmt.Sprintf("lease spec %+v", l.Spec)
		}
		first = l.Spec.RenewTime.Time
		return true, ""
	})
	// Over three grace periods the Node stays Ready and the Lease keeps being renewed.
	until := time.Now().Add(3 * grace)
	renewals := 0
	last := first
	for time.Now().Before(until) {
		if ok, why := ready(); !ok {
			t.Fatalf("the Node left Ready while its edge was connected and renewing its Lease: %s", why)
		}
		l, err := kc.CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Spec.RenewTime.After(last) {
			renewals++
			last = l.Spec.RenewTime.Time
		}
		time.Sleep(time.Second)
	}
	if renewals < 3 {
		t.Fatalf("the Lease was renewed %d times in %s, want it renewed every few seconds", renewals, 3*grace)
	}
	if n := edge.metric("kedge_edgehub_kubeedge_lease_total", `operation="error"`); n != 0 {
		t.Errorf("%v lease answers from upstream cloudcore were errors", n)
	}
	if bad := grepLines(cloudLog.String(), "process failure", 10); bad != "" {
		t.Errorf("upstream cloudcore failed to process messages of the edge:\n%s", bad)
	}
}
