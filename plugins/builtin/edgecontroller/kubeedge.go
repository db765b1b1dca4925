package edgecontroller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// What KubeEdge's edged (a kubelet that reaches the API only through the hub) asks of the cloud, on top
// of what Kedge's own edge sends. Its metamanager client reads the answers as
// {"Object": <the object>, "Err": <a Kubernetes StatusError>} (client.NodeResp, client.LeaseResp), so
// an API error travels as its Status and edged's kubelet code sees NotFound, Conflict, ... as the
// kubelet would from the API server.
const (
	TypeNodePatch = "nodepatch" // a strategic merge patch of the node's status (kubelet's PatchNodeStatus)
	TypeLease     = "lease"     // the node's Lease in kube-node-lease: query, insert, update
	TypePodPatch  = "podpatch"  // a strategic merge patch of a pod's status (kubelet's status manager)
)

// kubeEdgeResp is KubeEdge's answer to a write or read it routes through the cloud.
type kubeEdgeResp struct {
	Object any                    `json:"Object"`
	Err    *apierrors.StatusError `json:"Err,omitempty"`
}

func respond(obj any, err error) (any, error) {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return kubeEdgeResp{Object: obj, Err: se}, nil
	}
	if err != nil {
		return nil, err
	}
	return kubeEdgeResp{Object: obj}, nil
}

// fromKubeEdge handles what only KubeEdge's edged sends; handled is false for everything else.
func (m *Module) fromKubeEdge(ctx context.Context, node string, res message.Resource, msg sdk.Message) (content any, handled bool, err error) {
	op := msg.Route.Operation
	switch {
	case res.Type == TypeNode && (op == message.OpInsert || op == message.OpUpdate):
		if res.Name != node {
			return nil, true, fmt.Errorf("%w: node %s may not write node %s", errForbidden, node, res.Name)
		}
		var n corev1.Node
		if err := decodeStrict(msg.Content, &n); err != nil {
			return nil, true, fmt.Errorf("node %s from its edged: %w", node, err)
		}
		content, err = respond(m.kubeEdgeNode(ctx, node, &n))
		return content, true, err
	case res.Type == TypeNodePatch && op == message.OpPatch:
		if res.Name != node {
			return nil, true, fmt.Errorf("%w: node %s may not patch node %s", errForbidden, node, res.Name)
		}
		if len(msg.Content) == 0 || !json.Valid(msg.Content) || msg.Content[0] != '{' {
			return nil, true, fmt.Errorf("node status patch of %s: content is not a JSON patch object", node)
		}
		n, err := m.client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, msg.Content, metav1.PatchOptions{}, "status")
		if err == nil {
			m.noteReport(node)
			n.TypeMeta = nodeType
		}
		content, err = respond(n, err)
		return content, true, err
	case res.Type == TypePodPatch && op == message.OpPatch:
		pod, err := m.boundPod(ctx, node, res)
		if err != nil {
			return nil, true, err
		}
		if len(msg.Content) == 0 || !json.Valid(msg.Content) || msg.Content[0] != '{' {
			return nil, true, fmt.Errorf("status patch of pod %s/%s: content is not a JSON patch object", res.Namespace, res.Name)
		}
		var uid struct {
			Metadata struct {
				UID types.UID `json:"uid"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(msg.Content, &uid); err != nil || (uid.Metadata.UID != "" && uid.Metadata.UID != pod.UID) {
			return nil, true, fmt.Errorf("status patch of pod %s/%s is for uid %q, the pod is uid %s: ignored", res.Namespace, res.Name, uid.Metadata.UID, pod.UID)
		}
		p, err := m.client.CoreV1().Pods(res.Namespace).Patch(ctx, res.Name, types.StrategicMergePatchType, msg.Content, metav1.PatchOptions{}, "status")
		if err == nil {
			p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		}
		content, err = respond(p, err)
		return content, true, err
	case res.Type == TypePod && op == message.OpDelete:
		// edged's kubelet finishing a graceful deletion sends the API's DeleteOptions (grace 0, the
		// pod's uid as precondition), not Kedge's {"uid"}: the same request, checked the same way.
		var opts metav1.DeleteOptions
		if err := json.Unmarshal(msg.Content, &opts); err != nil || opts.Preconditions == nil || opts.Preconditions.UID == nil {
			return nil, false, nil // Kedge's form (or a bad one): podDeleted says what is wrong
		}
		raw, _ := json.Marshal(PodDeleted{UID: *opts.Preconditions.UID})
		return "OK", true, m.podDeleted(ctx, node, res, raw)
	case res.Type == TypeToken && op == message.OpQuery:
		tr, ok, err := kubeEdgeTokenRequest(msg.Content)
		if !ok && err == nil {
			return nil, false, nil // Kedge's own query of a pod's tokens
		}
		if err != nil {
			return nil, true, err
		}
		t, err := m.kubeEdgeToken(ctx, node, res, tr)
		if err != nil {
			return nil, true, err
		}
		return t, true, nil
	case res.Type == TypeEvent:
		return "OK", true, m.kubeEdgeEvent(ctx, node, res, op, msg.Content)
	case res.Type == TypeLease:
		if res.Namespace != leaseNamespace || res.Name != node {
			return nil, true, fmt.Errorf("%w: node %s may use only its own Lease %s/%s, not %s/%s", errForbidden, node, leaseNamespace, node, res.Namespace, res.Name)
		}
		leases := m.client.CoordinationV1().Leases(leaseNamespace)
		var l *coordinationv1.Lease
		switch op {
		case message.OpQuery:
			l, err = leases.Get(ctx, node, metav1.GetOptions{})
		case message.OpInsert, message.OpUpdate:
			var in coordinationv1.Lease
			if err := decodeStrict(msg.Content, &in); err != nil {
				return nil, true, fmt.Errorf("lease of %s: %w", node, err)
			}
			if in.Name != node || (in.Namespace != "" && in.Namespace != leaseNamespace) {
				return nil, true, fmt.Errorf("%w: node %s may write only its own Lease, not %s/%s", errForbidden, node, in.Namespace, in.Name)
			}
			in.Namespace = leaseNamespace
			if op == message.OpInsert {
				l, err = leases.Create(ctx, &in, metav1.CreateOptions{})
			} else {
				l, err = leases.Update(ctx, &in, metav1.UpdateOptions{})
			}
			if err == nil {
				m.noteReport(node)
			}
		default:
			return nil, false, nil
		}
		if err == nil {
			l.TypeMeta = leaseType
		}
		content, err = respond(l, err)
		return content, true, err
	}
	return nil, false, nil
}

// kubeEdgeNode registers the Node edged sends (the kubelet's own registration): created if missing,
// else its labels, annotations and status are taken from edged's, as the kubelet's registration
// reconciles them. The edge label Kedge puts on its nodes is kept.
func (m *Module) kubeEdgeNode(ctx context.Context, node string, in *corev1.Node) (*corev1.Node, error) {
	nodes := m.client.CoreV1().Nodes()
	var out *corev1.Node
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := nodes.Get(ctx, node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			n := in.DeepCopy()
			n.ResourceVersion, n.UID = "", ""
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[EdgeLabel] = ""
			out, err = nodes.Create(ctx, n, metav1.CreateOptions{})
			if err == nil {
				m.metrics.registered.Inc()
			}
			return err
		}
		if err != nil {
			return err
		}
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		for k, v := range in.Labels {
			cur.Labels[k] = v
		}
		cur.Labels[EdgeLabel] = ""
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		for k, v := range in.Annotations {
			cur.Annotations[k] = v
		}
		if cur, err = nodes.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
		cur.Status = in.Status
		out, err = nodes.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, err
	}
	m.noteReport(node)
	out.TypeMeta = nodeType
	return out, nil
}

// noteReport records that the node reported (its Ready condition is its own edged's to set).
func (m *Module) noteReport(node string) {
	st := m.nodeState(node)
	m.mu.Lock()
	st.unknownSet = false
	m.mu.Unlock()
}

var (
	nodeType  = metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}
	leaseType = metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"}
)
