package cloudhub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kedge-io/kedge/sdk/kube"
)

// Node ownership: which cloudcore replica holds which edge node, recorded in the Kubernetes API.
//
//   - One Lease per edge node, kedge-node-<node> (label kedge.io/ownership=node, annotation
//     kedge.io/node=<node>), whose holderIdentity is the replica holding the node's connection.
//     It is written only when the holder changes: on connect (claim) and on disconnect (release,
//     only if this replica still holds it) — never per heartbeat. acquireTime is when the holder
//     took it, leaseTransitions counts the moves between replicas.
//   - One Lease per replica, kedge-replica-<identity> (label kedge.io/ownership=replica), renewed
//     every replicaLeaseDuration/3 (its writes grow with the number of replicas, not of nodes), with
//     the replica's forward address (annotation kedge.io/forward-address). A node Lease naming a
//     replica whose Lease expired (as this replica saw it, on its own clock) is held by nobody.
//
// Every replica watches both (one informer, label kedge.io/ownership). When a node Lease names
// another replica while this replica still has a session for that node — the node reconnected
// elsewhere and this connection is a leftover — the session is closed and the node's queue dropped:
// the old owner stops sending to it; the new owner reconciles it from the inventory it sends on
// connect.

const (
	ownershipLabel    = "kedge.io/ownership"
	nodeAnnotation    = "kedge.io/node"
	forwardAnnotation = "kedge.io/forward-address"
)

// Ownership is cloudhub's config block for several replicas.
type Ownership struct {
	Enable               bool          `yaml:"enable" doc:"Record in the Kubernetes API which replica holds which node (a Lease per node, written on connect and disconnect only) and keep a Lease for this replica; a node that reconnected to another replica is dropped here. Needed with several cloudcore replicas."`
	Kubeconfig           string        `yaml:"kubeconfig" doc:"Path of the kubeconfig for the API server; empty: $KUBECONFIG, else the in-cluster service account."`
	Namespace            string        `yaml:"namespace" doc:"Namespace of the ownership Leases (must exist); empty: $POD_NAMESPACE, else default."`
	Identity             string        `yaml:"identity" doc:"This replica's name in the Leases; empty: the cloudcore instance name (instance.name). Must differ between replicas."`
	ForwardAddress       string        `yaml:"forwardAddress" doc:"host:port where the other replicas reach this one (recorded on this replica's Lease)."`
	ReplicaLeaseDuration time.Duration `yaml:"replicaLeaseDuration" doc:"This replica's Lease is renewed every third of this; a replica whose Lease was not renewed for this long is dead and holds no node."`
	QPS                  float32       `yaml:"qps" doc:"Requests per second to the API server for ownership writes, sustained (a mass reconnect writes one Lease per node)."`
	Burst                int           `yaml:"burst" doc:"Requests above qps at once."`
	ForwardTimeout       time.Duration `yaml:"forwardTimeout" doc:"A sync request (e.g. a cloudbus call) for a node another live replica holds is forwarded to that replica's forward server (cloudstream.forward); this bounds the wait for its answer (0: 1m)."`
}

// DefaultOwnership is the block's defaults.
func DefaultOwnership() Ownership {
	return Ownership{ReplicaLeaseDuration: 30 * time.Second, QPS: 200, Burst: 400, ForwardTimeout: time.Minute}
}

// NodeLeaseName is the name of the ownership Lease of node: kedge-node-<node>, or, for a name too
// long for that, kedge-node-<sha256 of the name, 40 hex digits>.
func NodeLeaseName(node string) string {
	if n := "kedge-node-" + node; len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(node))
	return "kedge-node-" + hex.EncodeToString(sum[:20])
}

// ReplicaLeaseName is the name of a replica's Lease.
func ReplicaLeaseName(identity string) string { return "kedge-replica-" + identity }

// owners is the ownership machinery of one cloudhub.
type owners struct {
	m        *Module
	cfg      Ownership
	client   kubernetes.Interface
	leases   coordlisters.LeaseNamespaceLister
	factory  informers.SharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string]
	wg       sync.WaitGroup
	replica  *coordv1.Lease
	mu       sync.Mutex
	claimed  map[string]*claim    // node -> this replica's claim for its current session
	selfRV   map[string]string    // node -> resourceVersion of the last event naming this replica
	seenAt   map[string]time.Time // replica identity -> when its Lease last changed, on this clock
	seenRV   map[string]string
	metrics  ownershipMetrics
	released chan struct{}
}

type ownershipMetrics struct {
	writes    *prometheus.CounterVec
	handovers *prometheus.CounterVec
	evicted   prometheus.Counter
}

func (m *Module) startOwnership(ctx context.Context) error {
	c := m.Ownership
	if !c.Enable {
		return nil
	}
	if c.ReplicaLeaseDuration < 3*time.Second || c.QPS <= 0 || c.Burst <= 0 || c.ForwardTimeout < 0 {
		return errors.New("ownership: replicaLeaseDuration must be at least 3s, qps and burst positive, forwardTimeout not negative")
	}
	if c.ForwardTimeout == 0 {
		c.ForwardTimeout = DefaultOwnership().ForwardTimeout
	}
	if c.Namespace == "" {
		c.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.Identity == "" {
		c.Identity = m.host.NodeName()
	}
	if c.Identity == "" {
		return errors.New("ownership.identity: empty, and the instance has no name (instance.name)")
	}
	cfg, err := kube.RestConfig(c.Kubeconfig, "modules.cloudhub.ownership.kubeconfig")
	if err != nil {
		return fmt.Errorf("ownership: %w", err)
	}
	cfg.QPS, cfg.Burst, cfg.UserAgent = c.QPS, c.Burst, "kedge-cloudhub-ownership"
	client, err := kubernetes.NewForConfig(kube.BuiltinTypes(cfg))
	if err != nil {
		return fmt.Errorf("ownership: %w", err)
	}
	o := &owners{m: m, cfg: c, client: client, claimed: map[string]*claim{}, selfRV: map[string]string{}, seenAt: map[string]time.Time{}, seenRV: map[string]string{},
		released: make(chan struct{})}
	o.metrics = ownershipMetrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudhub_ownership_writes_total",
			Help: "Writes of node ownership Leases, by op (claim, release) and result (ok, conflict, error)."}, []string{"op", "result"}),
		handovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudhub_handovers_total",
			Help: "Nodes that moved between replicas, by direction (in: claimed here from another replica; out: claimed by another replica while held here)."}, []string{"direction"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_cloudhub_ownership_evictions_total",
			Help: "Sessions closed and queues dropped here because the node reconnected to another replica."}),
	}
	for _, col := range []prometheus.Collector{o.metrics.writes, o.metrics.handovers, o.metrics.evicted} {
		if err := m.host.Metrics().Register(col); err != nil {
			return err
		}
	}
	o.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(c.Namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = ownershipLabel }))
	li := o.factory.Coordination().V1().Leases()
	o.leases = li.Lister().Leases(c.Namespace)
	if _, err := li.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: o.observe, UpdateFunc: func(_, n any) { o.observe(n) },
	}); err != nil {
		return err
	}
	o.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "cloudhub-ownership"})
	o.factory.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), li.Informer().HasSynced) {
		o.factory.Shutdown()
		return fmt.Errorf("ownership: the API server did not answer the first list of leases in %s within 30s", c.Namespace)
	}
	if err := o.renewReplica(ctx); err != nil {
		o.factory.Shutdown()
		return fmt.Errorf("ownership: this replica's Lease %s/%s: %w", c.Namespace, ReplicaLeaseName(c.Identity), err)
	}
	m.owners = o
	for range 4 {
		o.wg.Go(func() {
			for o.processNext(ctx) {
			}
		})
	}
	o.wg.Go(func() { o.keepReplica(ctx) })
	m.host.Logger().Info("recording node ownership", "namespace", c.Namespace, "identity", c.Identity, "forwardAddress", c.ForwardAddress)
	return nil
}

// stop ends the workers and deletes this replica's Lease (its nodes are then held by nobody until
// they reconnect elsewhere).
func (o *owners) stop(ctx context.Context) {
	drained := make(chan struct{})
	go func() { o.queue.ShutDownWithDrain(); close(drained) }() // the releases of the nodes just let go
	select {
	case <-drained:
	case <-ctx.Done():
		o.queue.ShutDown()
	}
	o.wg.Wait()
	o.factory.Shutdown()
	err := o.client.CoordinationV1().Leases(o.cfg.Namespace).Delete(ctx, ReplicaLeaseName(o.cfg.Identity), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		o.m.host.Logger().Warn("this replica's Lease not deleted; it expires", "err", err)
	}
}

// changed is called when a node connects or disconnects here: its Lease is brought in line.
func (o *owners) changed(node string) {
	if o != nil {
		o.queue.Add(node)
	}
}

func (o *owners) processNext(ctx context.Context) bool {
	node, quit := o.queue.Get()
	if quit {
		return false
	}
	defer o.queue.Done(node)
	if err := o.sync(ctx, node); err != nil {
		o.m.host.Logger().Warn("node ownership not recorded; retrying", "node", node, "err", err)
		o.queue.AddRateLimited(node)
		return true
	}
	o.queue.Forget(node)
	return true
}

// held says whether this replica has a session for node now.
func (o *owners) held(node string) bool {
	o.m.mu.Lock()
	n, ok := o.m.nodes[node]
	o.m.mu.Unlock()
	if !ok {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sess != nil
}

// sync writes node's Lease: this replica as holder when it holds the node, no holder when it let
// the node go and the Lease still names it. Nothing is written when the Lease already says so.
func (o *owners) sync(ctx context.Context, node string) error {
	leases := o.client.CoordinationV1().Leases(o.cfg.Namespace)
	name := NodeLeaseName(node)
	held := o.held(node)
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if !held {
			return nil
		}
		now := metav1.NewMicroTime(time.Now())
		id := o.cfg.Identity
		l, err = leases.Create(ctx, &coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ownershipLabel: "node"},
				Annotations: map[string]string{nodeAnnotation: node}},
			Spec: coordv1.LeaseSpec{HolderIdentity: &id, AcquireTime: &now, RenewTime: &now},
		}, metav1.CreateOptions{})
		if err != nil {
			o.metrics.writes.WithLabelValues("claim", result(err)).Inc()
			return err
		}
		o.metrics.writes.WithLabelValues("claim", "ok").Inc()
		o.setClaimed(node, l.ResourceVersion)
		return nil
	}
	if err != nil {
		return err
	}
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	switch {
	case held && holder == o.cfg.Identity:
		o.setClaimed(node, l.ResourceVersion)
		return nil
	case held:
		now := metav1.NewMicroTime(time.Now())
		id := o.cfg.Identity
		l = l.DeepCopy()
		l.Spec.HolderIdentity, l.Spec.AcquireTime, l.Spec.RenewTime = &id, &now, &now
		if holder != "" {
			t := int32(0)
			if l.Spec.LeaseTransitions != nil {
				t = *l.Spec.LeaseTransitions
			}
			t++
			l.Spec.LeaseTransitions = &t
		}
		u, err := leases.Update(ctx, l, metav1.UpdateOptions{})
		o.metrics.writes.WithLabelValues("claim", result(err)).Inc()
		if err != nil {
			return err // a conflict is retried: read again, decide again
		}
		if holder != "" {
			o.metrics.handovers.WithLabelValues("in").Inc()
			o.m.host.Logger().Info("node moved here from another replica", "node", node, "from", holder)
		}
		o.setClaimed(node, u.ResourceVersion)
		return nil
	case holder == o.cfg.Identity: // not held any more: let it go, unless someone else took it meanwhile (resourceVersion)
		l = l.DeepCopy()
		l.Spec.HolderIdentity = nil
		_, err := leases.Update(ctx, l, metav1.UpdateOptions{})
		o.metrics.writes.WithLabelValues("release", result(err)).Inc()
		if apierrors.IsConflict(err) {
			return err // read again: if another replica took it, there is nothing to release
		}
		o.setClaimed(node, "")
		return err
	}
	o.setClaimed(node, "")
	return nil
}

func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return "conflict"
	}
	return "error"
}

// claim is this replica's claim of a node: the resourceVersion it wrote, and whether the informer
// delivered that version yet (only events after it can be another replica's later claim).
type claim struct {
	rv   string
	seen bool
}

func (o *owners) setClaimed(node, rv string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if rv == "" {
		delete(o.claimed, node)
		return
	}
	if c, ok := o.claimed[node]; ok && c.rv == rv {
		return
	}
	o.claimed[node] = &claim{rv: rv, seen: o.selfRV[node] == rv}
}

// observe reacts to a Lease change seen by the informer.
func (o *owners) observe(obj any) {
	l, ok := obj.(*coordv1.Lease)
	if !ok {
		return
	}
	switch l.Labels[ownershipLabel] {
	case "replica":
		o.mu.Lock()
		if o.seenRV[l.Name] != l.ResourceVersion {
			o.seenRV[l.Name], o.seenAt[l.Name] = l.ResourceVersion, time.Now()
		}
		o.mu.Unlock()
	case "node":
		node := l.Annotations[nodeAnnotation]
		if node == "" || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return
		}
		if *l.Spec.HolderIdentity == o.cfg.Identity {
			o.mu.Lock()
			o.selfRV[node] = l.ResourceVersion
			if c, ok := o.claimed[node]; ok && c.rv == l.ResourceVersion {
				c.seen = true
			}
			o.mu.Unlock()
			return
		}
		// Another replica claimed the node. Only a claim after this replica's own claim for its
		// current session counts (the informer delivers in order; an event before this replica's
		// claim is what that claim replaced): then the session here is a leftover.
		o.mu.Lock()
		c, mine := o.claimed[node]
		later := mine && c.seen
		o.mu.Unlock()
		if !later || !o.held(node) {
			return
		}
		o.m.evict(node, *l.Spec.HolderIdentity)
		o.metrics.handovers.WithLabelValues("out").Inc()
		o.metrics.evicted.Inc()
		o.setClaimed(node, "")
	}
}

// renewReplica writes this replica's Lease (created on first call).
func (o *owners) renewReplica(ctx context.Context) error {
	leases := o.client.CoordinationV1().Leases(o.cfg.Namespace)
	now := metav1.NewMicroTime(time.Now())
	secs := int32(o.cfg.ReplicaLeaseDuration / time.Second)
	id := o.cfg.Identity
	if o.replica == nil {
		l, err := leases.Get(ctx, ReplicaLeaseName(id), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			l, err = leases.Create(ctx, &coordv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: ReplicaLeaseName(id), Labels: map[string]string{ownershipLabel: "replica"},
					Annotations: map[string]string{forwardAnnotation: o.cfg.ForwardAddress}},
				Spec: coordv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
			}, metav1.CreateOptions{})
		}
		if err != nil {
			return err
		}
		o.replica = l
	}
	l := o.replica.DeepCopy()
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[forwardAnnotation] = o.cfg.ForwardAddress
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &id, &secs, &now
	u, err := leases.Update(ctx, l, metav1.UpdateOptions{})
	if err != nil {
		o.replica = nil // read again next time
		return err
	}
	o.replica = u
	return nil
}

func (o *owners) keepReplica(ctx context.Context) {
	tick := time.NewTicker(o.cfg.ReplicaLeaseDuration / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if o.queue.ShuttingDown() {
			return
		}
		if err := o.renewReplica(ctx); err != nil && ctx.Err() == nil {
			o.m.host.Logger().Warn("this replica's Lease not renewed", "err", err)
		}
	}
}

// Owner is who holds node according to the API: the replica's identity and forward address, and
// whether that replica is alive (its Lease changed within replicaLeaseDuration, as seen here).
// ok is false when no replica holds it.
type Owner struct {
	Identity, ForwardAddress string
	Alive                    bool
}

// OwnerOf looks node's owner up in the informer's cache (no API call).
func (m *Module) OwnerOf(node string) (Owner, bool) {
	o := m.owners
	if o == nil {
		return Owner{}, false
	}
	l, err := o.leases.Get(NodeLeaseName(node))
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return Owner{}, false
	}
	ow := Owner{Identity: *l.Spec.HolderIdentity}
	if r, err := o.leases.Get(ReplicaLeaseName(ow.Identity)); err == nil {
		ow.ForwardAddress = r.Annotations[forwardAnnotation]
		o.mu.Lock()
		at, seen := o.seenAt[r.Name]
		o.mu.Unlock()
		ow.Alive = seen && time.Since(at) < o.cfg.ReplicaLeaseDuration
	}
	return ow, true
}

// evict closes this replica's session of node and drops what was queued for it: the node is held
// by another replica now.
func (m *Module) evict(node, by string) {
	m.mu.Lock()
	n, ok := m.nodes[node]
	m.mu.Unlock()
	if !ok {
		return
	}
	n.mu.Lock()
	for k := range n.entries {
		delete(n.entries, k)
	}
	n.order = nil
	n.mu.Unlock()
	n.detach(nil)
	m.host.Logger().Info("node reconnected to another replica: session closed, queue dropped", "node", node, "holder", by)
}
