package edgecontroller_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// errText is the reason of an error answer ({"error": reason}).
func errText(resp message.Message) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(resp.Content, &e)
	return e.Error
}

// kubeEdgeJoin connects node as cloudhub reports a KubeEdge edgecore (no inventory follows).
func (r *rig) kubeEdgeJoin(node string) {
	r.T.Helper()
	r.Event(node, message.OpConnected, map[string]bool{"kubeedge": true})
}

func TestKubeEdgeTokenRequestIsIssuedOnlyForItsPodsServiceAccountAndAudiencesAndNoKedgeTokensAreSent(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.kubeEdgeJoin(a)
	r.kubeEdgeJoin(b)
	ctx := context.Background()
	if _, err := ctrlrig.Env.Client.CoreV1().ServiceAccounts(r.NS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	exp := int64(3607)
	p, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: a, ServiceAccountName: "app",
		Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}},
		Volumes: []corev1.Volume{{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: &exp, Path: "token"}},
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", ExpirationSeconds: &exp, Path: "vault-token"}},
		}}}}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// What KubeEdge's edged sends: a TokenRequest bound to the pod, for the pod's ServiceAccount.
	request := func(aud []string, pod string, uid types.UID) authv1.TokenRequest {
		return authv1.TokenRequest{Spec: authv1.TokenRequestSpec{Audiences: aud, ExpirationSeconds: &exp,
			BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: uid}}}
	}
	for _, tc := range []struct {
		name, node, sa string
		content        any
		refused        string // "" when a token must come back
	}{
		{"the API server's audience", a, "app", request(nil, "p", p.UID), ""},
		{"an audience of the pod's volume", a, "app", request([]string{"vault"}, "p", p.UID), ""},
		{"an audience no volume names", a, "app", request([]string{"other"}, "p", p.UID), `forbidden: pod ` + r.NS + `/p has no projected token volume for audience "other"`},
		{"another ServiceAccount", a, "default", request(nil, "p", p.UID), "forbidden: pod " + r.NS + "/p runs as ServiceAccount app, not default"},
		{"a node the pod is not bound to", b, "app", request(nil, "p", p.UID), "forbidden: pod " + r.NS + "/p is not bound to node " + b},
		{"an older pod of that name", a, "app", request(nil, "p", "0d0e"), "forbidden: service-account token request for pod " + r.NS + "/p names uid 0d0e"},
		{"not bound to a pod", a, "app", authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, "is not bound to a pod"},
		{"not a TokenRequest", a, "app", []byte(`{"spec": 7}`), "content is not a TokenRequest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := r.request(tc.node, message.OpQuery, r.NS, edgecontroller.TypeToken, tc.sa, tc.content)
			if tc.refused != "" {
				if resp.Route.Operation != message.OpError || !strings.Contains(errText(resp), tc.refused) {
					t.Fatalf("answered %s %s, want an error naming %q", resp.Route.Operation, resp.Content, tc.refused)
				}
				return
			}
			var tr authv1.TokenRequest
			if resp.Route.Operation == message.OpError || json.Unmarshal(resp.Content, &tr) != nil || tr.Status.Token == "" || tr.Kind != "TokenRequest" {
				t.Fatalf("answered %s %.300s, want a TokenRequest with a token", resp.Route.Operation, resp.Content)
			}
			review, err := ctrlrig.Env.Client.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: tr.Status.Token, Audiences: tr.Spec.Audiences}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if u := review.Status.User; !review.Status.Authenticated || u.Username != "system:serviceaccount:"+r.NS+":app" || strings.Join(u.Extra["authentication.kubernetes.io/pod-uid"], "") != string(p.UID) {
				t.Fatalf("token review: %+v", review.Status)
			}
		})
	}
	// A KubeEdge node asks for its tokens itself: Kedge's PodTokens object is never queued for it.
	time.Sleep(300 * time.Millisecond)
	for _, s := range r.SentTo(a) {
		if strings.Contains(s, "/"+edgecontroller.TypeToken+"/") {
			t.Fatalf("queued %s for a KubeEdge node", s)
		}
	}
}

func TestKubeEdgeEventsAboutItselfAndItsPodsAreRecordedPatchedAndOthersRefused(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.kubeEdgeJoin(a)
	ctx := context.Background()
	mine := r.pod("mine", a)
	theirs := r.pod("theirs", b)
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	event := func(name string, obj corev1.ObjectReference, host string) corev1.Event {
		return corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: obj.Namespace}, InvolvedObject: obj,
			Reason: "Started", Message: "Started container c", Type: corev1.EventTypeNormal, Count: 1,
			Source: corev1.EventSource{Component: "kubelet", Host: host}, FirstTimestamp: now, LastTimestamp: now}
	}
	podRef := func(p *corev1.Pod) corev1.ObjectReference {
		return corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
	}
	// The kubelet's sink: create, then patch the count of a repeat.
	if resp := r.request(a, message.OpInsert, r.NS, edgecontroller.TypeEvent, "mine.1", event("mine.1", podRef(mine), a)); resp.Route.Operation == message.OpError {
		t.Fatalf("event about its own pod refused: %s", resp.Content)
	}
	ev, err := ctrlrig.Env.Client.CoreV1().Events(r.NS).Get(ctx, "mine.1", metav1.GetOptions{})
	if err != nil || ev.InvolvedObject.UID != mine.UID || ev.Source.Host != a {
		t.Fatalf("recorded event: %v %+v", err, ev)
	}
	patch := map[string]any{"event": event("mine.1", podRef(mine), a), "patchData": `{"count":2,"message":"Started container c again"}`}
	if resp := r.request(a, message.OpPatch, r.NS, edgecontroller.TypeEvent, "mine.1", patch); resp.Route.Operation == message.OpError {
		t.Fatalf("event patch refused: %s", resp.Content)
	}
	if ev, err = ctrlrig.Env.Client.CoreV1().Events(r.NS).Get(ctx, "mine.1", metav1.GetOptions{}); err != nil || ev.Count != 2 || ev.Message != "Started container c again" {
		t.Fatalf("after the patch: %v count %d %q", err, ev.Count, ev.Message)
	}
	// A patch of an event the API no longer has records it whole.
	patch["event"] = event("mine.2", podRef(mine), a)
	if resp := r.request(a, message.OpPatch, r.NS, edgecontroller.TypeEvent, "mine.2", patch); resp.Route.Operation == message.OpError {
		t.Fatalf("patch of a missing event refused: %s", resp.Content)
	}
	if _, err := ctrlrig.Env.Client.CoreV1().Events(r.NS).Get(ctx, "mine.2", metav1.GetOptions{}); err != nil {
		t.Fatalf("patch of a missing event did not create it: %v", err)
	}
	// About the node itself, in namespace default, as the kubelet records NodeReady.
	nodeEv := event("node.1", corev1.ObjectReference{Kind: "Node", Name: a, UID: types.UID(a)}, a)
	nodeEv.Namespace = "default"
	if resp := r.request(a, message.OpInsert, "default", edgecontroller.TypeEvent, "node.1", nodeEv); resp.Route.Operation == message.OpError {
		t.Fatalf("event about itself refused: %s", resp.Content)
	}

	for _, tc := range []struct {
		name    string
		op      string
		content any
		refused string
	}{
		{"about another node's pod", message.OpInsert, event("x.1", podRef(theirs), a), "forbidden: node " + a + " may not record events about pod " + r.NS + "/theirs"},
		{"in another node's name", message.OpInsert, event("x.2", podRef(mine), b), "forbidden: node " + a + " may record events only as itself"},
		{"about another node", message.OpInsert, event("x.3", corev1.ObjectReference{Kind: "Node", Name: b, Namespace: r.NS}, a), "forbidden: node " + a + " may not record events about node " + b},
		{"about a Secret", message.OpInsert, event("x.4", corev1.ObjectReference{Kind: "Secret", Name: "s", Namespace: r.NS}, a), "may record events only about itself and its pods, not a Secret"},
		{"a patch without patchData", message.OpPatch, map[string]any{"event": event("x.5", podRef(mine), a)}, `want {"event": <Event>, "patchData": <JSON patch>}`},
		{"not an Event", message.OpInsert, []byte(`[1]`), "content is not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "x"
			if e, ok := tc.content.(corev1.Event); ok {
				name = e.Name
			}
			resp := r.request(a, tc.op, r.NS, edgecontroller.TypeEvent, name, tc.content)
			if resp.Route.Operation != message.OpError || !strings.Contains(errText(resp), tc.refused) {
				t.Fatalf("answered %s %s, want an error naming %q", resp.Route.Operation, resp.Content, tc.refused)
			}
		})
	}
}
