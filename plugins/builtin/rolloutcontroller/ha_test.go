package rolloutcontroller_test

import (
	"testing"
	"time"

	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/sdk/message"
)

// waitCounter waits until a counter of the rig's registry is above zero.
func (r *rig) waitCounter(name string, labels map[string]string, failure string) {
	r.T.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.Counter(name, labels) == 0 {
		if time.Now().After(deadline) {
			r.T.Fatal(failure)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) waitLeading(want float64) {
	r.T.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.Gauge("kedge_leader") != want {
		if time.Now().After(deadline) {
			r.T.Fatalf("kedge_leader never became %v", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two replicas share the Lease: only the leader decides turns; the replica holding a node delivers
// the turn the leader decided for it; when the leader stops, the other decides.
func TestWithTwoReplicasOnlyTheLeaderDecidesTheNodesOwnerDeliversAndTheOtherTakesOver(t *testing.T) {
	ns := newNamespace(t)
	election := func(id string) map[string]any {
		return map[string]any{"leaseName": "ro-" + ns, "identity": id, "leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "250ms"}
	}
	a := newReplica(t, ns, election("replica-a"))
	a.waitLeading(1)
	b := newReplica(t, ns, election("replica-b"))
	n1, n2 := a.Node("n1"), a.Node("n2")
	a.edgeNode(n1, nil)
	a.edgeNode(n2, nil)
	a.event(n1, message.OpConnected) // n1 is connected to replica a, n2 to replica b
	b.event(n2, message.OpConnected)

	a.rollout("ro", "1.0.0", 2, nil)
	a.waitStatus("ro", "both nodes installing", func(st v1alpha1.PluginRolloutStatus) bool {
		return nodeState(st, n1) == v1alpha1.NodeInstalling && nodeState(st, n2) == v1alpha1.NodeInstalling
	})
	if _, c := b.waitSent(n2, "ro"); c.Generation != 1 || c.Version != "1.0.0" {
		t.Fatalf("replica b delivered %+v to its node, want generation 1 version 1.0.0", c)
	}
	a.waitSent(n1, "ro")
	if got := b.Counter("kedge_rolloutcontroller_downstream_total", map[string]string{"reason": "turn"}); got != 0 {
		t.Fatalf("the follower decided %v turns; only the leader decides", got)
	}
	if b.Counter("kedge_rolloutcontroller_not_leader_total", nil) == 0 {
		t.Fatal("the follower never skipped a reconcile: it is not gated by the election")
	}
	b.waitCounter("kedge_rolloutcontroller_downstream_total", map[string]string{"reason": "owner"}, "replica b counted no owner message") // counted just after it is queued
	if got := b.Counter("kedge_rolloutcontroller_downstream_total", map[string]string{"reason": "owner"}); got != 1 {
		t.Fatalf("replica b delivered %v owner messages, want 1 (its node n2)", got)
	}
	b.noneSentTo(n1) // b neither holds n1 nor decides
	if b.Gauge("kedge_leader") != 0 {
		t.Fatal("both replicas report kedge_leader 1")
	}

	// The leader stops (a replica shut down): b takes the Lease and decides from now on.
	if err := a.H.Stop(); err != nil {
		t.Fatal(err)
	}
	b.waitLeading(1)
	b.patchSpec("ro", map[string]any{"version": "1.1.0"})
	ro := b.waitStatus("ro", "restarted at the new generation", func(st v1alpha1.PluginRolloutStatus) bool {
		return st.RolloutGeneration == 2 && nodeState(st, n1) == v1alpha1.NodeInstalling && nodeState(st, n2) == v1alpha1.NodeInstalling
	})
	if _, c := b.waitSent(n2, "ro"); c.Generation != ro.Status.RolloutGeneration || c.Version != "1.1.0" {
		t.Fatalf("new leader sent %+v, want generation %d version 1.1.0", c, ro.Status.RolloutGeneration)
	}
	// The turn of n1 (held by no running replica) is sent by the leader's decision only; n2's
	// message above may have come from the informer's copy of the status (reason owner) first.
	b.waitCounter("kedge_rolloutcontroller_downstream_total", map[string]string{"reason": "turn"}, "the new leader decided no turn")
	// b's node reports; b records it and completes nothing twice.
	b.ok(n2, "ro", 2, "1.1.0", v1alpha1.NodeUpdated, "")
	b.waitStatus("ro", "n2 updated", func(st v1alpha1.PluginRolloutStatus) bool { return nodeState(st, n2) == v1alpha1.NodeUpdated })
}
