package rolloutcontroller

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/sdk/kube"
)

// With several cloudcore replicas, rollout decisions (which node's turn starts, what the status
// says after a spec change) are made by one replica only, the leader of the Lease
// kedge-rolloutcontroller; the others keep their informers warm and take over when the leader stops
// or is cut off (see host/kube.Elector). Reports from a node are recorded by the replica that holds
// the node's connection (status writes are resourceVersion-guarded, and step is a function of the
// rollout alone, so any replica computes the same status). Delivery is by the owner too: every
// replica watches the rollouts' status and sends a rollout to each node it holds whose state is
// Installing at a generation it has not sent that node yet — so a turn the leader decided reaches a
// node connected to another replica.

// haState is what a replica knows of the nodes it holds and what it sent them.
type haState struct {
	mu   sync.Mutex
	held map[string]bool   // nodes connected to this replica's cloudhub
	sent map[sentKey]int64 // generation last sent, by rollout UID and node
}

type sentKey struct {
	uid  types.UID
	node string
}

func (m *Module) startElection(ctx context.Context) (err error) {
	m.elector, err = kube.StartElector(ctx, m.LeaderElection, kube.ElectorOptions{
		Client: m.kube, Module: Name, Identity: m.host.NodeName(), Logger: m.host.Logger(), Metrics: m.host.Metrics(),
		OnStartedLeading: func(context.Context) { m.enqueueAll() },
	})
	return err
}

// enqueueAll reconciles every rollout: a new leader catches up on what it skipped as a follower.
func (m *Module) enqueueAll() {
	for _, k := range m.roInf.GetStore().ListKeys() {
		m.ctl.Queue.Add(k)
	}
}

func (m *Module) setHeld(node string, held bool) {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	if held {
		m.ha.held[node] = true
	} else {
		delete(m.ha.held, node)
	}
}

// recordSent notes that node was sent ro at generation gen.
func (m *Module) recordSent(uid types.UID, node string, gen int64) {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	if gen > m.ha.sent[sentKey{uid, node}] {
		m.ha.sent[sentKey{uid, node}] = gen
	}
}

// deliver sends ro to every node this replica holds whose turn started (Installing at the current
// rollout generation) and that was not sent that generation from here: the turn may have been
// decided by the leader on another replica.
func (m *Module) deliver(ctx context.Context, ro *v1alpha1.PluginRollout) {
	if ro.Status.ObservedGeneration != ro.Generation {
		return // a reconcile is due and decides first
	}
	gen := sentGeneration(ro)
	var due []string
	m.ha.mu.Lock()
	for _, n := range ro.Status.Nodes {
		if n.State == v1alpha1.NodeInstalling && m.ha.held[n.Name] && m.ha.sent[sentKey{ro.UID, n.Name}] < gen {
			due = append(due, n.Name)
		}
	}
	m.ha.mu.Unlock()
	for _, node := range due {
		m.send(ctx, node, ro, "owner")
	}
}

// forgetSent drops what was recorded for a deleted rollout.
func (m *Module) forgetSent(uid types.UID) {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	for k := range m.ha.sent {
		if k.uid == uid {
			delete(m.ha.sent, k)
		}
	}
}
