package edgehub

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

// cloudAnswer is KubeEdge's cloudcore answering req as its edgecontroller does for leases: a
// response (group resource) whose content is ObjectResp {"Object": ..., "Err": <StatusError>}.
func cloudAnswer(t *testing.T, req message.Message, obj any, status *metav1.Status) message.Message {
	t.Helper()
	body := map[string]any{"Object": obj, "Err": nil}
	if status != nil {
		body["Err"] = map[string]any{"ErrStatus": status}
	}
	r, err := req.Reply("edgecontroller", body)
	if err != nil {
		t.Fatal(err)
	}
	r.Route.Group = "resource"
	return r
}

func TestKubeEdgeLeaseIsQueriedCreatedWhenMissingRenewedWithItsVersionAndQueriedAgainAfterAConflict(t *testing.T) {
	l := &kubeEdgeLease{node: "edge-1", duration: 40 * time.Second}
	now := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	step := func(wantOp string) message.Message {
		t.Helper()
		m, ok := l.next(now)
		if !ok {
			t.Fatalf("no request, want %s", wantOp)
		}
		if m.Route.Operation != wantOp || m.Route.Resource != "kube-node-lease/lease/edge-1" || m.Route.Group != "meta" || m.Route.Source != "edged" || !m.Header.Sync {
			t.Fatalf("request %s (group %s, source %s, sync %v), want %s of kube-node-lease/lease/edge-1 as KubeEdge's edged sends it", m.String(), m.Route.Group, m.Route.Source, m.Header.Sync, wantOp)
		}
		if _, again := l.next(now.Add(time.Second)); again {
			t.Fatal("a second request while the first waits for its answer")
		}
		return m
	}
	answer := func(req message.Message, obj any, status *metav1.Status) {
		t.Helper()
		mine, err := l.answered(cloudAnswer(t, req, obj, status))
		if !mine {
			t.Fatal("the answer was not taken as the lease's")
		}
		if err != nil && (status == nil || status.Reason != metav1.StatusReasonConflict) {
			t.Fatalf("answer refused: %v", err)
		}
	}
	notFound := &metav1.Status{Status: "Failure", Reason: metav1.StatusReasonNotFound, Code: 404, Message: `leases.coordination.k8s.io "edge-1" not found`}
	q := step(message.OpQuery)
	answer(q, nil, notFound)

	ins := step(message.OpInsert)
	var created coordinationv1.Lease
	if err := json.Unmarshal(ins.Content, &created); err != nil || created.Name != "edge-1" || created.Namespace != "kube-node-lease" ||
		*created.Spec.HolderIdentity != "edge-1" || *created.Spec.LeaseDurationSeconds != 40 || !created.Spec.RenewTime.Time.Equal(now) {
		t.Fatalf("insert content %s (%v)", ins.Content, err)
	}
	created.ResourceVersion = "17"
	answer(ins, created, nil)

	now = now.Add(10 * time.Second)
	up := step(message.OpUpdate)
	var renewed coordinationv1.Lease
	if err := json.Unmarshal(up.Content, &renewed); err != nil || renewed.ResourceVersion != "17" || !renewed.Spec.RenewTime.Time.Equal(now) {
		t.Fatalf("update content %s (%v), want resourceVersion 17 and renewTime now", up.Content, err)
	}
	answer(up, nil, &metav1.Status{Status: "Failure", Reason: metav1.StatusReasonConflict, Code: 409, Message: "the object has been modified"})
	step(message.OpQuery) // after a conflict: read it again

	// An answer in another form is an error, and the next round starts over with a query.
	l2 := &kubeEdgeLease{node: "edge-1", duration: 40 * time.Second}
	q2, _ := l2.next(now)
	bad, _ := q2.Reply("edgecontroller", "OK")
	if mine, err := l2.answered(bad); !mine || err == nil || !strings.Contains(err.Error(), "not {Object, Err}") {
		t.Fatalf("answer \"OK\": mine %v err %v", mine, err)
	}
	// An answer to something else is not the lease's.
	other := message.New("edgecontroller", "resource", message.OpResponse, "default/pod/p")
	other.Header.ParentID = "someone-else"
	if mine, _ := l2.answered(other); mine {
		t.Fatal("an answer to another message was taken as the lease's")
	}
	// A request whose answer never came counts as lost after two renew intervals (20 s of 40 s).
	l3 := &kubeEdgeLease{node: "edge-1", duration: 40 * time.Second}
	first, _ := l3.next(now)
	if _, ok := l3.next(now.Add(19 * time.Second)); ok {
		t.Fatal("asked again before two renew intervals passed")
	}
	if m, ok := l3.next(now.Add(20 * time.Second)); !ok || m.Route.Operation != message.OpQuery || m.Header.ID == first.Header.ID {
		t.Fatalf("after a lost answer: %v %s, want a new query", ok, m.String())
	}
}
