package devicecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/kube/controller"
	"github.com/kedge-io/kedge/sdk/message"
)

// Resource types on the wire (the <type> segment of a resource path).
const (
	TypeDevice       = "device"
	TypeDeviceModel  = "devicemodel"
	TypeMembership   = "membership"
	TypeDeviceStatus = "devicestatus"
)

// membershipNamespace is the namespace segment a node's membership travels under.
const membershipNamespace = "default"

const (
	nodeIndex  = "spec.nodeName"
	modelIndex = "spec.deviceModelRef"
)

// item is one API object the workers reconcile.
type item struct {
	Type, Namespace, Name string
}

func (i item) String() string { return i.Type + " " + i.Namespace + "/" + i.Name }

// devRecord is what was last decided for a device: its node, its model, the fingerprint of what the
// node was given, and the resourceVersion of the first object with that fingerprint.
type devRecord struct {
	node, model string
	fp          string
	sentRV      uint64
	last        *v1beta1.Device
}

// nodeState is the controller's view of one edge node.
type nodeState struct {
	controller.Link        // connected, inventoried, KubeEdge's edgecore (membership in KubeEdge's shape)
	membership      string // the membership content last sent
}

// MemberRef names one device in a membership list.
type MemberRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Membership is the content of a membership update: every device bound to the node.
type Membership struct {
	Devices []MemberRef `json:"devices"`
}

// modelKey is "namespace/name" of the model a device refers to ("" when it names none).
func modelKey(d *v1beta1.Device) string {
	if d.Spec.DeviceModelRef == nil || d.Spec.DeviceModelRef.Name == "" {
		return ""
	}
	return d.Namespace + "/" + d.Spec.DeviceModelRef.Name
}

func splitKey(k string) (ns, name string) {
	for i := range len(k) {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}

// fingerprint is what of a device the edge cares about: everything but the status (which the edge
// itself reports) and the bookkeeping metadata. A status write does not resend the device.
func fingerprint(d *v1beta1.Device) string {
	b, _ := json.Marshal(struct {
		L, A map[string]string
		D    bool
		S    v1beta1.DeviceSpec
	}{d.Labels, d.Annotations, d.DeletionTimestamp != nil, d.Spec})
	return string(b)
}

func rvOf(o interface{ GetResourceVersion() string }) uint64 {
	v, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	return v
}

func (m *Module) sync(ctx context.Context, it item) error {
	switch it.Type {
	case TypeDevice:
		return m.syncDevice(ctx, it)
	case TypeDeviceModel:
		return m.syncModel(ctx, it)
	}
	return fmt.Errorf("unknown item type %q", it.Type)
}

func (m *Module) device(ns, name string) *v1beta1.Device {
	o, ok, _ := m.devInf.GetIndexer().GetByKey(ns + "/" + name)
	if !ok {
		return nil
	}
	return o.(*v1beta1.Device)
}

func (m *Module) model(key string) *v1beta1.DeviceModel {
	o, ok, _ := m.modInf.GetIndexer().GetByKey(key)
	if !ok {
		return nil
	}
	return o.(*v1beta1.DeviceModel)
}

// syncDevice sends a device to its node (and removes it from the node that had it), keeps the node's
// models in step and its membership current.
func (m *Module) syncDevice(ctx context.Context, it item) error {
	key := it.Namespace + "/" + it.Name
	dev := m.device(it.Namespace, it.Name)
	func() {
		m.sendMu.Lock()
		defer m.sendMu.Unlock()
		m.mu.Lock()
		prev, had := m.records[key]
		m.mu.Unlock()
		touched := map[string]bool{}
		wanted := dev != nil && dev.Spec.NodeName != ""
		if had && (!wanted || prev.node != dev.Spec.NodeName) {
			m.emit(ctx, prev.node, message.OpDelete, TypeDevice, it.Namespace, it.Name, prev.last)
			m.release(ctx, prev.node, prev.model)
			m.mu.Lock()
			delete(m.records, key)
			m.mu.Unlock()
			touched[prev.node] = true
			had = false
		}
		if wanted {
			edge, fp, rv, missing := m.edgeCopy(dev) // secrets.go: the node's copy carries its Secrets' values
			node, model := dev.Spec.NodeName, modelKey(dev)
			if !had || prev.model != model {
				m.acquire(ctx, node, model) // the model reaches the node before the device that needs it
			}
			rec := devRecord{node: node, model: model, fp: fp, sentRV: rv, last: dev}
			switch {
			case !had:
				m.warnMissingSecrets(ctx, dev, missing)
				m.emit(ctx, node, message.OpInsert, TypeDevice, it.Namespace, it.Name, edge)
				touched[node] = true
			case fp != prev.fp:
				m.warnMissingSecrets(ctx, dev, missing)
				m.emit(ctx, node, message.OpUpdate, TypeDevice, it.Namespace, it.Name, edge)
			default:
				rec.sentRV = prev.sentRV // only the status changed: the node's copy is as good as this one
			}
			if had && prev.model != model {
				m.release(ctx, node, prev.model)
			}
			m.mu.Lock()
			m.records[key] = rec
			m.mu.Unlock()
		}
		for n := range touched {
			m.syncMembership(ctx, n, false)
		}
	}()
	// The Device's DeviceStatus object: created with the Device (holding what Device.status holds),
	// deleted with it. Outside sendMu: it may take API calls, and the sends of every other Device
	// (and every node's reconcile on connect) must not wait for them.
	if dev == nil {
		m.forgetEvents(it.Namespace, it.Name)
		return m.dropStatus(ctx, it.Namespace, it.Name)
	}
	return m.mirrorStatusOnce(ctx, dev)
}

// acquire records that a device on node uses model, and sends the model when it is the first.
func (m *Module) acquire(ctx context.Context, node, model string) {
	if model == "" {
		return
	}
	m.mu.Lock()
	n := m.owners[model]
	if n == nil {
		n = map[string]int{}
		m.owners[model] = n
	}
	n[node]++
	first := n[node] == 1
	m.mu.Unlock()
	if !first {
		return
	}
	if dm := m.model(model); dm != nil {
		m.emit(ctx, node, message.OpInsert, TypeDeviceModel, dm.Namespace, dm.Name, dm)
		m.noteModel(model, node, rvOf(dm))
	} else {
		m.mu.Lock()
		if m.unsent[model] == nil {
			m.unsent[model] = map[string]bool{}
		}
		m.unsent[model][node] = true
		m.mu.Unlock()
		m.host.Logger().Warn("device refers to a missing DeviceModel; the node gets it when it is created", "model", model, "node", node)
	}
}

// release drops a device's use of model on node; the node loses the model with its last user.
func (m *Module) release(ctx context.Context, node, model string) {
	if model == "" {
		return
	}
	m.mu.Lock()
	n := m.owners[model]
	last := false
	if n != nil && n[node] > 0 {
		n[node]--
		if n[node] == 0 {
			delete(n, node)
			delete(m.unsent[model], node)
			delete(m.modelRV[model], node)
			last = true
		}
		if len(n) == 0 {
			delete(m.owners, model)
			delete(m.modelRV, model)
		}
	}
	m.mu.Unlock()
	if last {
		ns, name := splitKey(model)
		var obj runtime.Object
		if dm := m.model(model); dm != nil {
			obj = dm
		}
		m.emit(ctx, node, message.OpDelete, TypeDeviceModel, ns, name, obj)
	}
}

// syncModel sends a changed (or deleted) DeviceModel to exactly the nodes whose devices use it.
func (m *Module) syncModel(ctx context.Context, it item) error {
	key := it.Namespace + "/" + it.Name
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	m.mu.Lock()
	nodes := make([]string, 0, len(m.owners[key]))
	for n := range m.owners[key] {
		nodes = append(nodes, n)
	}
	m.mu.Unlock()
	dm := m.model(key)
	op := message.OpUpdate
	var obj runtime.Object
	if dm == nil {
		op = message.OpDelete
	} else {
		obj = dm
	}
	for _, n := range nodes {
		nodeOp := op
		m.mu.Lock()
		if dm != nil && m.unsent[key][n] { // the node's first copy: an insert, as for a model that existed
			nodeOp = message.OpInsert
			delete(m.unsent[key], n)
		}
		// The model's add event can come after a device's sync already sent this version to the node.
		current := dm != nil && m.modelRV[key][n] == rvOf(dm) && rvOf(dm) != 0
		m.mu.Unlock()
		if current {
			continue
		}
		m.emit(ctx, n, nodeOp, TypeDeviceModel, it.Namespace, it.Name, obj)
		if dm != nil {
			m.noteModel(key, n, rvOf(dm))
		}
	}
	return nil
}

// noteModel records the version of model that node was sent (or reported holding).
func (m *Module) noteModel(model, node string, rv uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.owners[model][node] == 0 {
		return // no device there uses it any more
	}
	if m.modelRV[model] == nil {
		m.modelRV[model] = map[string]uint64{}
	}
	m.modelRV[model][node] = rv
}

// members lists the devices bound to node, sorted, from the informer's index.
func (m *Module) members(node string) Membership {
	objs, _ := m.devInf.GetIndexer().ByIndex(nodeIndex, node)
	out := Membership{Devices: make([]MemberRef, 0, len(objs))}
	for _, o := range objs {
		d := o.(*v1beta1.Device)
		out.Devices = append(out.Devices, MemberRef{Namespace: d.Namespace, Name: d.Name})
	}
	slices.SortFunc(out.Devices, func(a, b MemberRef) int {
		if a.Namespace != b.Namespace {
			if a.Namespace < b.Namespace {
				return -1
			}
			return 1
		}
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// syncMembership sends node its membership when it differs from what it was last sent (or always,
// with force). Callers hold sendMu.
func (m *Module) syncMembership(ctx context.Context, node string, force bool) {
	mem := m.members(node)
	b, _ := json.Marshal(mem)
	st := m.nodeState(node)
	m.mu.Lock()
	same := st.membership == string(b)
	ready := st.Inventoried
	prevJSON, kubeedge := st.membership, st.KubeEdge
	if ready {
		st.membership = string(b)
	}
	m.mu.Unlock()
	if same && !force {
		return
	}
	if !ready {
		m.metrics.deferred.Inc()
		return
	}
	if kubeedge { // KubeEdge's edgecore takes the change (added, removed), not the list
		var prev Membership
		if !force && prevJSON != "" {
			_ = json.Unmarshal([]byte(prevJSON), &prev)
		}
		m.sendKubeEdgeMembership(ctx, node, prev, mem)
		return
	}
	m.send(ctx, node, message.OpUpdate, TypeMembership, membershipNamespace, node, mem)
}

// nodeState returns (creating) the state of an edge node.
func (m *Module) nodeState(name string) *nodeState { return controller.Entry(&m.mu, m.state, name) }

// emit queues a message for node with obj as content. Until the node's inventory has been reconciled
// after this cloudcore started, nothing is sent: the reconciliation sends what the node lacks.
func (m *Module) emit(ctx context.Context, node, op, typ, ns, name string, obj runtime.Object) {
	if !controller.Ready(&m.mu, &m.nodeState(node).Link) {
		m.metrics.deferred.Inc()
		return
	}
	var content any
	if obj != nil {
		content = obj
	}
	m.send(ctx, node, op, typ, ns, name, content)
}

var gvks = map[string]string{TypeDevice: "Device", TypeDeviceModel: "DeviceModel"}

func (m *Module) send(ctx context.Context, node, op, typ, ns, name string, content any) {
	res := message.Resource{Node: node, Namespace: ns, Type: typ, Name: name}.Cloud()
	msg := message.New(Name, "resource", op, res)
	var err error
	switch o := content.(type) {
	case nil:
		msg, err = msg.WithContent(map[string]any{"metadata": map[string]string{"namespace": ns, "name": name}})
	case runtime.Object:
		msg, err = controller.WithObject(msg, o, v1beta1.GroupVersion.WithKind(gvks[typ]))
	default:
		msg, err = msg.WithContent(content)
	}
	if err != nil {
		m.host.Logger().Error("object not encodable for the edge", "resource", res, "err", err)
		return
	}
	if err := m.host.Send(ctx, m.HubModule, msg); err != nil {
		m.host.Logger().Warn("message for the edge not queued", "node", node, "resource", res, "err", err)
		return
	}
	m.metrics.downstream.WithLabelValues(typ, op).Inc()
}

// InventoryItem is one object an edge node holds, as its metamanager reports it on connect (the
// shared wire type).
type InventoryItem = controller.InventoryItem

// reconcile brings node to the desired state from its inventory (nil: it holds nothing): devices and
// models it lacks or holds at an older version are sent, those it should not hold are deleted, and
// its membership is sent. Other types in the inventory belong to other controllers.
func (m *Module) reconcile(ctx context.Context, node string, inv []InventoryItem) {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	st := m.nodeState(node)
	m.mu.Lock()
	st.Inventoried = true
	m.mu.Unlock()

	type want struct {
		typ string
		obj runtime.Object
		rv  uint64 // the node's copy is current from this version on
	}
	wanted := map[string]want{}
	objs, _ := m.devInf.GetIndexer().ByIndex(nodeIndex, node)
	for _, o := range objs {
		d := o.(*v1beta1.Device)
		edge, fp, rv, _ := m.edgeCopy(d) // secrets.go
		m.mu.Lock()
		if rec, ok := m.records[d.Namespace+"/"+d.Name]; ok && rec.node == node && rec.fp == fp {
			rv = rec.sentRV // later versions differ only in status, which the edge does not need
		}
		m.mu.Unlock()
		wanted[message.Resource{Namespace: d.Namespace, Type: TypeDevice, Name: d.Name}.Edge()] = want{TypeDevice, edge, rv}
		if k := modelKey(d); k != "" {
			if dm := m.model(k); dm != nil {
				wanted[message.Resource{Namespace: dm.Namespace, Type: TypeDeviceModel, Name: dm.Name}.Edge()] = want{TypeDeviceModel, dm, rvOf(dm)}
			}
		}
	}
	rvs := make(map[string]uint64, len(wanted))
	for res, w := range wanted {
		rvs[res] = w.rv
		if w.typ == TypeDeviceModel { // the node holds it, or is sent it now
			r, _ := message.ParseEdge(res)
			m.noteModel(r.Namespace+"/"+r.Name, node, w.rv)
		}
	}
	send, remove := controller.Plan(inv, rvs, func(typ string) bool { return typ == TypeDevice || typ == TypeDeviceModel })
	// Models first: a device arrives after the model it needs, and leaves before it.
	for _, typ := range []string{TypeDeviceModel, TypeDevice} {
		for _, r := range send {
			if r.Type == typ {
				m.send(ctx, node, message.OpUpdate, r.Type, r.Namespace, r.Name, wanted[r.Edge()].obj)
			}
		}
	}
	for _, typ := range []string{TypeDevice, TypeDeviceModel} {
		for _, r := range remove {
			if r.Type == typ {
				m.send(ctx, node, message.OpDelete, r.Type, r.Namespace, r.Name, nil)
			}
		}
	}
	sent, removed := len(send), len(remove)
	m.syncMembership(ctx, node, true)
	m.metrics.reconciles.Inc()
	m.host.Logger().Info("edge node devices reconciled", "node", node, "held", len(inv), "sent", sent, "removed", removed, "devices", len(objs))
}

// connected notes a node's connection; a node that sends no inventory gets everything after
// inventoryWait.
func (m *Module) connected(ctx context.Context, node string, kubeedge bool) {
	st := m.nodeState(node)
	m.mu.Lock()
	st.Connect(kubeedge)
	m.mu.Unlock()
	controller.AwaitInventory(ctx, m.host.Logger(), &m.mu, &st.Link, node, m.InventoryWait, func() { m.reconcile(ctx, node, nil) })
}

func (m *Module) disconnected(_ context.Context, node string) {
	st := m.nodeState(node)
	m.mu.Lock()
	st.Connected = false
	m.mu.Unlock()
}
