package edgecontroller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// newWritesRig is newRig with leaseRenewInterval and nodeStatusUpdateFrequency set.
func newWritesRig(t *testing.T, lease, status string) *rig {
	t.Helper()
	return &rig{ctrlrig.Start(t, edgecontroller.Name, map[string]any{
		"nodeGracePeriod": "400ms", "inventoryWait": "300ms", "sendServices": false,
		"leaseDuration": "2h", "leaseRenewInterval": lease, "nodeStatusUpdateFrequency": status,
	}, ctrlrig.NamespaceName(t, 50))}
}

func writes(t *testing.T, r *rig, name, result string) float64 {
	t.Helper()
	fams, err := r.H.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestIdleReportsWriteNeitherNodeNorLeaseUntilSomethingChangesOrIsDue proves what an idle node costs
// the API: once its Node is Ready in the informer, an unchanged report writes nothing (the Node's and
// the Lease's resourceVersions stay), a report that changes capacity is written at once, and a node
// whose Node is not Ready (set Unknown after a disconnection) is written on its first report again.
func TestIdleReportsWriteNeitherNodeNorLeaseUntilSomethingChangesOrIsDue(t *testing.T) {
	r := newWritesRig(t, "1h", "1h")
	ctx := context.Background()
	node := r.Node("idle")
	r.join(node)
	rep := edgecontroller.NodeReport{NodeName: node, Capacity: map[string]string{"cpu": "2", "memory": "2Gi"}, OS: "linux",
		Architecture: "amd64", KernelVersion: "6.1", OSImage: "Debian GNU/Linux 12 (bookworm)", Addresses: []string{"192.0.2.7"}}
	// Until the informer has the Ready Node, reports are written; then they are skipped.
	deadline := time.Now().Add(30 * time.Second)
	for writes(t, r, "kedge_edgecontroller_node_status_writes_total", "skipped") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no unchanged report was skipped within 30s")
		}
		if resp := r.report(node, rep); resp.op == message.OpError {
			t.Fatalf("report refused: %s", resp.content)
		}
	}
	n := getNode(t, node)
	lease, err := ctrlrig.Env.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		rep.ReportedAt = time.Now() // a new report, same facts
		if resp := r.report(node, rep); resp.op == message.OpError {
			t.Fatalf("report refused: %s", resp.content)
		}
	}
	if got := getNode(t, node); got.ResourceVersion != n.ResourceVersion {
		t.Errorf("unchanged reports wrote the Node: resourceVersion %s -> %s", n.ResourceVersion, got.ResourceVersion)
	}
	if got, err := ctrlrig.Env.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{}); err != nil || got.ResourceVersion != lease.ResourceVersion {
		t.Errorf("reports within leaseRenewInterval renewed the Lease: %v", err)
	}

	rep.Capacity["cpu"] = "4"
	if resp := r.report(node, rep); resp.op == message.OpError {
		t.Fatalf("report refused: %s", resp.content)
	}
	if got := getNode(t, node).Status.Capacity[corev1.ResourceCPU]; got.Cmp(resource.MustParse("4")) != 0 {
		t.Errorf("a changed capacity was not written: cpu = %s", got.String())
	}

	// Disconnected past the grace period: Unknown; the first report after reconnecting writes Ready.
	r.Event(node, message.OpDisconnected, nil)
	waitNode(t, node, func(n *corev1.Node) bool {
		c := condition(n, corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionUnknown
	})
	r.Event(node, message.OpConnected, nil)
	if resp := r.report(node, rep); resp.op == message.OpError {
		t.Fatalf("report refused: %s", resp.content)
	}
	if c := condition(getNode(t, node), corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("first report after Unknown did not write Ready=True: %+v", c)
	}
}

// TestAConnectedNodesLeaseIsRenewedWithoutReportsAndNotOnceItDisconnects proves liveness is the
// link: a connected node that sends no report keeps a fresh Lease (an idle edge reports rarely), and
// a disconnected one is left to expire.
func TestAConnectedNodesLeaseIsRenewedWithoutReportsAndNotOnceItDisconnects(t *testing.T) {
	r := newWritesRig(t, "300ms", "1h")
	ctx := context.Background()
	node := r.Node("lease")
	r.join(node)
	renewTime := func() time.Time {
		t.Helper()
		l, err := ctrlrig.Env.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l.Spec.RenewTime.Time
	}
	last, renewals := renewTime(), 0
	eventually(t, "the Lease renewed twice with no report", func() (bool, string) {
		if now := renewTime(); now.After(last) {
			last, renewals = now, renewals+1
		}
		return renewals >= 2, fmt.Sprintf("%d renewals", renewals)
	})

	r.Event(node, message.OpDisconnected, nil)
	// The leader marks it Unknown once the Lease stayed unchanged for the grace period (renewing it
	// would keep it Ready); a renewal begun before the disconnection is older than that.
	waitNode(t, node, func(n *corev1.Node) bool {
		c := condition(n, corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionUnknown
	})
	unknownAt := time.Now()
	time.Sleep(10 * 300 * time.Millisecond) // ten renewal intervals
	if got := renewTime(); !got.Before(unknownAt) {
		t.Fatalf("the Lease of a disconnected node was renewed at %s, after it was Unknown (%s)", got, unknownAt)
	}
}

// TestANodeMarkedUnknownIsReadyAgainWhenItReconnectsBeforeItReports proves Ready follows the link: an
// idle edge's next report may be a minute away, its Node must not stay Unknown that long.
func TestANodeMarkedUnknownIsReadyAgainWhenItReconnectsBeforeItReports(t *testing.T) {
	r := newWritesRig(t, "1h", "1h")
	node := r.Node("back")
	r.join(node)
	r.Event(node, message.OpDisconnected, nil)
	waitNode(t, node, func(n *corev1.Node) bool {
		c := condition(n, corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionUnknown
	})
	r.Event(node, message.OpConnected, nil)
	waitNode(t, node, func(n *corev1.Node) bool {
		c := condition(n, corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionTrue
	})
}

func waitNode(t *testing.T, name string, ok func(*corev1.Node) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(getNode(t, name)) {
		if time.Now().After(deadline) {
			t.Fatalf("node %s: condition not reached within 30s", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
