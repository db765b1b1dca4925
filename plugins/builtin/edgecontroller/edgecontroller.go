// Package edgecontroller is the cloud side of Kubernetes for edge nodes: it registers edge nodes and
// keeps their Node status and Lease fresh from what the edge reports, sends each edge node the pods
// bound to it and exactly the ConfigMaps, Secrets and Services those pods need, writes pod status from
// the edge back to the API, completes graceful deletions the edge confirmed, answers the edge's
// queries, and refuses anything a node may not touch (the NodeRestriction rule).
package edgecontroller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/kube"
	"github.com/kedge-io/kedge/sdk/kube/controller"
)

// Name is the module's routing address. Its group is the hub's events group, so it hears when a node
// connects, disconnects and reports its inventory.
const Name = "edgecontroller"

// EdgeLabel marks the Nodes this controller manages.
const EdgeLabel = "node-role.kubernetes.io/edge"

func init() {
	sdk.Register(controller.Info(Name, "Edge nodes in Kubernetes: node registration, status and leases; pods and what they reference sent to their node only; pod status and deletions from the edge; NodeRestriction.", func() sdk.Module { return New() }))
}

// Module is the edge controller; its exported fields are its settings.
type Module struct {
	controller.API  `yaml:",inline"` // kubeconfig, qps, burst
	Workers         int              `yaml:"workers" doc:"Goroutines turning API changes into messages for the edge, and as many handling the edge's reports (one node's reports are always handled in order)."`
	NodeGracePeriod time.Duration    `yaml:"nodeGracePeriod" doc:"A disconnected node's Ready condition turns Unknown after this (as node-monitor-grace-period)."`
	LeaseDuration   time.Duration    `yaml:"leaseDuration" doc:"Duration written in each edge node's Lease in kube-node-lease."`
	// LeaseRenewInterval and NodeStatusUpdateFrequency set what idle nodes cost the API server.
	LeaseRenewInterval        time.Duration       `yaml:"leaseRenewInterval" doc:"A connected node's Lease is renewed when it is this old (kubelet: 10s); the link is its liveness, reports are not needed. Must stay well inside kube-controller-manager's --node-monitor-grace-period (40s; 50s from Kubernetes 1.32), which marks a node whose Lease and Ready heartbeat are both older NotReady. Idle writes are nodes/leaseRenewInterval per second."`
	NodeStatusUpdateFrequency time.Duration       `yaml:"nodeStatusUpdateFrequency" doc:"A node's status report is written to the Node only when it changes something (capacity, addresses, conditions, node info), when the Node is not Ready=True, or when its Ready heartbeat is this old (kubelet's nodeStatusReportFrequency: 5m)."`
	InventoryWait             time.Duration       `yaml:"inventoryWait" doc:"After a node connects, how long to wait for its inventory before sending it everything it should hold (a KubeEdge edgecore sends none)."`
	SyncTimeout               time.Duration       `yaml:"syncTimeout" doc:"How long start waits for the informers' first list; an unreachable API server fails the start with this error."`
	SendServices              bool                `yaml:"sendServices" doc:"Send every Service to every edge node (for service discovery on the edge)."`
	HubModule                 string              `yaml:"hubModule" doc:"Module that queues messages for edge nodes."`
	TokenRetry                time.Duration       `yaml:"tokenRetry" doc:"How soon a service-account token that could not be issued (no such ServiceAccount yet) is tried again."`
	LeaderElection            kube.LeaderElection `yaml:"leaderElection" doc:"Several cloudcore replicas: only the holder of the Lease kedge-edgecontroller marks silent nodes Ready=Unknown and changes pod tolerations for autonomy; everything about a node's own connection stays with the replica holding it."`
	Autonomy                  bool                `yaml:"autonomy" doc:"Keep the pods of edge Nodes labelled kedge.io/autonomy=true from being evicted while unreachable: their unreachable/not-ready NoExecute tolerations are made unlimited (or kedge.io/autonomy-duration on the Node). See the README for what that gives up."`

	host     sdk.Host
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	pods     corelisters.PodLister
	podIdx   cache.Indexer
	nodes    corelisters.NodeLister
	cms      corelisters.ConfigMapLister
	secrets  corelisters.SecretLister
	services corelisters.ServiceLister
	ctl      *controller.Runner[item] // queue, informers' lifetime, workers, per-node fan-in
	recorder record.EventRecorder
	events   record.EventBroadcaster
	metrics  *metrics
	wg       sync.WaitGroup // monitorNodes and the autonomy workers
	life     context.Context
	endpoint atomic.Pointer[cachedEndpoint] // cloudstream's last answer (nodes.go, streamEndpoint)

	mu       sync.Mutex
	state    map[string]*nodeState // edge node -> what it was sent and how it is connected
	owners   map[objKey]map[string]int
	missing  map[string]bool // "pod uid/ref" already reported as a missing reference
	podNodes map[string]podRecord
	tokens   map[string]tokenState // by pod namespace/name
	autonomy *autonomy             // nil when the autonomy setting is off

	elector      *kube.Elector
	leaseFactory informers.SharedInformerFactory
	leaseLister  coordlisters.LeaseLister // slim copies (slimLease)
	leaseMu      sync.Mutex
	leases       map[string]leaseSeen // node Leases in kube-node-lease, as this replica saw them change
}

var _ sdk.Module = (*Module)(nil)

// New returns the controller with its defaults.
func New() *Module {
	return &Module{
		API:             controller.API{QPS: 50, Burst: 100},
		Workers:         4,
		NodeGracePeriod: 40 * time.Second,
		LeaseDuration:   40 * time.Second,

		LeaseRenewInterval:        10 * time.Second,
		NodeStatusUpdateFrequency: 5 * time.Minute,
		SyncTimeout:               30 * time.Second,
		InventoryWait:             10 * time.Second,
		SendServices:              true,
		HubModule:                 "cloudhub",
		TokenRetry:                30 * time.Second,
		Autonomy:                  true,
		LeaderElection:            kube.DefaultLeaderElection(),
	}
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if m.Workers <= 0 || m.QPS <= 0 || m.Burst <= 0 || m.NodeGracePeriod <= 0 || m.LeaseDuration <= 0 || m.SyncTimeout <= 0 || m.InventoryWait <= 0 || m.TokenRetry <= 0 {
		return errors.New("workers, qps, burst, nodeGracePeriod, leaseDuration, syncTimeout, inventoryWait and tokenRetry must be positive")
	}
	if m.LeaseRenewInterval <= 0 || m.NodeStatusUpdateFrequency <= 0 {
		return errors.New("leaseRenewInterval and nodeStatusUpdateFrequency must be positive")
	}
	if m.LeaseRenewInterval >= m.LeaseDuration {
		return fmt.Errorf("leaseRenewInterval %s must be shorter than leaseDuration %s, or Leases expire between renewals", m.LeaseRenewInterval, m.LeaseDuration)
	}
	if err := m.LeaderElection.Validate("modules.edgecontroller.leaderElection"); err != nil {
		return err
	}
	m.host, m.life = h, ctx
	if m.LeaseRenewInterval > m.NodeGracePeriod/3 {
		h.Logger().Warn("leaseRenewInterval is more than a third of nodeGracePeriod: with several cloudcore replicas the leader marks a node held by another replica Ready=Unknown when its Lease has not moved for nodeGracePeriod, so live nodes would be marked; keep it at most a third",
			"leaseRenewInterval", m.LeaseRenewInterval, "nodeGracePeriod", m.NodeGracePeriod)
	}
	m.leases = map[string]leaseSeen{}
	m.endpoint.Store(nil)
	m.state = map[string]*nodeState{}
	m.owners = map[objKey]map[string]int{}
	m.missing = map[string]bool{}
	m.podNodes = map[string]podRecord{}
	m.tokens = map[string]tokenState{}
	var err error
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	if m.client == nil {
		cfg, err := m.API.RestConfig(Name)
		if err != nil {
			return err
		}
		if m.client, err = kubernetes.NewForConfig(kube.BuiltinTypes(cfg)); err != nil {
			return fmt.Errorf("API client: %w", err)
		}
	}
	m.events = record.NewBroadcaster(record.WithContext(ctx))
	m.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: m.client.CoreV1().Events("")})
	m.recorder = m.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kedge-edgecontroller"})

	m.ctl = controller.New(controller.Options[item]{Name: Name, Workers: m.Workers, SyncTimeout: m.SyncTimeout, Logger: h.Logger(),
		Sync: m.sync, SyncFailed: func(it item, _ error) { m.metrics.syncErrors.WithLabelValues(it.Type).Inc() },
		Upstream: m.handleUp, Connected: m.connected, Disconnected: m.disconnected, Inventory: m.reconcile,
		Refused: func(what string, _ error) { m.metrics.upstream.WithLabelValues(what, "invalid").Inc() }})
	m.factory = informers.NewSharedInformerFactoryWithOptions(m.client, 0, informers.WithTransform(stripManagedFields))
	synced, err := m.watch()
	if err != nil {
		return err
	}
	if m.Autonomy {
		if err := m.startAutonomy(h.Metrics()); err != nil {
			return err
		}
	}
	m.factory.Start(m.ctl.Done())
	leasesSynced, err := m.watchNodeLeases(m.ctl.Done())
	if err != nil {
		return err
	}
	fail := func(err error) error {
		m.ctl.Close()
		m.factory.Shutdown()
		m.leaseFactory.Shutdown()
		m.stopAutonomy()
		return err
	}
	if err := m.ctl.WaitForSync(ctx, "pods, nodes, configmaps, secrets, services and leases in "+leaseNamespace, append(synced, leasesSynced)...); err != nil {
		return fail(err)
	}
	if err := m.startElection(ctx); err != nil {
		return fail(err)
	}
	m.ctl.Start(ctx)
	m.wg.Go(func() { m.monitorNodes(ctx) })
	m.wg.Go(func() { m.renewLeases(ctx) })
	if m.autonomy != nil {
		m.runAutonomy(ctx)
	}
	h.Logger().Info("watching the API for edge nodes", "workers", m.Workers, "nodeGracePeriod", m.NodeGracePeriod, "leaderElection", m.LeaderElection.Enable, "lease", m.elector.Lease())
	return nil
}

func (m *Module) Stop(ctx context.Context) error {
	m.elector.Stop(ctx) // release the Lease first: another replica takes over at once
	if m.ctl != nil {
		m.ctl.Close()
	}
	m.stopAutonomy()
	if m.factory != nil {
		m.factory.Shutdown()
	}
	if m.leaseFactory != nil {
		m.leaseFactory.Shutdown()
	}
	if m.ctl != nil {
		m.ctl.Wait()
	}
	m.wg.Wait()
	if m.events != nil {
		m.events.Shutdown()
	}
	return nil
}

// Handle takes what cloudhub hands over: hub events and messages from edge nodes. Messages are handled
// by a worker per node hash, so one node's reports stay in order while nodes proceed in parallel; the
// answer (which acknowledges the message to the edge) is sent when the worker is done.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	return m.ctl.Dispatch(ctx, msg) // an error answers a sync request
}
