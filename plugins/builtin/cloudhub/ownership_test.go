package cloudhub

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/hub"
)

func withOwnership(ns, id string) func(*Module) {
	return func(m *Module) {
		withCASecret(ns)(m) // one CA for every replica, so a node's certificate is good at each
		m.Ownership = Ownership{Enable: true, Kubeconfig: k8s.Kubeconfig, Namespace: ns, Identity: id,
			ForwardAddress: id + ".example:10005", ReplicaLeaseDuration: 3 * time.Second, QPS: 50, Burst: 100}
	}
}

func holderOf(t *testing.T, ns, node string) (holder, rv string, transitions int32) {
	t.Helper()
	l, err := k8s.Client.CoordinationV1().Leases(ns).Get(context.Background(), NodeLeaseName(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", 0
	}
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseTransitions != nil {
		transitions = *l.Spec.LeaseTransitions
	}
	return holder, l.ResourceVersion, transitions
}

func TestNodeOwnershipIsRecordedOnConnectOnlyAndANodeThatMovesIsDroppedByItsOldReplica(t *testing.T) {
	ns := caSecretNamespace(t, "owners")
	a := startCloud(t, withOwnership(ns, "replica-a"))
	b := startCloud(t, withOwnership(ns, "replica-b"))
	const node = "edge-moves"
	r := newRawNode(t, a, node)
	r.dial(a)
	eventually(t, "replica a recorded as the node's holder", func() bool { h, _, _ := holderOf(t, ns, node); return h == "replica-a" })
	eventually(t, "replica b sees a as the owner, alive, with its forward address", func() bool {
		o, ok := b.hub.OwnerOf(node)
		return ok && o.Identity == "replica-a" && o.Alive && o.ForwardAddress == "replica-a.example:10005"
	})

	// Traffic (and the time passing) writes nothing: the Lease stays at the version of the connect.
	_, rv, _ := holderOf(t, ns, node)
	for i := range 5 {
		a.send(t, node, fmt.Sprint("p", i), 1) // the raw node acknowledges nothing: one object each
		if m := r.receive(); !strings.HasSuffix(m.Route.Resource, fmt.Sprint("/pod/p", i)) {
			t.Fatalf("node got %s", m.Route.Resource)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, rv2, _ := holderOf(t, ns, node); rv2 != rv {
		t.Fatalf("the ownership Lease was written while the node stayed connected (resourceVersion %s -> %s)", rv, rv2)
	}

	// The node reconnects to replica b while its old connection to a is still open (a half-open
	// leftover): b claims it, a closes that session and drops the node's queue.
	a.send(t, node, "queued-at-a", 1)
	conn, err := hub.Dial(context.Background(), hub.DialOptions{URL: "wss://" + b.hub.Address, TLS: r.tls, NodeID: node,
		Options: hub.Options{Heartbeat: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	eventually(t, "replica b recorded as the holder", func() bool { h, _, _ := holderOf(t, ns, node); return h == "replica-b" })
	eventually(t, "replica a dropped its leftover session", func() bool { return !a.connected(node) })
	if p := a.pending(node); len(p) != 0 {
		t.Fatalf("replica a still queues for the node that moved: %v", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for { // the old connection ends (it may still hold what was in flight)
		if _, err := r.conn.Receive(ctx); err != nil {
			break
		}
	}
	if _, _, tr := holderOf(t, ns, node); tr != 1 {
		t.Fatalf("leaseTransitions %d, want 1 (one move)", tr)
	}
	// Counted by each replica's worker after its write or eviction returned: waited for, then exact.
	eventually(t, "one handover counted out on a and in on b", func() bool {
		return testutil.ToFloat64(a.hub.owners.metrics.handovers.WithLabelValues("out")) >= 1 &&
			testutil.ToFloat64(b.hub.owners.metrics.handovers.WithLabelValues("in")) >= 1
	})
	if got := testutil.ToFloat64(a.hub.owners.metrics.handovers.WithLabelValues("out")); got != 1 {
		t.Fatalf("a counted %v handovers out, want 1", got)
	}
	if got := testutil.ToFloat64(b.hub.owners.metrics.handovers.WithLabelValues("in")); got != 1 {
		t.Fatalf("b counted %v handovers in, want 1", got)
	}
	if !b.connected(node) {
		t.Fatal("replica b lost the node")
	}

	// The node leaves b: b releases the Lease (nobody holds it).
	_ = conn.Close()
	eventually(t, "the Lease released on disconnect", func() bool { h, _, _ := holderOf(t, ns, node); return h == "" })

	// A stopped replica deletes its own Lease: the nodes it named are held by nobody alive.
	a.stop()
	eventually(t, "replica a's Lease deleted", func() bool {
		_, err := k8s.Client.CoordinationV1().Leases(ns).Get(context.Background(), ReplicaLeaseName("replica-a"), metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}
