package edgecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk/kube/controller"
	"github.com/kedge-io/kedge/sdk/message"
)

// Resource types on the wire (the <type> segment of a resource path).
const (
	TypePod       = "pod"
	TypeConfigMap = "configmap"
	TypeSecret    = "secret"
	TypeService   = "service"
	TypeNode      = "node"
	TypePodStatus = "podstatus"
	TypeNodeStat  = "nodestatus"
)

// clusterNamespace is the namespace segment cluster-scoped objects (Nodes) travel under.
const clusterNamespace = "default"

// item is one API object the workers reconcile.
type item struct {
	Type, Namespace, Name string
}

func (i item) String() string { return i.Type + " " + i.Namespace + "/" + i.Name }

// objKey names an object a pod references.
type objKey = item

// podRecord is what was last sent for a pod: its node, the objects it references, its last state.
type podRecord struct {
	node string
	refs map[objKey]bool
	last *corev1.Pod
}

// nodeState is the controller's view of one edge node.
type nodeState struct {
	// Link: connected, inventoried, and whether the last connection was KubeEdge's edgecore
	// (cloudhub says so on connect): it sends no inventory and asks for its pods' service-account
	// tokens itself.
	controller.Link
	since        time.Time // of the last connect or disconnect
	unknownSet   bool      // Ready=Unknown already written for the current disconnection
	nodeSent     string    // fingerprint of the Node object last sent to the node
	statusRV     string    // resourceVersion of the Node this cloudcore last wrote the status of
	shown        shownReport
	leaseRenewed time.Time // when this cloudcore renewed the node's Lease (or found it fresh)
	renewing     bool      // a renewal of the node's Lease is in flight (renewLeases)
}

const podNodeIndex = "spec.nodeName"

// watch registers the informers and their handlers, and returns what says they have synced.
func (m *Module) watch() ([]cache.InformerSynced, error) {
	podInf := m.factory.Core().V1().Pods()
	if err := podInf.Informer().AddIndexers(cache.Indexers{podNodeIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, err
	}
	m.pods, m.podIdx = podInf.Lister(), podInf.Informer().GetIndexer()
	m.nodes = m.factory.Core().V1().Nodes().Lister()
	m.cms = m.factory.Core().V1().ConfigMaps().Lister()
	m.secrets = m.factory.Core().V1().Secrets().Lister()
	m.services = m.factory.Core().V1().Services().Lister()

	var synced []cache.InformerSynced
	for typ, inf := range map[string]cache.SharedIndexInformer{
		TypePod:       podInf.Informer(),
		TypeConfigMap: m.factory.Core().V1().ConfigMaps().Informer(),
		TypeSecret:    m.factory.Core().V1().Secrets().Informer(),
		TypeService:   m.factory.Core().V1().Services().Informer(),
		TypeNode:      m.factory.Core().V1().Nodes().Informer(),
	} {
		if _, err := inf.AddEventHandler(m.ctl.Handler(func(ns, name string) item { return item{Type: typ, Namespace: ns, Name: name} })); err != nil {
			return nil, err
		}
		synced = append(synced, inf.HasSynced)
	}
	return synced, nil
}

func (m *Module) sync(ctx context.Context, it item) error {
	switch it.Type {
	case TypePod:
		return m.syncPod(ctx, it)
	case TypeConfigMap, TypeSecret:
		return m.syncReferenced(ctx, it)
	case TypeService:
		return m.syncService(ctx, it)
	case TypeNode:
		return m.syncNode(ctx, it)
	}
	return fmt.Errorf("unknown item type %q", it.Type)
}

// isEdge reports whether name is a Node labelled as an edge node.
func (m *Module) isEdge(name string) bool {
	n, err := m.nodes.Get(name)
	if err != nil {
		return false
	}
	_, ok := n.Labels[EdgeLabel]
	return ok
}

// syncPod sends a pod to its edge node (or removes it from the node that had it) and keeps the
// node's set of referenced objects in step.
func (m *Module) syncPod(ctx context.Context, it item) error {
	key := it.Namespace + "/" + it.Name
	pod, err := m.pods.Pods(it.Namespace).Get(it.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	m.mu.Lock()
	prev, had := m.podNodes[key]
	m.mu.Unlock()
	wanted := pod != nil && pod.Spec.NodeName != "" && m.isEdge(pod.Spec.NodeName)
	if had && (!wanted || prev.node != pod.Spec.NodeName) {
		m.emit(ctx, prev.node, message.OpDelete, TypePod, it.Namespace, it.Name, prev.last)
		m.dropTokens(ctx, prev.node, it.Namespace, it.Name)
		m.release(ctx, prev.node, prev.refs)
		m.mu.Lock()
		delete(m.podNodes, key)
		m.mu.Unlock()
		had = false
	}
	if !wanted {
		return nil
	}
	node := pod.Spec.NodeName
	refs := podRefs(pod)
	added, gone := map[objKey]bool{}, map[objKey]bool{}
	for r := range refs {
		if !had || !prev.refs[r] {
			added[r] = true
		}
	}
	if had {
		for r := range prev.refs {
			if !refs[r] {
				gone[r] = true
			}
		}
	}
	m.acquire(ctx, node, pod, added)
	m.release(ctx, node, gone)
	op := message.OpUpdate
	if !had {
		op = message.OpInsert
	}
	m.emit(ctx, node, op, TypePod, it.Namespace, it.Name, pod)
	m.mu.Lock()
	m.podNodes[key] = podRecord{node: node, refs: refs, last: pod}
	m.mu.Unlock()
	if pod.DeletionTimestamp == nil {
		m.syncTokens(ctx, node, pod)
	}
	return nil
}

// acquire records that node needs refs and sends it those it did not have yet.
func (m *Module) acquire(ctx context.Context, node string, pod *corev1.Pod, refs map[objKey]bool) {
	var fresh []objKey
	m.mu.Lock()
	for r := range refs {
		n := m.owners[r]
		if n == nil {
			n = map[string]int{}
			m.owners[r] = n
		}
		if n[node] == 0 {
			fresh = append(fresh, r)
		}
		n[node]++
	}
	m.mu.Unlock()
	// A pod referencing the same object twice from one sync only counts once: podRefs is a set.
	for _, r := range fresh {
		obj, err := m.lookup(r)
		switch {
		case apierrors.IsNotFound(err):
			m.reportMissing(pod, r)
		case err != nil:
			m.host.Logger().Warn("referenced object not readable", "object", r.String(), "err", err)
		default:
			m.emit(ctx, node, message.OpInsert, r.Type, r.Namespace, r.Name, obj)
		}
	}
}

// release drops node's claim on refs; objects no pod of the node references any more are removed there.
func (m *Module) release(ctx context.Context, node string, refs map[objKey]bool) {
	var gone []objKey
	m.mu.Lock()
	for r := range refs {
		n := m.owners[r]
		if n == nil {
			continue
		}
		n[node]--
		if n[node] <= 0 {
			delete(n, node)
			gone = append(gone, r)
		}
		if len(n) == 0 {
			delete(m.owners, r)
		}
	}
	m.mu.Unlock()
	for _, r := range gone {
		obj, _ := m.lookup(r)
		m.emit(ctx, node, message.OpDelete, r.Type, r.Namespace, r.Name, obj)
	}
}

// reportMissing records a Warning Event on the pod, once per pod and reference.
func (m *Module) reportMissing(pod *corev1.Pod, r objKey) {
	k := string(pod.UID) + "/" + r.String()
	m.mu.Lock()
	seen := m.missing[k]
	m.missing[k] = true
	m.mu.Unlock()
	if seen {
		return
	}
	m.metrics.missingRefs.WithLabelValues(r.Type).Inc()
	m.recorder.Eventf(pod, corev1.EventTypeWarning, "MissingReference",
		"%s %s/%s referenced by this pod does not exist; edge node %s gets it as soon as it is created", r.Type, r.Namespace, r.Name, pod.Spec.NodeName)
	m.host.Logger().Warn("pod references a missing object", "pod", pod.Namespace+"/"+pod.Name, "object", r.String(), "node", pod.Spec.NodeName)
}

// lookup reads a referenced object from the informers' cache.
func (m *Module) lookup(r objKey) (runtime.Object, error) {
	switch r.Type {
	case TypeConfigMap:
		return m.cms.ConfigMaps(r.Namespace).Get(r.Name)
	case TypeSecret:
		return m.secrets.Secrets(r.Namespace).Get(r.Name)
	case TypeService:
		return m.services.Services(r.Namespace).Get(r.Name)
	case TypePod:
		return m.pods.Pods(r.Namespace).Get(r.Name)
	case TypeNode:
		return m.nodes.Get(r.Name)
	}
	return nil, fmt.Errorf("type %q is not sent to edge nodes", r.Type)
}

// syncReferenced sends a changed ConfigMap or Secret to exactly the nodes whose pods reference it.
func (m *Module) syncReferenced(ctx context.Context, it item) error {
	m.mu.Lock()
	nodes := make([]string, 0, len(m.owners[it]))
	for n := range m.owners[it] {
		nodes = append(nodes, n)
	}
	m.mu.Unlock()
	if len(nodes) == 0 {
		return nil
	}
	obj, err := m.lookup(it)
	op := message.OpUpdate
	switch {
	case apierrors.IsNotFound(err):
		op, obj = message.OpDelete, nil
	case err != nil:
		return err
	}
	for _, n := range nodes {
		m.emit(ctx, n, op, it.Type, it.Namespace, it.Name, obj)
	}
	return nil
}

// syncService sends a Service to every edge node (service discovery on the edge needs them all).
func (m *Module) syncService(ctx context.Context, it item) error {
	if !m.SendServices {
		return nil
	}
	obj, err := m.lookup(it)
	op := message.OpUpdate
	switch {
	case apierrors.IsNotFound(err):
		op, obj = message.OpDelete, nil
	case err != nil:
		return err
	}
	for _, n := range m.edgeNodes() {
		m.emit(ctx, n, op, it.Type, it.Namespace, it.Name, obj)
	}
	return nil
}

// edgeNodes lists the edge Nodes known to the API.
func (m *Module) edgeNodes() []string {
	all, _ := m.nodes.List(labelsEverything)
	var out []string
	for _, n := range all {
		if _, ok := n.Labels[EdgeLabel]; ok {
			out = append(out, n.Name)
		}
	}
	return out
}

// syncNode sends an edge Node to itself when its labels, annotations, taints or spec changed (not on
// every status heartbeat), and when a node becomes an edge node, queues the pods already bound to it.
func (m *Module) syncNode(ctx context.Context, it item) error {
	n, err := m.nodes.Get(it.Name)
	if apierrors.IsNotFound(err) {
		m.mu.Lock()
		if st := m.state[it.Name]; st != nil {
			st.nodeSent = ""
		}
		m.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	if _, ok := n.Labels[EdgeLabel]; !ok {
		return nil
	}
	fp, _ := json.Marshal(struct {
		L, A map[string]string
		S    corev1.NodeSpec
	}{n.Labels, n.Annotations, n.Spec})
	st := m.nodeState(it.Name)
	m.mu.Lock()
	first := st.nodeSent == ""
	changed := st.nodeSent != string(fp)
	st.nodeSent = string(fp)
	m.mu.Unlock()
	if changed {
		m.emit(ctx, n.Name, message.OpUpdate, TypeNode, clusterNamespace, n.Name, n)
	}
	if first {
		pods, _ := m.podIdx.ByIndex(podNodeIndex, n.Name)
		for _, p := range pods {
			if pod, ok := p.(*corev1.Pod); ok {
				m.ctl.Queue.Add(item{Type: TypePod, Namespace: pod.Namespace, Name: pod.Name})
			}
		}
		if m.SendServices {
			svcs, _ := m.services.List(labelsEverything)
			for _, s := range svcs {
				m.emit(ctx, n.Name, message.OpUpdate, TypeService, s.Namespace, s.Name, s)
			}
		}
	}
	return nil
}

// nodeState returns (creating) the state of an edge node.
func (m *Module) nodeState(name string) *nodeState { return controller.Entry(&m.mu, m.state, name) }

var gvks = map[string]schema.GroupVersionKind{
	TypePod:       corev1.SchemeGroupVersion.WithKind("Pod"),
	TypeConfigMap: corev1.SchemeGroupVersion.WithKind("ConfigMap"),
	TypeSecret:    corev1.SchemeGroupVersion.WithKind("Secret"),
	TypeService:   corev1.SchemeGroupVersion.WithKind("Service"),
	TypeNode:      corev1.SchemeGroupVersion.WithKind("Node"),
}

// emit queues a message for node with obj as content (its apiVersion and kind set) and obj's
// resourceVersion in the header. Until the node's inventory has been reconciled after this cloudcore
// started, nothing is sent: the reconciliation sends exactly what the node lacks.
func (m *Module) emit(ctx context.Context, node, op, typ, ns, name string, obj runtime.Object) {
	if ns == "" {
		ns = clusterNamespace
	}
	if !controller.Ready(&m.mu, &m.nodeState(node).Link) {
		m.metrics.deferred.Inc()
		return
	}
	m.send(ctx, node, op, typ, ns, name, obj)
}

func (m *Module) send(ctx context.Context, node, op, typ, ns, name string, obj runtime.Object) {
	res := message.Resource{Node: node, Namespace: ns, Type: typ, Name: name}.Cloud()
	msg := message.New(Name, "resource", op, res)
	var err error
	if obj != nil && !isNilObject(obj) {
		msg, err = controller.WithObject(msg, obj, gvks[typ])
	} else {
		msg, err = msg.WithContent(map[string]any{"metadata": map[string]string{"namespace": ns, "name": name}})
	}
	if err != nil {
		m.host.Logger().Error("object not encodable for the edge", "resource", res, "err", err)
		return
	}
	if _, err := strconv.ParseUint(msg.Header.ResourceVersion, 10, 64); err != nil {
		msg.Header.ResourceVersion = "" // an opaque version the edge cannot compare: let it store unconditionally
	}
	if err := m.host.Send(ctx, m.HubModule, msg); err != nil {
		m.host.Logger().Warn("message for the edge not queued", "node", node, "resource", res, "err", err)
		return
	}
	m.metrics.downstream.WithLabelValues(typ, op).Inc()
}

func isNilObject(o runtime.Object) bool {
	switch v := o.(type) {
	case *corev1.Pod:
		return v == nil
	case *corev1.ConfigMap:
		return v == nil
	case *corev1.Secret:
		return v == nil
	case *corev1.Service:
		return v == nil
	case *corev1.Node:
		return v == nil
	case *PodTokens:
		return v == nil
	}
	return false
}

// podRefs lists the ConfigMaps and Secrets a pod references: volumes (including projected ones),
// env and envFrom of every container, and image pull secrets.
func podRefs(p *corev1.Pod) map[objKey]bool {
	refs := map[objKey]bool{}
	add := func(typ, name string) {
		if name != "" {
			refs[objKey{Type: typ, Namespace: p.Namespace, Name: name}] = true
		}
	}
	for _, v := range p.Spec.Volumes {
		if v.ConfigMap != nil {
			add(TypeConfigMap, v.ConfigMap.Name)
		}
		if v.Secret != nil {
			add(TypeSecret, v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					add(TypeConfigMap, s.ConfigMap.Name)
				}
				if s.Secret != nil {
					add(TypeSecret, s.Secret.Name)
				}
			}
		}
	}
	containers := append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...)
	for _, c := range containers {
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				add(TypeConfigMap, r.Name)
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				add(TypeSecret, r.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.ConfigMapRef != nil {
				add(TypeConfigMap, e.ConfigMapRef.Name)
			}
			if e.SecretRef != nil {
				add(TypeSecret, e.SecretRef.Name)
			}
		}
	}
	for _, s := range p.Spec.ImagePullSecrets {
		add(TypeSecret, s.Name)
	}
	return refs
}

// references reports whether some pod bound to node references the object (NodeRestriction).
func (m *Module) references(node string, k objKey) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owners[k][node] > 0
}

// desired lists everything node should hold: its pods, what they reference, its Node, and Services.
func (m *Module) desired(node string) map[string]runtime.Object {
	out := map[string]runtime.Object{}
	put := func(typ, ns, name string, o runtime.Object) {
		if ns == "" {
			ns = clusterNamespace
		}
		out[message.Resource{Namespace: ns, Type: typ, Name: name}.Edge()] = o
	}
	if !m.isEdge(node) {
		return out
	}
	if n, err := m.nodes.Get(node); err == nil {
		put(TypeNode, "", node, n)
	}
	pods, _ := m.podIdx.ByIndex(podNodeIndex, node)
	for _, o := range pods {
		p := o.(*corev1.Pod)
		put(TypePod, p.Namespace, p.Name, p)
		if t := m.tokensFor(p.Namespace, p.Name); t != nil && !m.isKubeEdge(node) {
			put(TypeToken, p.Namespace, p.Name, t)
		}
		for r := range podRefs(p) {
			if obj, err := m.lookup(r); err == nil {
				put(r.Type, r.Namespace, r.Name, obj)
			}
		}
	}
	if m.SendServices {
		svcs, _ := m.services.List(labelsEverything)
		for _, s := range svcs {
			put(TypeService, s.Namespace, s.Name, s)
		}
	}
	return out
}

// managedTypes are the types this controller owns on the edge; anything else in an inventory is
// another module's business.
var managedTypes = map[string]bool{TypePod: true, TypeConfigMap: true, TypeSecret: true, TypeService: true, TypeNode: true, TypeToken: true}

// reconcile brings node to the desired state from its inventory (nil: it holds nothing we know of):
// objects it lacks or holds at an older version are sent, objects it should not hold are deleted.
// From then on, changes flow to the node as they happen.
func (m *Module) reconcile(ctx context.Context, node string, inv []InventoryItem) {
	// Mark first: a change the workers see from now on is sent too (at worst twice; the edge ignores
	// a version it holds), and none falls between this snapshot and the flag.
	st := m.nodeState(node)
	m.mu.Lock()
	st.Inventoried = true
	m.mu.Unlock()
	want := m.desired(node)
	rvs := make(map[string]uint64, len(want))
	for res, obj := range want {
		rvs[res], _ = strconv.ParseUint(obj.(interface{ GetResourceVersion() string }).GetResourceVersion(), 10, 64)
	}
	send, remove := controller.Plan(inv, rvs, func(typ string) bool { return managedTypes[typ] })
	for _, r := range send {
		m.send(ctx, node, message.OpUpdate, r.Type, r.Namespace, r.Name, want[r.Edge()])
	}
	for _, r := range remove {
		m.send(ctx, node, message.OpDelete, r.Type, r.Namespace, r.Name, nil)
	}
	sent, removed := len(send), len(remove)
	m.metrics.reconciles.Inc()
	m.host.Logger().Info("edge node reconciled", "node", node, "held", len(inv), "sent", sent, "removed", removed, "wanted", len(want))
}
