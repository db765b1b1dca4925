package edgecontroller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// replica runs one more controller sharing the leader-election Lease lease under identity id.
func replica(t *testing.T, ns, lease, id string) *rig {
	t.Helper()
	return &rig{ctrlrig.Start(t, edgecontroller.Name, map[string]any{
		"nodeGracePeriod": "2s", "leaseRenewInterval": "500ms", "inventoryWait": "300ms", "sendServices": false,
		"leaderElection": map[string]any{"leaseName": lease, "identity": id, "leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "250ms"},
	}, ns)}
}

func (r *rig) heartbeat(node string) {
	r.T.Helper()
	if resp := r.request(node, message.OpUpdate, "default", "nodestatus", node, edgecontroller.NodeReport{NodeName: node,
		Capacity: map[string]string{"cpu": "2", "memory": "2Gi"}, OS: "linux", Architecture: "amd64"}); resp.Route.Operation == message.OpError {
		r.T.Fatalf("node status refused: %s", resp.Content)
	}
}

func ready(t *testing.T, node string) corev1.ConditionStatus {
	n, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return readyStatus(n)
}

// Two replicas: a node that moved from the leader to the other replica, which keeps renewing its
// Lease, is never marked Unknown by the leader it left; a node whose replica died (no disconnect
// seen by anyone) is marked Unknown by the leader, which never held it. (The package's tests run one
// at a time, so a is the only controller running when b's nodes fall silent.)
func TestWithTwoReplicasTheLeaderMarksSilentNodesWhereverTheyWereAndNotNodesThatMoved(t *testing.T) {
	if ctrlrig.Env == nil {
		t.Skip("needs the control plane (not with -short)")
	}
	ns := fmt.Sprintf("ha-%d", time.Now().UnixNano()%1_000_000)
	lease := "ec-" + ns
	a := replica(t, ns, lease, "replica-a")
	deadline := time.Now().Add(30 * time.Second)
	for a.Gauge("kedge_leader") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("replica a never led")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b := replica(t, ns, lease, "replica-b")
	moved, orphan := ns+"-moved", ns+"-orphan"
	t.Cleanup(func() {
		for _, n := range []string{moved, orphan} {
			_ = ctrlrig.Env.Client.CoreV1().Nodes().Delete(context.Background(), n, metav1.DeleteOptions{})
		}
	})

	// moved: joined on a, then reconnects to b (a sees the disconnect), b keeps it reporting.
	a.join(moved)
	a.Event(moved, message.OpDisconnected, nil)
	b.join(moved)
	b.join(orphan)
	for range 24 { // 6 s = 3 grace periods
		b.heartbeat(moved)
		b.heartbeat(orphan)
		time.Sleep(250 * time.Millisecond)
		for _, n := range []string{moved, orphan} {
			if s := ready(t, n); s != corev1.ConditionTrue {
				t.Fatalf("node %s is Ready=%s while replica b renews its Lease", n, s)
			}
		}
	}
	if b.Gauge("kedge_edgecontroller_nodes_unknown_total") != 0 {
		t.Fatal("the follower marked a node Unknown")
	}

	// b dies without a word (no disconnect reaches anyone): its nodes fall silent.
	if err := b.H.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the leader marks the dead replica's nodes Unknown", func() (bool, string) {
		return ready(t, orphan) == corev1.ConditionUnknown && ready(t, moved) == corev1.ConditionUnknown,
			fmt.Sprintf("orphan %s, moved %s", ready(t, orphan), ready(t, moved))
	})
	if a.Gauge("kedge_edgecontroller_nodes_unknown_total") < 2 {
		t.Fatal("the leader did not count its marks")
	}
}
