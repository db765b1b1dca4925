package edgecontroller_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk/message"
)

// kubeEdgeAnswer is how KubeEdge's metamanager client reads an answer: {"Object", "Err"}.
type kubeEdgeAnswer struct {
	Object json.RawMessage
	Err    struct {
		ErrStatus metav1.Status
	}
}

func TestUpstreamEdgedRegistrationLeaseAndStatusPatchAreAnsweredInKubeEdgeForm(t *testing.T) {
	r := newRig(t)
	node := r.Node("ke")
	r.Event(node, message.OpConnected, map[string]bool{"kubeedge": true}) // its edged keeps its own Lease
	decode := func(resp message.Message) kubeEdgeAnswer {
		t.Helper()
		if resp.Route.Operation == message.OpError {
			t.Fatalf("refused: %s", resp.Content)
		}
		var a kubeEdgeAnswer
		if err := json.Unmarshal(resp.Content, &a); err != nil {
			t.Fatalf("answer %s is not {Object, Err}: %v", resp.Content, err)
		}
		return a
	}

	// The kubelet's lease controller first reads its Lease: NotFound must come back as a 404 Status.
	if a := decode(r.request(node, message.OpQuery, "kube-node-lease", "lease", node, nil)); a.Err.ErrStatus.Code != 404 || a.Err.ErrStatus.Reason != metav1.StatusReasonNotFound {
		t.Fatalf("lease query before any lease: Err %+v, want a 404 NotFound Status", a.Err.ErrStatus)
	}
	dur := int32(40)
	lease := coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: "kube-node-lease"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: &node, LeaseDurationSeconds: &dur}}
	a := decode(r.request(node, message.OpInsert, "kube-node-lease", "lease", node, lease))
	var got coordinationv1.Lease
	if err := json.Unmarshal(a.Object, &got); err != nil || got.Name != node || got.Kind != "Lease" || a.Err.ErrStatus.Code != 0 {
		t.Fatalf("lease insert answered %s (Err %+v)", a.Object, a.Err.ErrStatus)
	}
	// Another node's Lease is refused outright.
	if resp := r.request(node, message.OpQuery, "kube-node-lease", "lease", "someone-else", nil); resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), "forbidden") {
		t.Fatalf("another node's lease: %s %s, want forbidden", resp.Route.Operation, resp.Content)
	}

	// edged registers its Node (no kind in its content, as the real one sends it), then patches its status.
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady"}}
	a = decode(r.request(node, message.OpInsert, "null", "node", node, n))
	var reg corev1.Node
	if err := json.Unmarshal(a.Object, &reg); err != nil || reg.Name != node || reg.Kind != "Node" {
		t.Fatalf("node insert answered %s", a.Object)
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	patch := map[string]any{"status": map[string]any{"conditions": []map[string]any{{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}}}}
	raw, _ := json.Marshal(patch)
	decode(r.request(node, message.OpPatch, "null", edgecontroller.TypeNodePatch, node, raw))
	api := getNode(t, node)
	if _, ok := api.Labels[edgecontroller.EdgeLabel]; !ok || api.Labels["kubernetes.io/os"] != "linux" {
		t.Errorf("node labels %v, want edged's and the edge label", api.Labels)
	}
	if c := condition(api, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
		t.Fatalf("Ready after edged's status patch: %+v", c)
	}
	// A patch for another node is refused.
	if resp := r.request(node, message.OpPatch, "null", edgecontroller.TypeNodePatch, "other", raw); resp.Route.Operation != message.OpError {
		t.Fatalf("patch of another node answered %s", resp.Content)
	}
}
