// Package devicecontroller is the cloud side of devices: it watches Device and DeviceModel objects
// (devices.kubeedge.io/v1beta1) and sends each edge node exactly its devices, the models they need
// (reference-counted per node) and its membership list; it writes what the edge reports — twins,
// state, last online time — into the Device status, and refuses reports about devices bound to
// another node (the NodeRestriction rule).
package devicecontroller

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/kube"
	"github.com/kedge-io/kedge/sdk/kube/controller"
)

// Name is the module's routing address; cloudhub hands it the edge's messages of group "twin". Its
// group is the hub's events group, so it hears when a node connects, disconnects and reports its
// inventory.
const Name = "devicecontroller"

func init() {
	sdk.Register(controller.Info(Name, "Devices on edge nodes: Device and DeviceModel objects and the membership sent to their node only; twins, state and last online time from the edge written into the Device status; NodeRestriction.", func() sdk.Module { return New() }))
}

// Module is the device controller; its exported fields are its settings.
type Module struct {
	controller.API `yaml:",inline"` // kubeconfig, qps, burst
	Workers        int              `yaml:"workers" doc:"Goroutines turning API changes into messages for the edge, and as many handling the edge's reports (one node's reports are always handled in order)."`
	InventoryWait  time.Duration    `yaml:"inventoryWait" doc:"After a node connects, how long to wait for its inventory before sending it everything it should hold (a KubeEdge edgecore sends none)."`
	SyncTimeout    time.Duration    `yaml:"syncTimeout" doc:"How long start waits for the informers' first list; an unreachable API server or missing CRDs fail the start with this error."`
	HubModule      string           `yaml:"hubModule" doc:"Module that queues messages for edge nodes."`
	EventInterval  time.Duration    `yaml:"eventInterval" doc:"At most one Warning Event write per device and reason per interval when its Healthy condition turns False; failures within it are added to the Event's count at the next write."`

	host    sdk.Host
	rest    rest.Interface
	client  kubernetes.Interface     // Events, Secrets
	secrets corelisters.SecretLister // secrets.go
	devInf  cache.SharedIndexInformer
	modInf  cache.SharedIndexInformer
	ctl     *controller.Runner[item] // queue, informers' lifetime, workers, per-node fan-in
	metrics *metrics

	sendMu  sync.Mutex // orders model reference counting and membership with the sends they cause
	mu      sync.Mutex
	state   map[string]*nodeState        // edge node -> what it was sent and how it is connected
	owners  map[string]map[string]int    // model "ns/name" -> node -> devices there using it
	unsent  map[string]map[string]bool   // model "ns/name" -> nodes that need it but never got it (it did not exist yet)
	modelRV map[string]map[string]uint64 // model "ns/name" -> node -> the version the node was sent (or holds)
	records map[string]devRecord         // device "ns/name" -> what was last decided for it

	dsInf       cache.SharedIndexInformer // DeviceStatus objects, slimmed to statusCopy (devicestatus.go)
	mirrorLocks [64]sync.Mutex            // one Device's DeviceStatus decisions and writes in order (lockMirror)
	mirrorMu    sync.Mutex
	mirrored    map[string]mirrorRec // device "ns/name" -> what this process last wrote to its DeviceStatus

	evMu   sync.Mutex
	events map[string]*eventRecord // "ns/name/reason" -> the Warning Event last written (events.go)
}

var _ sdk.Module = (*Module)(nil)

// New returns the controller with its defaults.
func New() *Module {
	return &Module{
		API:           controller.API{QPS: 50, Burst: 100},
		Workers:       4,
		InventoryWait: 10 * time.Second,
		SyncTimeout:   30 * time.Second,
		HubModule:     "cloudhub",
		EventInterval: time.Minute,
	}
}

// Scheme holds the device types (and the meta types a REST client needs).
var Scheme = controller.NewScheme(v1beta1.AddToScheme)

// NewRESTClient returns a typed REST client for devices.kubeedge.io/v1beta1 on base: JSON, the
// device scheme, and base's rate limits.
func NewRESTClient(base *rest.Config) (*rest.RESTClient, error) {
	return controller.NewRESTClient(base, v1beta1.GroupVersion, Scheme)
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	m.host = h
	m.state = map[string]*nodeState{}
	m.owners = map[string]map[string]int{}
	m.unsent = map[string]map[string]bool{}
	m.modelRV = map[string]map[string]uint64{}
	m.records = map[string]devRecord{}
	m.mirrored = map[string]mirrorRec{}
	m.events = map[string]*eventRecord{}
	var err error
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	if m.rest == nil {
		cfg, err := m.API.RestConfig(Name)
		if err != nil {
			return err
		}
		if m.rest, err = NewRESTClient(cfg); err != nil {
			return fmt.Errorf("API client for %s: %w", v1beta1.GroupVersion, err)
		}
		if m.client, err = kubernetes.NewForConfig(kube.BuiltinTypes(cfg)); err != nil {
			return fmt.Errorf("API client for events: %w", err)
		}
	}
	m.ctl = controller.New(controller.Options[item]{Name: Name, Workers: m.Workers, SyncTimeout: m.SyncTimeout,
		SyncHint: ", and are the CRDs of build/crds installed", Logger: h.Logger(),
		Sync: m.sync, SyncFailed: func(it item, _ error) { m.metrics.syncErrors.WithLabelValues(it.Type).Inc() },
		Upstream: m.handleUp, Connected: m.connected, Disconnected: m.disconnected, Inventory: m.reconcile,
		Refused: func(what string, _ error) { m.metrics.upstream.WithLabelValues(what, "invalid").Inc() }})
	if err := m.watch(); err != nil {
		return err
	}
	refused := make(chan error, 1) // the API server refused to list or watch DeviceStatus objects
	if m.dsInf, err = newStatusInformer(m.rest, refused); err != nil {
		return err
	}
	synced := []cache.InformerSynced{m.devInf.HasSynced, m.modInf.HasSynced}
	if m.client != nil {
		secInf, err := m.watchSecrets() // secrets.go
		if err != nil {
			return err
		}
		m.ctl.Run(secInf)
		synced = append(synced, secInf.HasSynced)
	}
	m.ctl.Run(m.devInf, m.modInf, m.dsInf)
	if err := m.ctl.WaitForSync(ctx, "devices and devicemodels ("+v1beta1.GroupVersion.String()+")", synced...); err != nil {
		return err
	}
	m.awaitStatuses(ctx, refused) // devicestatus.go
	m.ctl.Start(ctx)
	h.Logger().Info("watching the API for devices", "workers", m.Workers)
	return nil
}

func (m *Module) Stop(context.Context) error {
	m.ctl.Stop()
	return nil
}

// Handle takes hub events and devicestatus reports from cloudhub (Dispatch: in order per node).
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	return m.ctl.Dispatch(ctx, msg) // an error answers a sync request
}

// watch builds the informers on the REST client and registers their handlers.
func (m *Module) watch() error {
	m.devInf = controller.Informer(m.rest, v1beta1.ResourceDevices, &v1beta1.Device{}, cache.Indexers{
		nodeIndex: func(obj any) ([]string, error) {
			if d, ok := obj.(*v1beta1.Device); ok && d.Spec.NodeName != "" {
				return []string{d.Spec.NodeName}, nil
			}
			return nil, nil
		},
		secretIndex: secretIndexFunc, // secrets.go
		modelIndex: func(obj any) ([]string, error) {
			if d, ok := obj.(*v1beta1.Device); ok && modelKey(d) != "" {
				return []string{modelKey(d)}, nil
			}
			return nil, nil
		},
	})
	m.modInf = controller.Informer(m.rest, v1beta1.ResourceDeviceModels, &v1beta1.DeviceModel{}, cache.Indexers{})
	handler := func(typ string) cache.ResourceEventHandlerFuncs {
		return m.ctl.Handler(func(ns, name string) item { return item{Type: typ, Namespace: ns, Name: name} })
	}
	if _, err := m.devInf.AddEventHandler(handler(TypeDevice)); err != nil {
		return err
	}
	_, err := m.modInf.AddEventHandler(handler(TypeDeviceModel))
	return err
}
