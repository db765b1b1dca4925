package edgecontroller

import (
	"context"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk/kube"
)

// Node lifecycle with several cloudcore replicas. Marking a node Ready=Unknown must happen once and
// must not depend on which replica the node was connected to (it may have moved to another replica,
// or its replica may have been killed): so one replica, the leader of the Lease kedge-edgecontroller,
// decides, from what every replica writes — the node's Lease in kube-node-lease, renewed by whichever
// replica holds the node on each of its reports. As kube-controller-manager's node lifecycle
// controller does, the leader measures a Lease's age on its own monotonic clock, from when it saw the
// Lease change, never from the renewTime written in it: a replica with a wrong wall clock cannot make
// a node look fresh or stale. A newly elected leader therefore waits a full grace period before it
// marks anything. The autonomy workers (pod tolerations) also run on the leader only.

// leaseSeen is when this replica last saw a node's Lease change (or first looked for it).
type leaseSeen struct {
	rv     string
	at     time.Time
	marked bool // marked Unknown at markRV: not again until the Lease moves
	markRV string
}

// watchNodeLeases starts an informer on kube-node-lease; it records when each Lease changes.
func (m *Module) watchNodeLeases(stop <-chan struct{}) (cache.InformerSynced, error) {
	m.leaseFactory = informers.NewSharedInformerFactoryWithOptions(m.client, 0, informers.WithNamespace(leaseNamespace),
		informers.WithTransform(slimLease))
	inf := m.leaseFactory.Coordination().V1().Leases().Informer()
	m.leaseLister = m.leaseFactory.Coordination().V1().Leases().Lister()
	seen := func(obj any) {
		if l, ok := obj.(*coordv1.Lease); ok {
			m.leaseChanged(l.Name, l.ResourceVersion)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: seen,
		UpdateFunc: func(o, n any) {
			if ol, ok := o.(*coordv1.Lease); ok {
				if nl, ok := n.(*coordv1.Lease); ok && ol.ResourceVersion == nl.ResourceVersion {
					return // a relist, not a renewal
				}
			}
			seen(n)
		},
	}); err != nil {
		return nil, err
	}
	m.leaseFactory.Start(stop)
	return inf.HasSynced, nil
}

// slimLease keeps of a node Lease what this controller reads (its name, version, renewTime and
// duration): one per edge node is held in memory, and the rest (managed fields, owner, holder) is
// most of a Lease's size.
func slimLease(obj any) (any, error) {
	l, ok := obj.(*coordv1.Lease)
	if !ok {
		return obj, nil // a tombstone: as it is
	}
	return &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: l.Name, Namespace: l.Namespace, ResourceVersion: l.ResourceVersion, UID: l.UID},
		Spec:       coordv1.LeaseSpec{RenewTime: l.Spec.RenewTime, LeaseDurationSeconds: l.Spec.LeaseDurationSeconds},
	}, nil
}

// stripManagedFields drops metadata.managedFields from what the informers hold (nothing here reads
// them, and on a Node whose status is written by several field managers they are a large part of it).
func stripManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}

func (m *Module) leaseChanged(node, rv string) {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	s := m.leases[node]
	if s.rv == rv && !s.at.IsZero() {
		return
	}
	s.rv, s.at = rv, time.Now()
	m.leases[node] = s
}

// staleNodes lists the edge nodes to mark Unknown now: Ready True or False (a node that never
// reported is left alone), not connected to this replica, and a Lease this replica has not seen
// change for the grace period (a missing Lease counts from when it was first looked for).
func (m *Module) staleNodes() []string {
	all, _ := m.nodes.List(labelsEverything)
	now := time.Now()
	var stale []string
	for _, n := range all {
		if !isEdgeNode(n) || !readyKnown(n) {
			continue
		}
		m.mu.Lock()
		st := m.state[n.Name]
		local := st != nil && st.Connected
		m.mu.Unlock()
		if local {
			continue
		}
		m.leaseMu.Lock()
		s, ok := m.leases[n.Name]
		if !ok {
			s = leaseSeen{at: now}
			m.leases[n.Name] = s
		}
		due := now.Sub(s.at) >= m.NodeGracePeriod && !(s.marked && s.markRV == s.rv)
		m.leaseMu.Unlock()
		if due {
			stale = append(stale, n.Name)
		}
	}
	return stale
}

// noteMarked records that node was marked Unknown at its current Lease version.
func (m *Module) noteMarked(node string, marked bool) {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	s := m.leases[node]
	s.marked, s.markRV = marked, s.rv
	m.leases[node] = s
}

func readyKnown(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue || c.Status == corev1.ConditionFalse
		}
	}
	return false
}

func (m *Module) startElection(ctx context.Context) (err error) {
	m.elector, err = kube.StartElector(ctx, m.LeaderElection, kube.ElectorOptions{
		Client: m.client, Module: Name, Identity: m.host.NodeName(), Logger: m.host.Logger(), Metrics: m.host.Metrics(),
		OnStartedLeading: func(context.Context) {
			if m.autonomy != nil {
				m.autonomy.enqueueAll()
			}
		},
	})
	return err
}
