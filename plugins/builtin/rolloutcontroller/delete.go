package rolloutcontroller

import (
	"context"
	"time"

	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/sdk/kube/controller"
	"github.com/kedge-io/kedge/sdk/message"
)

// goneFor is how long a deleted rollout's UID is remembered, so a status write that raced the
// delete sends nothing after it.
const goneFor = 10 * time.Minute

// InventoryItem is one entry of the inventory an edge node sends on connect (metamanager's objects
// that came from the cloud): the shared wire type.
type InventoryItem = controller.InventoryItem

// deleted runs when a rollout is gone from the API: every node that was sent it (any state but
// Pending in its last known status) is sent a delete of <namespace>/pluginrollout/<name>, so
// metamanager drops the stored rollout message and it is never handed to pluginmanager again (an
// edgecore restart would otherwise replay an old version over a later rollout of the same module).
// pluginmanager leaves what it installed running: deleting a rollout is not a rollback.
func (m *Module) deleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj // possibly older than the last state: a node missed here is cleaned on its next connect
	}
	ro, ok := obj.(*v1alpha1.PluginRollout)
	if !ok {
		return
	}
	// Under sendMu, so an update of this rollout being sent right now is queued before the deletes,
	// and none is sent after them.
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	now := time.Now()
	for uid, at := range m.gone {
		if now.Sub(at) > goneFor {
			delete(m.gone, uid)
		}
	}
	m.gone[ro.UID] = now
	m.forgetSent(ro.UID)
	var told []string
	for _, n := range ro.Status.Nodes {
		if n.State != v1alpha1.NodePending {
			m.sendDelete(context.Background(), n.Name, ro.Namespace, ro.Name, "deleted")
			told = append(told, n.Name)
		}
	}
	m.host.Logger().Info("rollout deleted; the nodes keep what they installed", "rollout", ro.Namespace+"/"+ro.Name, "told", told)
}

// inventory sends node a delete for every rollout message it holds whose rollout no longer exists
// (deleted while this controller was not running, or while the delete could not be queued).
func (m *Module) inventory(ctx context.Context, node string, inv []InventoryItem) {
	for _, it := range inv {
		res, err := message.ParseEdge(it.Resource)
		if err != nil || res.Type != TypePluginRollout || res.Name == "" {
			continue
		}
		if _, ok, _ := m.roInf.GetStore().GetByKey(res.Namespace + "/" + res.Name); ok {
			continue
		}
		m.sendDelete(ctx, node, res.Namespace, res.Name, "inventory")
	}
}

// sendDelete queues a delete of node's copy of rollout ns/name on cloudhub.
func (m *Module) sendDelete(ctx context.Context, node, ns, name, reason string) {
	res := message.Resource{Node: node, Namespace: ns, Type: TypePluginRollout, Name: name}.Cloud()
	if err := m.host.Send(ctx, m.HubModule, message.New(Name, "resource", message.OpDelete, res)); err != nil {
		m.host.Logger().Warn("rollout delete for the edge not queued; sent when the node next connects (inventory)", "node", node, "resource", res, "err", err)
		return
	}
	m.metrics.deletes.WithLabelValues(reason).Inc()
}
