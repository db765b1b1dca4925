package rolloutcontroller

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/sdk/message"
)

// TypePluginRollout is the resource type the rollout travels under to the edge
// (node/<node>/<namespace>/pluginrollout/<name>); metamanager hands it to pluginmanager.
const TypePluginRollout = "pluginrollout"

// RolloutMessage is the content of the update a node gets when its turn comes.
type RolloutMessage struct {
	Rollout             string   `json:"rollout"` // <namespace>/<name>
	Generation          int64    `json:"generation"`
	Plugin              string   `json:"plugin"`
	Version             string   `json:"version"`
	Runtime             string   `json:"runtime"`
	Module              string   `json:"module"`
	GrantedCapabilities []string `json:"grantedCapabilities"`
}

// conflictRetries bounds the re-reads after a rollout changed between read and status write.
const conflictRetries = 8

// sync reconciles one rollout when this replica leads; a follower decides nothing (the leader
// reconciles every rollout when it starts leading).
func (m *Module) sync(ctx context.Context, key string) error {
	if !m.elector.Leading() {
		m.metrics.notLeader.Inc()
		return nil
	}
	return m.reconcile(ctx, key)
}

// reconcile brings one rollout's status (and the sends it implies) up to date.
func (m *Module) reconcile(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key we made: nothing to retry
	}
	if _, ok, _ := m.roInf.GetStore().GetByKey(key); !ok {
		return nil // deleted (the delete handler told the nodes): the edges keep what they installed
	}
	return m.mutate(ctx, ns, name, false, nil)
}

// cached returns the informer's copy of a rollout, or nil.
func (m *Module) cached(ns, name string) *v1alpha1.PluginRollout {
	o, ok, _ := m.roInf.GetStore().GetByKey(ns + "/" + name)
	if !ok {
		return nil
	}
	return o.(*v1alpha1.PluginRollout).DeepCopy()
}

func (m *Module) get(ctx context.Context, ns, name string) (*v1alpha1.PluginRollout, error) {
	ro := &v1alpha1.PluginRollout{}
	err := m.rest.Get().Namespace(ns).Resource(v1alpha1.ResourcePluginRollouts).Name(name).Do(ctx).Into(ro)
	return ro, err
}

// errNoChange from a change function: nothing to apply, nothing to write.
var errNoChange = errors.New("no change")

// mutate applies change (when not nil) to the rollout, then step, writes the status when it
// differs (guarded by resourceVersion: on conflict the rollout is read again and everything redone)
// and sends the rollout to the nodes whose turn started. change's errors are returned as they are.
// With fresh the rollout is read from the API, not the informer (an edge's report may answer a
// status write the informer has not seen yet).
func (m *Module) mutate(ctx context.Context, ns, name string, fresh bool, change func(*v1alpha1.PluginRollout) error) error {
	var ro *v1alpha1.PluginRollout
	if !fresh {
		ro = m.cached(ns, name)
	}
	for attempt := 0; ; attempt++ {
		if ro == nil {
			got, err := m.get(ctx, ns, name)
			if err != nil {
				return err
			}
			ro = got
		}
		if change != nil {
			if err := change(ro); err != nil {
				return err
			}
		}
		nodes, _ := m.nodes.List(labels.Everything())
		names, selErr := selected(ro, nodes)
		status, start := step(ro, names, selErr, m.now())
		if sameStatus(status, ro.Status) {
			return nil
		}
		ro.Status = status
		written := &v1alpha1.PluginRollout{}
		err := m.rest.Put().Namespace(ns).Resource(v1alpha1.ResourcePluginRollouts).Name(name).SubResource("status").
			Param("fieldManager", "kedge-rolloutcontroller").Body(ro).Do(ctx).Into(written)
		if err == nil {
			if len(start) > 0 || status.Phase != v1alpha1.PhaseProgressing {
				m.host.Logger().Info("rollout progressed", "rollout", ns+"/"+name, "generation", written.Generation,
					"phase", status.Phase, "updated", status.Updated, "failed", status.Failed, "desired", status.Desired, "starting", start, "message", status.Message)
			}
			for _, node := range start {
				m.send(ctx, node, written, "turn")
			}
			return nil
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= conflictRetries {
			return fmt.Errorf("status of pluginrollout %s/%s: %w", ns, name, err)
		}
		m.metrics.conflicts.Inc()
		ro = nil
	}
}

// sentGeneration is the generation the nodes are sent: status.rolloutGeneration once written.
func sentGeneration(ro *v1alpha1.PluginRollout) int64 {
	if ro.Status.RolloutGeneration > 0 {
		return ro.Status.RolloutGeneration
	}
	return ro.Generation
}

// send queues ro for node on cloudhub; its resourceVersion travels in the header.
func (m *Module) send(ctx context.Context, node string, ro *v1alpha1.PluginRollout, reason string) {
	res := message.Resource{Node: node, Namespace: ro.Namespace, Type: TypePluginRollout, Name: ro.Name}.Cloud()
	msg := message.New(Name, "resource", message.OpUpdate, res)
	msg.Header.ResourceVersion = ro.ResourceVersion
	caps := ro.Spec.GrantedCapabilities
	if caps == nil {
		caps = []string{}
	}
	msg, err := msg.WithContent(RolloutMessage{
		Rollout: ro.Namespace + "/" + ro.Name, Generation: sentGeneration(ro),
		Plugin: ro.Spec.Plugin, Version: ro.Spec.Version, Runtime: ro.Spec.Runtime, Module: ro.Spec.Module,
		GrantedCapabilities: caps,
	})
	if err != nil {
		m.host.Logger().Error("rollout not encodable for the edge", "resource", res, "err", err)
		return
	}
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	if _, gone := m.gone[ro.UID]; gone {
		return // deleted meanwhile: its nodes were told to drop it
	}
	if reason != "reconnect" {
		// A turn decided here and the same turn seen by deliver (the informer's copy of the status
		// just written) must not both reach the node: a generation goes to a node once from here.
		m.ha.mu.Lock()
		done := m.ha.sent[sentKey{ro.UID, node}] >= sentGeneration(ro)
		m.ha.mu.Unlock()
		if done {
			return
		}
	}
	if err := m.host.Send(ctx, m.HubModule, msg); err != nil {
		m.host.Logger().Warn("rollout for the edge not queued; it is sent again when the node connects", "node", node, "resource", res, "err", err)
		return
	}
	m.recordSent(ro.UID, node, sentGeneration(ro))
	m.metrics.downstream.WithLabelValues(reason).Inc()
}

// connected sends node again every rollout it is in the middle of (state Installing): after a
// cloudcore restart, or a queue the hub forgot, that message may never have reached it. A node this
// replica sent its turn to counts as Installing even when the informer's copy does not show it yet:
// the informer lags behind the status written with the turn, and a node reconnecting in that window
// was otherwise never sent its rollout again (TestNodeReconnectingMidRolloutGetsItsRolloutAgain
// failed 2 runs in 16 that way).
func (m *Module) connected(ctx context.Context, node string) {
	for _, o := range m.roInf.GetStore().List() {
		ro := o.(*v1alpha1.PluginRollout)
		state := ""
		for _, n := range ro.Status.Nodes {
			if n.Name == node {
				state = n.State
			}
		}
		switch {
		case ro.Status.ObservedGeneration == ro.Generation && state == v1alpha1.NodeInstalling:
		case (ro.Status.ObservedGeneration == ro.Generation || ro.Status.ObservedGeneration == 0) &&
			state != v1alpha1.NodeUpdated && state != v1alpha1.NodeFailed && state != v1alpha1.NodeRolledBack &&
			m.sentHere(ro, node):
		default:
			continue // not its turn, done, or a reconcile is due and sends what the new generation needs
		}
		m.send(ctx, node, ro, "reconnect")
		m.metrics.resent.Inc()
	}
}

// sentHere says whether this replica sent node the rollout's current generation.
func (m *Module) sentHere(ro *v1alpha1.PluginRollout, node string) bool {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	return m.ha.sent[sentKey{ro.UID, node}] >= sentGeneration(ro)
}
