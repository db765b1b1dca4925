package edgecontroller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/kube/controller"
	"github.com/kedge-io/kedge/sdk/message"
)

// InventoryItem is one object an edge node holds, as its metamanager reports it on connect (the
// shared wire type).
type InventoryItem = controller.InventoryItem

// PodStatusReport is the content of a podstatus update from the edge: the pod's identity and its
// complete status.
type PodStatusReport struct {
	UID    types.UID        `json:"uid"`
	Name   string           `json:"name,omitempty"`
	Status corev1.PodStatus `json:"status"`
}

// PodDeleted is the content of a pod delete from the edge: its containers have stopped, so the API may
// finish the graceful deletion of exactly that pod.
type PodDeleted struct {
	UID types.UID `json:"uid"`
}

// errForbidden marks a request the NodeRestriction rule refuses.
var errForbidden = controller.ErrForbidden

func (m *Module) handleUp(ctx context.Context, node string, msg sdk.Message) {
	res, err := message.ParseCloud(msg.Route.Resource)
	var content any = "OK"
	if err == nil {
		content, err = m.fromEdge(ctx, node, res, msg)
	}
	result := controller.Outcome(m.host.Logger(), node, msg, err)
	if result == "forbidden" {
		m.metrics.denied.WithLabelValues(res.Type, msg.Route.Operation).Inc()
	}
	if err != nil {
		typ := res.Type
		if typ == "" {
			typ = "invalid"
		}
		m.metrics.refused.WithLabelValues(typ, msg.Route.Operation).Inc()
	}
	m.metrics.upstream.WithLabelValues(res.Type, result).Inc()
	controller.Answer(ctx, m.host, Name, node, msg, content, err, func(reply *sdk.Message) {
		if o, ok := content.(interface{ GetResourceVersion() string }); ok {
			reply.Header.ResourceVersion = o.GetResourceVersion()
		}
	})
}

// fromEdge handles one request of an edge node and returns the answer's content.
func (m *Module) fromEdge(ctx context.Context, node string, res message.Resource, msg sdk.Message) (any, error) {
	if content, handled, err := m.fromKubeEdge(ctx, node, res, msg); handled { // kubeedge.go
		return content, err
	}
	op := msg.Route.Operation
	switch {
	case res.Type == TypeNodeStat && isWrite(op):
		if res.Name != node {
			return nil, fmt.Errorf("%w: node %s may not report the status of node %s", errForbidden, node, res.Name)
		}
		var rep NodeReport
		if err := decodeStrict(msg.Content, &rep); err != nil {
			return nil, fmt.Errorf("node status of %s: %w", node, err)
		}
		return "OK", m.reportNode(ctx, node, rep)
	case res.Type == TypePodStatus && isWrite(op):
		return "OK", m.podStatus(ctx, node, res, msg.Content)
	case res.Type == TypePod && op == message.OpDelete:
		return "OK", m.podDeleted(ctx, node, res, msg.Content)
	case op == message.OpQuery:
		return m.query(ctx, node, res)
	}
	return nil, fmt.Errorf("%s of %s from an edge node is not something the edge controller handles", op, res.Type)
}

func isWrite(op string) bool {
	return op == message.OpUpdate || op == message.OpInsert || op == message.OpPatch
}

// decodeStrict decodes JSON, naming what was wrong.
func decodeStrict(raw []byte, v any) error {
	if len(raw) == 0 {
		return errors.New("empty content")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("content is not valid: %w", err)
	}
	return nil
}

// boundPod returns the pod res names if it is bound to node; anything else is forbidden.
func (m *Module) boundPod(ctx context.Context, node string, res message.Resource) (*corev1.Pod, error) {
	pod, err := m.pods.Pods(res.Namespace).Get(res.Name)
	if apierrors.IsNotFound(err) { // the informer may lag behind a pod just created: ask the API
		pod, err = m.client.CoreV1().Pods(res.Namespace).Get(ctx, res.Name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: node %s has no pod %s/%s bound to it (no such pod)", errForbidden, node, res.Namespace, res.Name)
	}
	if err != nil {
		return nil, err
	}
	if pod.Spec.NodeName != node {
		return nil, fmt.Errorf("%w: pod %s/%s is not bound to node %s", errForbidden, res.Namespace, res.Name, node)
	}
	return pod, nil
}

// podStatus writes a pod's status reported by its node.
func (m *Module) podStatus(ctx context.Context, node string, res message.Resource, raw []byte) error {
	pod, err := m.boundPod(ctx, node, res)
	if err != nil {
		return err
	}
	var rep PodStatusReport
	if err := decodeStrict(raw, &rep); err != nil {
		m.recorder.Eventf(pod, corev1.EventTypeWarning, "InvalidStatusReport", "edge node %s sent a status for this pod that is not a pod status: %v", node, err)
		return fmt.Errorf("status of pod %s/%s: %w", res.Namespace, res.Name, err)
	}
	if rep.UID != "" && rep.UID != pod.UID {
		return fmt.Errorf("status of pod %s/%s is for uid %s, the pod is uid %s (an older pod of that name): ignored", res.Namespace, res.Name, rep.UID, pod.UID)
	}
	m.statusEvents(node, pod, rep.Status)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID}, "status": rep.Status})
	if err != nil {
		return err
	}
	_, err = m.client.CoreV1().Pods(res.Namespace).Patch(ctx, res.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kedge-edgecontroller"}, "status")
	if err != nil {
		return fmt.Errorf("status of pod %s/%s: %w", res.Namespace, res.Name, err)
	}
	return nil
}

// podDeleted completes the graceful deletion of a pod whose node confirmed its containers stopped.
func (m *Module) podDeleted(ctx context.Context, node string, res message.Resource, raw []byte) error {
	pod, err := m.boundPod(ctx, node, res)
	if errors.Is(err, errForbidden) && m.podGone(ctx, res) {
		return nil // already gone (a repeated confirmation, or the edge's second word on it): nothing to do
	}
	if err != nil {
		return err
	}
	var d PodDeleted
	if err := decodeStrict(raw, &d); err != nil {
		return fmt.Errorf("deletion of pod %s/%s: %w", res.Namespace, res.Name, err)
	}
	if d.UID != pod.UID {
		return fmt.Errorf("deletion of pod %s/%s names uid %q, the pod is uid %s: ignored", res.Namespace, res.Name, d.UID, pod.UID)
	}
	if pod.DeletionTimestamp == nil {
		return fmt.Errorf("%w: pod %s/%s is not being deleted; an edge node only completes deletions the API started", errForbidden, res.Namespace, res.Name)
	}
	zero := int64(0)
	err = m.client.CoreV1().Pods(res.Namespace).Delete(ctx, res.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if apierrors.IsNotFound(err) {
		return nil // already gone
	}
	return err
}

// query answers an edge node's read of one object, if the node may read it.
func (m *Module) query(ctx context.Context, node string, res message.Resource) (any, error) {
	if res.Name == "" {
		return nil, fmt.Errorf("%w: node %s may only read single objects, not the list %s", errForbidden, node, res.Edge())
	}
	k := objKey{Type: res.Type, Namespace: res.Namespace, Name: res.Name}
	switch res.Type {
	case TypePod:
		if _, err := m.boundPod(ctx, node, res); err != nil {
			return nil, err
		}
	case TypeNode:
		if res.Name != node {
			return nil, fmt.Errorf("%w: node %s may not read node %s", errForbidden, node, res.Name)
		}
		k.Namespace = ""
	case TypeConfigMap, TypeSecret:
		if !m.references(node, k) {
			return nil, fmt.Errorf("%w: node %s may not read %s %s/%s: no pod bound to it references it", errForbidden, node, res.Type, res.Namespace, res.Name)
		}
	case TypeToken:
		if _, err := m.boundPod(ctx, node, res); err != nil {
			return nil, err
		}
		t := m.tokensFor(res.Namespace, res.Name)
		if t == nil {
			return nil, fmt.Errorf("no service-account tokens issued for pod %s/%s", res.Namespace, res.Name)
		}
		return t, nil
	case TypeService:
		if !m.SendServices {
			return nil, fmt.Errorf("%w: services are not sent to edge nodes (sendServices is off)", errForbidden)
		}
	default:
		return nil, fmt.Errorf("%w: node %s may not read objects of type %q", errForbidden, node, res.Type)
	}
	obj, err := m.lookup(k)
	if err != nil {
		return nil, err
	}
	obj = obj.DeepCopyObject()
	obj.GetObjectKind().SetGroupVersionKind(gvks[res.Type])
	return obj, nil
}

// connected notes a node's connection and registers its Node when it has none.
func (m *Module) connected(ctx context.Context, node string, kubeedge bool) {
	st := m.nodeState(node)
	m.mu.Lock()
	st.Connect(kubeedge)
	st.since, st.unknownSet = time.Now(), false
	m.mu.Unlock()
	if err := m.register(ctx, node); err != nil {
		m.host.Logger().Error("edge node not registered", "node", node, "err", err)
	} else if !kubeedge { // KubeEdge's edged keeps its own Lease and Ready
		// The link is the node's liveness (renewLeases): its Lease is fresh and its Ready True from
		// now, not from its next report, which an idle edge may send a minute later.
		if err := m.renewLease(ctx, node, st, time.Now()); err != nil {
			m.host.Logger().Warn("lease not renewed", "node", node, "err", err)
		}
		if err := m.markConnected(ctx, node); err != nil {
			m.host.Logger().Warn("node not set Ready on its connection", "node", node, "err", err)
		}
	}
	controller.AwaitInventory(ctx, m.host.Logger(), &m.mu, &st.Link, node, m.InventoryWait, func() { m.reconcile(ctx, node, nil) })
}

func (m *Module) disconnected(_ context.Context, node string) {
	st := m.nodeState(node)
	m.mu.Lock()
	st.Connected, st.since = false, time.Now()
	m.mu.Unlock()
}

// problemReasons are the waiting reasons (and pod-level reasons) that mean something is wrong, as the
// kubelet reports them with Warning Events.
var problemReasons = map[string]bool{
	"InvalidPodSpec": true, "CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
	"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true,
	"CrashLoopBackOff": true, "NoContainerRuntime": true,
}

// statusEvents records a Warning Event on the pod for each problem that is new in a status from its
// node (the edge cannot write Events itself): the pod-level reason and each container's waiting
// reason, when it differs from what the API holds.
func (m *Module) statusEvents(node string, pod *corev1.Pod, st corev1.PodStatus) {
	if st.Reason != "" && st.Reason != pod.Status.Reason && problemReasons[st.Reason] {
		m.recorder.Eventf(pod, corev1.EventTypeWarning, st.Reason, "edge node %s: %s", node, st.Message)
	}
	old := map[string]string{}
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if cs.State.Waiting != nil {
			old[cs.Name] = cs.State.Waiting.Reason
		}
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, st.InitContainerStatuses...), st.ContainerStatuses...) {
		w := cs.State.Waiting
		if w == nil || !problemReasons[w.Reason] || old[cs.Name] == w.Reason {
			continue
		}
		m.recorder.Eventf(pod, corev1.EventTypeWarning, w.Reason, "container %s on edge node %s: %s", cs.Name, node, w.Message)
	}
}

// isKubeEdge says whether node's last connection was KubeEdge's edgecore.
func (m *Module) isKubeEdge(node string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state[node]
	return st != nil && st.KubeEdge
}

// podGone says whether the pod res names no longer exists in the API.
func (m *Module) podGone(ctx context.Context, res message.Resource) bool {
	_, err := m.client.CoreV1().Pods(res.Namespace).Get(ctx, res.Name, metav1.GetOptions{})
	return apierrors.IsNotFound(err)
}
