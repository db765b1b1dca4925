package rolloutcontroller_test

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
)

// A rollout in progress when its leader goes completes under the new leader, and no node is sent the
// same generation twice: three nodes held by replica b, one at a time; the leader a decides n1's and
// n2's turns and stops while n2 is installing; b takes the Lease, takes n2's report, sends n3 its
// turn, completes — and never sends n1 or n2 generation 1 again.
func TestARolloutInProgressWhenItsLeaderStopsCompletesUnderTheNewLeaderWithNoNodeSentAGenerationTwice(t *testing.T) {
	ns := newNamespace(t)
	election := func(id string) map[string]any {
		return map[string]any{"leaseName": "ro-" + ns, "identity": id, "leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "250ms"}
	}
	a := newReplica(t, ns, election("replica-a"))
	a.waitLeading(1)
	b := newReplica(t, ns, election("replica-b"))
	n1, n2, n3 := a.Node("n1"), a.Node("n2"), a.Node("n3")
	for _, n := range []string{n1, n2, n3} {
		a.edgeNode(n, nil)
		b.event(n, "connected") // every node's hub connection is on replica b
	}
	a.rollout("ro", "1.0.0", 1, nil)

	sent := map[string]int{} // node -> rollout messages b delivered to it
	take := func(node string) {
		t.Helper()
		_, c := b.waitSent(node, "ro")
		if c.Generation != 1 || c.Version != "1.0.0" {
			t.Fatalf("%s was sent %+v, want generation 1 version 1.0.0", node, c)
		}
		sent[node]++
	}
	take(n1)
	b.ok(n1, "ro", 1, "1.0.0", v1alpha1.NodeUpdated, "")
	b.waitStatus("ro", "n1 updated, n2's turn", func(st v1alpha1.PluginRolloutStatus) bool {
		return nodeState(st, n1) == v1alpha1.NodeUpdated && nodeState(st, n2) == v1alpha1.NodeInstalling
	})
	take(n2)

	// The leader goes while n2 installs.
	if err := a.H.Stop(); err != nil {
		t.Fatal(err)
	}
	b.waitLeading(1)
	b.ok(n2, "ro", 1, "1.0.0", v1alpha1.NodeUpdated, "")
	b.waitStatus("ro", "n3's turn under the new leader", func(st v1alpha1.PluginRolloutStatus) bool {
		return nodeState(st, n2) == v1alpha1.NodeUpdated && nodeState(st, n3) == v1alpha1.NodeInstalling
	})
	take(n3)
	b.ok(n3, "ro", 1, "1.0.0", v1alpha1.NodeUpdated, "")
	ro := b.waitStatus("ro", "Complete", func(st v1alpha1.PluginRolloutStatus) bool { return st.Phase == v1alpha1.PhaseComplete })
	if ro.Status.RolloutGeneration != 1 {
		t.Fatalf("rollout generation %d after the takeover, want 1 (nothing restarted)", ro.Status.RolloutGeneration)
	}
	for _, s := range b.SentList() {
		if strings.HasPrefix(s, "update ") && strings.HasSuffix(s, "/ro") {
			t.Fatalf("a node was sent the rollout again after its turn: %s (sent so far %v)", s, sent)
		}
	}
	for _, n := range []string{n1, n2, n3} {
		if sent[n] != 1 {
			t.Fatalf("%s was sent the rollout %d times, want once: %v", n, sent[n], sent)
		}
	}
}
