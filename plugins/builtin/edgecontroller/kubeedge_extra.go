package edgecontroller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/sdk/message"
)

// More of what KubeEdge's edged asks of the cloud, observed from v1.23.1's edgecore under Kedge's
// cloudcore (test/e2e/kubeedge_upstream_sa_test.go):
//
//   - service-account tokens: its kubelet's token manager queries <ns>/serviceaccounttoken/<service
//     account> with a TokenRequest as content (bound to the pod, the audiences and expiration of the
//     pod's projected volume) and mounts what comes back; the answer is the TokenRequest with its
//     status, as the API server's TokenRequest returns it;
//   - events: its kubelet's event sink sends <ns>/event/<name> as insert or update (content: the
//     Event) and patch (content: {"event": <Event>, "patchData": <strategic merge patch as a string>}),
//     expecting no answer.

// TypeEvent is the wire type of the Events KubeEdge's edged records.
const TypeEvent = "event"

// kubeEdgeTokenRequest reads the content of a KubeEdge token query: a TokenRequest bound to a pod;
// ok is false when the content is not a TokenRequest at all (Kedge's own edge sends none).
func kubeEdgeTokenRequest(raw []byte) (tr authv1.TokenRequest, ok bool, err error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return tr, false, nil
	}
	var probe struct {
		Spec json.RawMessage `json:"spec"`
	}
	if json.Unmarshal(raw, &probe) != nil || len(probe.Spec) == 0 {
		return tr, false, nil
	}
	if err := json.Unmarshal(raw, &tr); err != nil {
		return tr, true, fmt.Errorf("service-account token request: content is not a TokenRequest: %w", err)
	}
	return tr, true, nil
}

// kubeEdgeToken issues the token a KubeEdge edge asked for, under the rules the API server's
// NodeRestriction gives a kubelet: only for the ServiceAccount of a pod bound to the node, bound to
// that pod, and only for audiences the pod's projected token volumes name.
func (m *Module) kubeEdgeToken(ctx context.Context, node string, res message.Resource, tr authv1.TokenRequest) (*authv1.TokenRequest, error) {
	ref := tr.Spec.BoundObjectRef
	if ref == nil || ref.Kind != "Pod" || ref.Name == "" {
		return nil, fmt.Errorf("%w: service-account token request of node %s for %s/%s is not bound to a pod (spec.boundObjectRef %+v)", errForbidden, node, res.Namespace, res.Name, ref)
	}
	pod, err := m.boundPod(ctx, node, message.Resource{Namespace: res.Namespace, Type: TypePod, Name: ref.Name})
	if err != nil {
		return nil, err
	}
	if ref.UID != "" && ref.UID != pod.UID {
		return nil, fmt.Errorf("%w: service-account token request for pod %s/%s names uid %s, the pod is uid %s", errForbidden, res.Namespace, ref.Name, ref.UID, pod.UID)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if sa != res.Name {
		return nil, fmt.Errorf("%w: pod %s/%s runs as ServiceAccount %s, not %s", errForbidden, res.Namespace, pod.Name, sa, res.Name)
	}
	audiences := map[string]bool{}
	for _, s := range tokenSpecs(pod) {
		audiences[s.audience] = true
	}
	if len(audiences) == 0 {
		return nil, fmt.Errorf("%w: pod %s/%s has no projected service-account token volume", errForbidden, res.Namespace, pod.Name)
	}
	for _, a := range tr.Spec.Audiences {
		if !audiences[a] {
			return nil, fmt.Errorf("%w: pod %s/%s has no projected token volume for audience %q", errForbidden, res.Namespace, pod.Name, a)
		}
	}
	req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		Audiences:         tr.Spec.Audiences,
		ExpirationSeconds: tr.Spec.ExpirationSeconds,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	out, err := m.client.CoreV1().ServiceAccounts(res.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			m.reportMissing(pod, objKey{Type: "serviceaccount", Namespace: pod.Namespace, Name: sa})
		}
		return nil, fmt.Errorf("service-account token for pod %s/%s: %w", res.Namespace, pod.Name, err)
	}
	out.TypeMeta = metav1.TypeMeta{Kind: "TokenRequest", APIVersion: "authentication.k8s.io/v1"}
	return out, nil
}

// eventPatch is the content of KubeEdge's event patch.
type eventPatch struct {
	Event     *corev1.Event `json:"event"`
	PatchData string        `json:"patchData"`
}

// kubeEdgeEvent writes an Event recorded by a KubeEdge edge's kubelet, about its own Node or a pod
// bound to it, in its own name (source host): created, updated, or patched (and created when the
// patch finds none, as client-go's event sink does).
func (m *Module) kubeEdgeEvent(ctx context.Context, node string, res message.Resource, op string, raw []byte) error {
	var ev corev1.Event
	var patch []byte
	switch op {
	case message.OpInsert, message.OpUpdate:
		if err := decodeStrict(raw, &ev); err != nil {
			return fmt.Errorf("event %s/%s from node %s: %w", res.Namespace, res.Name, node, err)
		}
	case message.OpPatch:
		var p eventPatch
		if err := decodeStrict(raw, &p); err != nil {
			return fmt.Errorf("event patch %s/%s from node %s: %w", res.Namespace, res.Name, node, err)
		}
		if p.Event == nil || p.PatchData == "" || !json.Valid([]byte(p.PatchData)) {
			return fmt.Errorf("event patch %s/%s from node %s: want {\"event\": <Event>, \"patchData\": <JSON patch>}", res.Namespace, res.Name, node)
		}
		ev, patch = *p.Event, []byte(p.PatchData)
	default:
		return fmt.Errorf("%s of an event from an edge node is not something the edge controller handles", op)
	}
	if ev.Name == "" {
		ev.Name = res.Name
	}
	if ev.Namespace == "" {
		ev.Namespace = res.Namespace
	}
	if ev.Name != res.Name || ev.Namespace != res.Namespace {
		return fmt.Errorf("event from node %s is %s/%s but was sent as %s/%s", node, ev.Namespace, ev.Name, res.Namespace, res.Name)
	}
	if err := m.eventAllowed(ctx, node, &ev); err != nil {
		return err
	}
	events := m.client.CoreV1().Events(ev.Namespace)
	ev.ResourceVersion, ev.UID = "", ""
	var err error
	switch op {
	case message.OpInsert:
		_, err = events.Create(ctx, &ev, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil // the recorder's first try, resent: it is there
		}
	case message.OpUpdate:
		err = m.updateEvent(ctx, &ev)
	case message.OpPatch:
		_, err = events.Patch(ctx, ev.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		if apierrors.IsNotFound(err) { // expired or never written: record it whole
			_, err = events.Create(ctx, &ev, metav1.CreateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("event %s/%s from node %s: %w", ev.Namespace, ev.Name, node, err)
	}
	return nil
}

// updateEvent replaces what a repeat changes (count, times, message, series) of a stored Event.
func (m *Module) updateEvent(ctx context.Context, ev *corev1.Event) error {
	events := m.client.CoreV1().Events(ev.Namespace)
	cur, err := events.Get(ctx, ev.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = events.Create(ctx, ev, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	cur.Count, cur.LastTimestamp, cur.Message, cur.Series, cur.EventTime = ev.Count, ev.LastTimestamp, ev.Message, ev.Series, ev.EventTime
	_, err = events.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// eventAllowed says whether node may record ev: it must be about the node itself or a pod bound to
// it, in the object's namespace, and come from the node (its source host, or none, which is set).
func (m *Module) eventAllowed(ctx context.Context, node string, ev *corev1.Event) error {
	if ev.Source.Host == "" {
		ev.Source.Host = node
	}
	if ev.Source.Host != node || (ev.ReportingInstance != "" && ev.ReportingInstance != node) {
		return fmt.Errorf("%w: node %s may record events only as itself, not as %q", errForbidden, node, ev.Source.Host+ev.ReportingInstance)
	}
	obj := ev.InvolvedObject
	switch obj.Kind {
	case "Node":
		if obj.Name != node {
			return fmt.Errorf("%w: node %s may not record events about node %s", errForbidden, node, obj.Name)
		}
		return nil
	case "Pod":
		if obj.Namespace != ev.Namespace {
			return fmt.Errorf("%w: event %s/%s about pod %s/%s is not in the pod's namespace", errForbidden, ev.Namespace, ev.Name, obj.Namespace, obj.Name)
		}
		pod, err := m.pods.Pods(obj.Namespace).Get(obj.Name)
		if apierrors.IsNotFound(err) {
			pod, err = m.client.CoreV1().Pods(obj.Namespace).Get(ctx, obj.Name, metav1.GetOptions{})
		}
		switch {
		case apierrors.IsNotFound(err):
			return nil // a pod the node just finished deleting: its last events still count
		case err != nil:
			return err
		case pod.Spec.NodeName != node && (obj.UID == "" || obj.UID == pod.UID):
			return fmt.Errorf("%w: node %s may not record events about pod %s/%s, bound to %q", errForbidden, node, obj.Namespace, obj.Name, pod.Spec.NodeName)
		}
		return nil
	}
	return fmt.Errorf("%w: node %s may record events only about itself and its pods, not a %s", errForbidden, node, obj.Kind)
}
