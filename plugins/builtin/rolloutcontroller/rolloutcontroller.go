// Package rolloutcontroller is the cloud side of plugin rollouts: it watches PluginRollout objects
// (kedge.io/v1alpha1) and the edge nodes, sends each selected node the rollout when it is its turn
// (maxParallel at a time, in node-name order), writes what the nodes report into the rollout's
// status, pauses the rollout at the first failure and marks it complete when every node is updated.
package rolloutcontroller

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/sdk/kube"
	"github.com/kedge-io/kedge/sdk/kube/controller"
)

// Name is the module's routing address; cloudhub hands it the edge's messages of group "plugin".
// Its group is the hub's events group, so it hears when a node connects.
const Name = "rolloutcontroller"

// EdgeRoleLabel marks the nodes that are edge nodes; only they take part in rollouts.
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

func init() {
	sdk.Register(controller.Info(Name, "Plugin rollouts: PluginRollout objects sent to the selected edge nodes maxParallel at a time in name order; their reports written into the rollout status; pause at the first failure.", func() sdk.Module { return New() }))
}

// Module is the rollout controller; its exported fields are its settings.
type Module struct {
	controller.API `yaml:",inline"` // kubeconfig, qps, burst
	Workers        int              `yaml:"workers" doc:"Goroutines reconciling rollouts, and as many handling the edge's reports (one node's reports are always handled in order)."`
	SyncTimeout    time.Duration    `yaml:"syncTimeout" doc:"How long start waits for the informers' first list; an unreachable API server or a missing CRD fail the start with this error."`
	HubModule      string           `yaml:"hubModule" doc:"Module that queues messages for edge nodes."`
	// LeaderElection: with several cloudcore replicas only the leader decides rollouts.
	LeaderElection kube.LeaderElection `yaml:"leaderElection" doc:"Several cloudcore replicas: only the holder of the Lease kedge-rolloutcontroller decides turns and status after spec changes; every replica records its own nodes' reports and delivers to the nodes it holds."`

	host    sdk.Host
	rest    rest.Interface
	kube    kubernetes.Interface
	roInf   cache.SharedIndexInformer
	nodes   corelisters.NodeLister
	nodeInf cache.SharedIndexInformer
	ctl     *controller.Runner[string] // queue of rollout keys, informers' lifetime, workers, per-node fan-in
	metrics *metrics
	now     func() metav1.Time
	sendMu  sync.Mutex              // orders rollout updates and deletes queued for the edge
	gone    map[types.UID]time.Time // recently deleted rollouts: nothing more is sent for them
	life    context.Context
	inv     invMetrics // nodeinventory.go

	elector *kube.Elector
	ha      haState
}

var _ sdk.Module = (*Module)(nil)

// New returns the controller with its defaults.
func New() *Module {
	return &Module{
		API:         controller.API{QPS: 20, Burst: 40},
		Workers:     2,
		SyncTimeout: 30 * time.Second,
		HubModule:   "cloudhub",

		LeaderElection: kube.DefaultLeaderElection(),
	}
}

// Scheme holds the kedge.io types (and the meta types a REST client needs).
var Scheme = controller.NewScheme(v1alpha1.AddToScheme)

// NewRESTClient returns a typed REST client for kedge.io/v1alpha1 on base: JSON, the kedge.io
// scheme, and base's rate limits.
func NewRESTClient(base *rest.Config) (*rest.RESTClient, error) {
	return controller.NewRESTClient(base, v1alpha1.GroupVersion, Scheme)
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	m.host, m.life = h, ctx
	m.ha = haState{held: map[string]bool{}, sent: map[sentKey]int64{}}
	m.gone = map[types.UID]time.Time{}
	if m.now == nil {
		m.now = metav1.Now
	}
	var err error
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	cfg, err := m.API.RestConfig(Name)
	if err != nil {
		return err
	}
	if m.rest, err = NewRESTClient(cfg); err != nil {
		return fmt.Errorf("API client for %s: %w", v1alpha1.GroupVersion, err)
	}
	if m.kube, err = kubernetes.NewForConfig(kube.BuiltinTypes(cfg)); err != nil {
		return fmt.Errorf("API client for nodes: %w", err)
	}
	m.ctl = controller.New(controller.Options[string]{Name: Name, Workers: m.Workers, SyncTimeout: m.SyncTimeout,
		SyncHint: ", and is the CRD of build/crds installed", Logger: h.Logger(),
		Sync: m.sync, SyncFailed: func(string, error) { m.metrics.syncErrors.Inc() }, Upstream: m.handleUp,
		Connected:    func(ctx context.Context, node string, _ bool) { m.setHeld(node, true); m.connected(ctx, node) },
		Disconnected: func(_ context.Context, node string) { m.setHeld(node, false) },
		Inventory:    m.inventory, // resends on connect cover what is in flight
		Refused: func(what string, _ error) {
			if what != "inventory" { // an unreadable inventory is no report
				m.metrics.upstream.WithLabelValues("invalid").Inc()
			}
		}})
	if err := m.watch(); err != nil {
		return err
	}
	m.ctl.Run(m.roInf, m.nodeInf)
	if err := m.ctl.WaitForSync(ctx, "pluginrollouts ("+v1alpha1.GroupVersion.String()+") and edge nodes", m.roInf.HasSynced, m.nodeInf.HasSynced); err != nil {
		return err
	}
	if err := m.startElection(ctx); err != nil {
		m.ctl.Close()
		return err
	}
	m.ctl.Start(ctx)
	h.Logger().Info("watching the API for plugin rollouts", "workers", m.Workers, "leaderElection", m.LeaderElection.Enable, "lease", m.elector.Lease())
	return nil
}

func (m *Module) Stop(ctx context.Context) error {
	m.elector.Stop(ctx) // release the Lease first: another replica takes over at once
	m.ctl.Stop()
	return nil
}

// Handle takes hub events and pluginstatus reports from cloudhub (Dispatch: in order per node).
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	return m.ctl.Dispatch(ctx, msg) // an error answers a sync request
}

// watch builds the informers and registers their handlers: a rollout change reconciles that
// rollout, an edge node change (labels, arrival, removal) reconciles every rollout.
func (m *Module) watch() error {
	m.roInf = controller.Informer(m.rest, v1alpha1.ResourcePluginRollouts, &v1alpha1.PluginRollout{}, cache.Indexers{})
	f := informers.NewSharedInformerFactoryWithOptions(m.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = EdgeRoleLabel
	}))
	ni := f.Core().V1().Nodes()
	m.nodeInf, m.nodes = ni.Informer(), ni.Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			m.ctl.Queue.Add(key)
		}
	}
	deliver := func(obj any) {
		if ro, ok := obj.(*v1alpha1.PluginRollout); ok {
			m.deliver(m.life, ro)
		}
	}
	if _, err := m.roInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { enqueue(obj); deliver(obj) }, UpdateFunc: func(_, n any) { enqueue(n); deliver(n) },
		DeleteFunc: func(obj any) { m.deleted(obj); enqueue(obj) },
	}); err != nil {
		return err
	}
	all := func(any) {
		for _, k := range m.roInf.GetStore().ListKeys() {
			m.ctl.Queue.Add(k)
		}
	}
	_, err := m.nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: all, DeleteFunc: all,
		UpdateFunc: func(o, n any) {
			on, ok1 := o.(*corev1.Node)
			nn, ok2 := n.(*corev1.Node)
			if ok1 && ok2 && labelsEqual(on.Labels, nn.Labels) {
				return // heartbeats and status: no rollout cares
			}
			all(n)
		},
	})
	return err
}

func labelsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
