package edgecontroller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

func TestMain(m *testing.M) { os.Exit(ctrlrig.Main(m, "edgecontroller", false, nil)) }

// rig runs the controller against the real API server, with cloudhub captured (test/ctrlrig).
type rig struct{ *ctrlrig.Rig }

func newRig(t *testing.T) *rig {
	t.Helper()
	ns := ctrlrig.Namespace(t, 50)
	return &rig{ctrlrig.Start(t, edgecontroller.Name, map[string]any{
		"nodeGracePeriod": "400ms", "leaseRenewInterval": "100ms", "inventoryWait": "300ms", "sendServices": false,
		"leaderElection": map[string]any{"leaseName": "ec-" + ns}, // each rig leads its own Lease
	}, ns)}
}

// join connects node and reconciles it from an empty inventory, then reports its status.
func (r *rig) join(node string) {
	r.T.Helper()
	r.Event(node, message.OpConnected, nil)
	r.Event(node, message.OpInventory, []edgecontroller.InventoryItem{})
	if resp := r.request(node, message.OpUpdate, "default", "nodestatus", node, edgecontroller.NodeReport{NodeName: node,
		Capacity: map[string]string{"cpu": "2", "memory": "2Gi"}, OS: "linux", Architecture: "amd64", KernelVersion: "6.1",
		OSImage: "Debian GNU/Linux 12 (bookworm)", Addresses: []string{"192.0.2.7"}}); resp.Route.Operation == message.OpError {
		r.T.Fatalf("node status refused: %s", resp.Content)
	}
}

// request sends what the edge would send through cloudhub, and returns the controller's answer.
func (r *rig) request(node, op, ns, typ, name string, content any) sdk.Message {
	r.T.Helper()
	return r.Request("resource", node, op, ns, typ, name, content)
}

var eventually = ctrlrig.Eventually

func (r *rig) pod(name, node string, refs ...string) *corev1.Pod {
	r.T.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.NS},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}}}}
	for _, ref := range refs {
		typ, name, _ := strings.Cut(ref, "/")
		switch typ {
		case "configmap":
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "v-" + name, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}})
		case "secret":
			p.Spec.Containers[0].EnvFrom = append(p.Spec.Containers[0].EnvFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}})
		}
	}
	created, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		r.T.Fatal(err)
	}
	return created
}

func (r *rig) configMap(name, value string) {
	r.T.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.NS}, Data: map[string]string{"k": value}}
	if _, err := ctrlrig.Env.Client.CoreV1().ConfigMaps(r.NS).Create(context.Background(), cm, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		_, err = ctrlrig.Env.Client.CoreV1().ConfigMaps(r.NS).Update(context.Background(), cm, metav1.UpdateOptions{})
		if err != nil {
			r.T.Fatal(err)
		}
	} else if err != nil {
		r.T.Fatal(err)
	}
}

func (r *rig) secret(name string) {
	r.T.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.NS}, StringData: map[string]string{"password": "x"}}
	if _, err := ctrlrig.Env.Client.CoreV1().Secrets(r.NS).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		r.T.Fatal(err)
	}
}

var res = ctrlrig.Res

func TestEdgeNodeRegistersOnConnectAndItsReportMakesItReadyWithCapacityAndLease(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.Event(node, message.OpConnected, nil)
	eventually(t, "Node created with the edge label", func() (bool, string) {
		n, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		_, ok := n.Labels[edgecontroller.EdgeLabel]
		return ok, fmt.Sprint(n.Labels)
	})
	r.join(node)
	n, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Status.Capacity.Cpu().String(); got != "2" {
		t.Errorf("capacity cpu = %s, want 2", got)
	}
	if got := n.Status.Capacity.Memory().String(); got != "2Gi" {
		t.Errorf("capacity memory = %s, want 2Gi", got)
	}
	if n.Status.NodeInfo.OSImage != "Debian GNU/Linux 12 (bookworm)" || len(n.Status.Addresses) != 2 ||
		n.Status.Addresses[0] != (corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.0.2.7"}) {
		t.Errorf("node info / addresses: %q %v", n.Status.NodeInfo.OSImage, n.Status.Addresses)
	}
	if ready := readyStatus(n); ready != corev1.ConditionTrue {
		t.Errorf("Ready = %q, want True", ready)
	}
	l, err := ctrlrig.Env.Client.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), node, metav1.GetOptions{})
	if err != nil || l.Spec.RenewTime == nil || *l.Spec.HolderIdentity != node {
		t.Fatalf("lease: %v %+v", err, l)
	}
}

func readyStatus(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

func TestDisconnectedNodeTurnsReadyUnknownAfterTheGracePeriodAndReadyAgainOnReport(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.join(node)
	r.Event(node, message.OpDisconnected, nil)
	eventually(t, "Ready Unknown", func() (bool, string) {
		n, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return readyStatus(n) == corev1.ConditionUnknown, string(readyStatus(n))
	})
	r.join(node)
	n, _ := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if readyStatus(n) != corev1.ConditionTrue {
		t.Fatalf("after reconnecting and reporting: Ready = %s", readyStatus(n))
	}
}

func TestPodsAndTheirReferencesGoOnlyToTheirNodeAndAConfigMapChangeReachesOnlyItsUsers(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	r.configMap("cfg-a", "1")
	r.configMap("cfg-b", "1")
	r.secret("sec-a")
	r.pod("pa", a, "configmap/cfg-a", "secret/sec-a")
	r.pod("pb", b, "configmap/cfg-b")
	r.WaitSent(message.OpInsert, res(a, r.NS, "pod", "pa"))
	r.WaitSent(message.OpInsert, res(a, r.NS, "configmap", "cfg-a"))
	r.WaitSent(message.OpInsert, res(a, r.NS, "secret", "sec-a"))
	pb := r.WaitSent(message.OpInsert, res(b, r.NS, "pod", "pb"))
	r.WaitSent(message.OpInsert, res(b, r.NS, "configmap", "cfg-b"))
	var got corev1.Pod
	if err := json.Unmarshal(pb.Content, &got); err != nil || got.Kind != "Pod" || got.APIVersion != "v1" || got.Spec.NodeName != b {
		t.Fatalf("pod content: %v %+v", err, got.TypeMeta)
	}
	if pb.Header.ResourceVersion != got.ResourceVersion || got.ResourceVersion == "" {
		t.Fatalf("header resourceversion %q, object %q", pb.Header.ResourceVersion, got.ResourceVersion)
	}
	for _, s := range r.SentTo(b) {
		if strings.Contains(s, "cfg-a") || strings.Contains(s, "sec-a") || strings.Contains(s, "/pa") {
			t.Errorf("node b was sent node a's object: %s", s)
		}
	}
	r.configMap("cfg-a", "2")
	r.WaitSent(message.OpUpdate, res(a, r.NS, "configmap", "cfg-a"))
	for _, s := range r.SentTo(b) {
		if strings.Contains(s, "cfg-a") {
			t.Errorf("a change of cfg-a reached node b: %s", s)
		}
	}
	// The last pod using cfg-a goes: the node loses the pod and cfg-a.
	if err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Delete(context.Background(), "pa", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	r.WaitSent(message.OpDelete, res(a, r.NS, "pod", "pa"))
	r.WaitSent(message.OpDelete, res(a, r.NS, "configmap", "cfg-a"))
}

func TestReconnectingNodeGetsOnlyWhatItLacksAndLosesWhatItShouldNotHold(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.Event(node, message.OpConnected, nil)
	r.configMap("cfg", "1")
	p1 := r.pod("p1", node, "configmap/cfg")
	p2 := r.pod("p2", node)
	eventually(t, "Node registered", func() (bool, string) {
		_, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	cm, _ := ctrlrig.Env.Client.CoreV1().ConfigMaps(r.NS).Get(context.Background(), "cfg", metav1.GetOptions{})
	rv := func(s string) uint64 { var v uint64; fmt.Sscan(s, &v); return v }
	// The node holds p1 and cfg at their current versions, p2 at an old one, and a pod the API no longer has.
	r.Event(node, message.OpInventory, []edgecontroller.InventoryItem{
		{Resource: r.NS + "/pod/p1", ResourceVersion: rv(p1.ResourceVersion)},
		{Resource: r.NS + "/configmap/cfg", ResourceVersion: rv(cm.ResourceVersion)},
		{Resource: r.NS + "/pod/p2", ResourceVersion: rv(p2.ResourceVersion) - 1},
		{Resource: r.NS + "/pod/gone", ResourceVersion: 5},
		{Resource: "default/nodestatus/" + node, ResourceVersion: 3},
	})
	r.WaitSent(message.OpUpdate, res(node, r.NS, "pod", "p2"))
	r.WaitSent(message.OpDelete, res(node, r.NS, "pod", "gone"))
	for _, s := range r.SentTo(node) {
		if strings.HasSuffix(s, "/pod/p1") || strings.HasSuffix(s, "/configmap/cfg") || strings.Contains(s, "nodestatus") {
			t.Errorf("sent although the node holds it at the current version (or it is not ours): %s", s)
		}
	}
}

func TestNodeWithoutInventoryGetsEverythingItShouldHold(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.Event(node, message.OpConnected, nil)
	eventually(t, "Node registered", func() (bool, string) {
		_, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	r.pod("p1", node)
	r.WaitSent(message.OpUpdate, res(node, r.NS, "pod", "p1")) // after inventoryWait, from the reconciliation
}

func TestPodStatusFromItsNodeIsWrittenAndOtherNodesAndGarbageAreRefused(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	p := r.pod("p", a)
	status := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.7", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	tests := []struct {
		name, node string
		content    any
		wantErr    string
	}{
		{"another node's pod", b, edgecontroller.PodStatusReport{UID: p.UID, Status: status}, "forbidden"},
		{"garbage payload", a, []byte(`{"status": "running"`), "not valid"},
		{"a pod of the same name that was replaced", a, edgecontroller.PodStatusReport{UID: "other-uid", Status: status}, "uid"},
		{"its own pod", a, edgecontroller.PodStatusReport{UID: p.UID, Status: status}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.request(tt.node, message.OpUpdate, r.NS, "podstatus", "p", tt.content)
			if tt.wantErr == "" {
				if resp.Route.Operation == message.OpError {
					t.Fatalf("refused: %s", resp.Content)
				}
				return
			}
			if resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), tt.wantErr) {
				t.Fatalf("answer %s %s, want an error containing %q", resp.Route.Operation, resp.Content, tt.wantErr)
			}
		})
	}
	got, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Get(context.Background(), "p", metav1.GetOptions{})
	if err != nil || got.Status.Phase != corev1.PodRunning || got.Status.PodIP != "10.0.0.7" {
		t.Fatalf("pod status in the API: %v %+v", err, got.Status)
	}
	eventually(t, "a Warning Event for the garbage status", func() (bool, string) {
		evs, _ := ctrlrig.Env.Client.CoreV1().Events(r.NS).List(context.Background(), metav1.ListOptions{})
		for _, e := range evs.Items {
			if e.Reason == "InvalidStatusReport" && e.InvolvedObject.Name == "p" {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(evs.Items), " events")
	})
}

func TestNodeReadsOnlyObjectsItsPodsReference(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	r.secret("sec-a")
	r.secret("sec-b")
	r.pod("pa", a, "secret/sec-a")
	r.pod("pb", b, "secret/sec-b")
	r.WaitSent(message.OpInsert, res(a, r.NS, "secret", "sec-a"))
	r.WaitSent(message.OpInsert, res(b, r.NS, "secret", "sec-b"))
	tests := []struct {
		name, node, typ, ns, obj string
		allowed                  bool
	}{
		{"its pod's secret", a, "secret", r.NS, "sec-a", true},
		{"another node's secret", a, "secret", r.NS, "sec-b", false},
		{"its own pod", a, "pod", r.NS, "pa", true},
		{"another node's pod", a, "pod", r.NS, "pb", false},
		{"its own Node", a, "node", "default", a, true},
		{"another Node", a, "node", "default", b, false},
		{"a whole list", a, "secret", r.NS, "", false},
		{"a type it never needs", a, "serviceaccount", r.NS, "default", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.request(tt.node, message.OpQuery, tt.ns, tt.typ, tt.obj, nil)
			refused := resp.Route.Operation == message.OpError
			if refused == tt.allowed {
				t.Fatalf("allowed=%v, answer %s %s", tt.allowed, resp.Route.Operation, resp.Content)
			}
			if tt.allowed && !strings.Contains(string(resp.Content), `"name":"`+tt.obj+`"`) {
				t.Fatalf("answer does not carry the object: %s", resp.Content)
			}
			if !tt.allowed && !strings.Contains(string(resp.Content), "forbidden") {
				t.Fatalf("refusal does not say forbidden: %s", resp.Content)
			}
		})
	}
}

func TestGracefulDeletionCompletesOnceItsNodeConfirmsAndNotBefore(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	p := r.pod("p", a)
	r.WaitSent(message.OpInsert, res(a, r.NS, "pod", "p"))
	// Not being deleted yet: the edge may not delete it.
	if resp := r.request(a, message.OpDelete, r.NS, "pod", "p", edgecontroller.PodDeleted{UID: p.UID}); resp.Route.Operation != message.OpError {
		t.Fatalf("an edge deleted a pod the API did not delete: %s", resp.Content)
	}
	grace := int64(300)
	if err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Delete(context.Background(), "p", metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	upd := r.WaitSent(message.OpUpdate, res(a, r.NS, "pod", "p"))
	if !strings.Contains(string(upd.Content), "deletionTimestamp") {
		t.Fatalf("the node was not told the pod is being deleted: %s", upd.Content)
	}
	if resp := r.request(b, message.OpDelete, r.NS, "pod", "p", edgecontroller.PodDeleted{UID: p.UID}); resp.Route.Operation != message.OpError {
		t.Fatalf("another node completed the deletion: %s", resp.Content)
	}
	if _, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Get(context.Background(), "p", metav1.GetOptions{}); err != nil {
		t.Fatalf("pod gone before its node confirmed: %v", err)
	}
	if resp := r.request(a, message.OpDelete, r.NS, "pod", "p", edgecontroller.PodDeleted{UID: p.UID}); resp.Route.Operation == message.OpError {
		t.Fatalf("confirmation refused: %s", resp.Content)
	}
	eventually(t, "pod removed from the API", func() (bool, string) {
		_, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Get(context.Background(), "p", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	r.WaitSent(message.OpDelete, res(a, r.NS, "pod", "p"))
	// The edge confirming again (its second word on a pod already gone) is answered OK: nothing to do.
	if resp := r.request(a, message.OpDelete, r.NS, "pod", "p", edgecontroller.PodDeleted{UID: p.UID}); resp.Route.Operation == message.OpError {
		t.Fatalf("a repeated confirmation of a pod already gone was refused: %s", resp.Content)
	}
}

func TestPodReferencingAMissingConfigMapGetsAWarningEventAndTheConfigMapLaterReachesTheNode(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.join(node)
	r.pod("p", node, "configmap/late")
	r.WaitSent(message.OpInsert, res(node, r.NS, "pod", "p"))
	eventually(t, "MissingReference event", func() (bool, string) {
		evs, _ := ctrlrig.Env.Client.CoreV1().Events(r.NS).List(context.Background(), metav1.ListOptions{})
		for _, e := range evs.Items {
			if e.Reason == "MissingReference" && strings.Contains(e.Message, "late") {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(evs.Items), " events")
	})
	r.configMap("late", "1")
	r.WaitSent(message.OpUpdate, res(node, r.NS, "configmap", "late"))
}

func TestPodWithAProjectedTokenGetsABoundTokenOnItsNodeOnlyAndAMissingServiceAccountIsAnEvent(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.join(a)
	r.join(b)
	exp := int64(3600)
	tokenPod := func(name, sa string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.NS}, Spec: corev1.PodSpec{NodeName: a, ServiceAccountName: sa,
			Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}},
			Volumes: []corev1.Volume{{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", ExpirationSeconds: &exp, Path: "token"}},
			}}}}}}}
		created, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Create(context.Background(), p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return created
	}
	if _, err := ctrlrig.Env.Client.CoreV1().ServiceAccounts(r.NS).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := tokenPod("p", "app")
	m := r.WaitSent(message.OpUpdate, res(a, r.NS, edgecontroller.TypeToken, "p"))
	var got edgecontroller.PodTokens
	if err := json.Unmarshal(m.Content, &got); err != nil || got.PodUID != string(p.UID) || len(got.Tokens) != 1 ||
		got.Tokens[0].Audience != "vault" || got.Tokens[0].Token == "" || got.Tokens[0].ExpirationTimestamp.IsZero() {
		t.Fatalf("tokens: %v %+v", err, got)
	}
	if resp := r.request(b, message.OpQuery, r.NS, edgecontroller.TypeToken, "p", nil); resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), "forbidden") {
		t.Fatalf("another node read the pod's token: %s", resp.Content)
	}
	if resp := r.request(a, message.OpQuery, r.NS, edgecontroller.TypeToken, "p", nil); resp.Route.Operation == message.OpError {
		t.Fatalf("its node could not read the pod's token: %s", resp.Content)
	}
	tokenPod("q", "nobody")
	eventually(t, "MissingReference event for the service account", func() (bool, string) {
		evs, _ := ctrlrig.Env.Client.CoreV1().Events(r.NS).List(context.Background(), metav1.ListOptions{})
		for _, e := range evs.Items {
			if e.Reason == "MissingReference" && strings.Contains(e.Message, "nobody") {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(evs.Items), " events")
	})
	if err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Delete(context.Background(), "p", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	r.WaitSent(message.OpDelete, res(a, r.NS, edgecontroller.TypeToken, "p"))
}

func TestProblemsInAStatusFromTheEdgeBecomeWarningEventsOnce(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.join(node)
	p := r.pod("p", node)
	bad := corev1.PodStatus{Phase: corev1.PodPending, Reason: "InvalidPodSpec", Message: `volume mount "data" names no volume`,
		ContainerStatuses: []corev1.ContainerStatus{{Name: "c", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason: "ErrImagePull", Message: "image localhost/nope:1 is not present and cannot be pulled"}}}}}
	for range 2 { // the same problem reported twice is one Event each
		if resp := r.request(node, message.OpUpdate, r.NS, "podstatus", "p", edgecontroller.PodStatusReport{UID: p.UID, Status: bad}); resp.Route.Operation == message.OpError {
			t.Fatalf("refused: %s", resp.Content)
		}
		eventually(t, "status written", func() (bool, string) {
			got, _ := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Get(context.Background(), "p", metav1.GetOptions{})
			return got.Status.Reason == "InvalidPodSpec", got.Status.Reason
		})
	}
	eventually(t, "one Warning Event per problem", func() (bool, string) {
		evs, _ := ctrlrig.Env.Client.CoreV1().Events(r.NS).List(context.Background(), metav1.ListOptions{})
		counts := map[string]int32{}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.InvolvedObject.Name == "p" {
				counts[e.Reason] += e.Count
			}
		}
		return counts["InvalidPodSpec"] == 1 && counts["ErrImagePull"] == 1, fmt.Sprint(counts)
	})
}
