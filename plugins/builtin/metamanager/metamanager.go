// Package metamanager is the edge's memory: every resource message is written to SQLite before any
// module acts on it, so an edge node restarts and keeps working without the cloud. It answers queries
// from the store and tells the modules that consume a resource type that it changed.
package metamanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address.
const Name = "metamanager"

func init() {
	sdk.Register(sdk.Info{
		Name:    Name,
		Group:   "meta",
		Doc:     "Persists every resource in SQLite before other modules act on it; answers queries offline.",
		Enabled: true,
		New:     func() sdk.Module { return New() },
	})
}

// Module is the metamanager; its exported fields are its settings.
type Module struct {
	// Consumers maps a resource type to the module told about its changes.
	Consumers map[string]string `yaml:"consumers" doc:"Resource type -> module notified after the object is stored (a module that is not running reads the store when it starts)."`
	// CloudSource is the module that delivers messages from the cloud.
	CloudSource string `yaml:"cloudSource" doc:"Module whose messages come from the cloud; changes made on the edge go the other way, to the hub group."`
	// HubGroup receives changes made on the edge, for the cloud.
	HubGroup string `yaml:"hubGroup" doc:"Group that carries edge changes to the cloud."`
	// QueryTimeout bounds how long a query for an object missing here waits for the cloud's answer.
	QueryTimeout time.Duration `yaml:"queryTimeout" doc:"A query for an object this node does not hold is asked of the cloud (while online) and waits at most this long for the answer."`
	// MetaServer is the edge's read-only Kubernetes API over this store.
	MetaServer MetaServerSettings `yaml:"metaServer" doc:"The edge's read-only Kubernetes API (pods, configmaps, secrets, services, nodes) served from this store, for client-go programs on the node."`

	host    sdk.Host
	ctx     context.Context // the module's lifetime: cloud queries run in goroutines bound to it
	wg      sync.WaitGroup
	writeMu sync.Mutex    // a write and its report to the metaserver happen in one order for everyone
	server  apiServer     // nil when the MetaServer is off
	asking  chan struct{} // bounds the cloud queries in flight
	metrics *metrics
}

// MetaServerSettings configure the MetaServer.
type MetaServerSettings struct {
	Enable  bool   `yaml:"enable" doc:"Serve the API."`
	Address string `yaml:"address" doc:"host:port to listen on; keep it on loopback (HTTPS with certFile, else plain HTTP)."`
	// AdminTokenFile holds the node-admin token: node agents present it and see everything.
	CertFile       string `yaml:"certFile" doc:"HTTPS certificate (with keyFile); a self-signed one for 127.0.0.1/localhost is created (key 0600) when missing or expired, and clients trust this file. kubectl and kubeconfig-based client-go programs send tokens only over HTTPS. Empty: plain HTTP (edgecore join sets <data-dir>/metaserver.crt)."`
	KeyFile        string `yaml:"keyFile" doc:"Private key of certFile."`
	AdminTokenFile string `yaml:"adminTokenFile" doc:"File holding the node-admin bearer token (created with 32 random bytes, mode 0600, when missing; tightened to 0600 if others may read it). Node agents present it and see everything the node holds; pods present their service-account tokens and see only their own objects. Empty: no admin token (edgecore join sets <data-dir>/metaserver-admin.token)."`
	// EventWindow is how many recent changes a watch can resume from.
	EventWindow int `yaml:"eventWindow" doc:"Recent changes held for watches to resume from; a watch from an older resourceVersion gets 410 Expired and the client lists again."`
}

type metrics struct {
	cloudQueries *prometheus.CounterVec
}

var _ sdk.Module = (*Module)(nil)

// New returns a metamanager with its defaults.
func New() *Module {
	return &Module{
		Consumers: map[string]string{
			"pod": "edged", "configmap": "edged", "secret": "edged", "serviceaccounttoken": "edged",
			"device": "devicetwin", "devicemodel": "devicetwin", "membership": "devicetwin",
			"pluginrollout": "pluginmanager",
		},
		CloudSource:  "edgehub",
		HubGroup:     "hub",
		QueryTimeout: 10 * time.Second,
		MetaServer:   MetaServerSettings{Enable: startMetaServer != nil, Address: "127.0.0.1:10550", EventWindow: 4096},
	}
}

// maxCloudQueries bounds the queries waiting for the cloud at once; more are refused at once.
const maxCloudQueries = 256

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	m.host, m.ctx = h, ctx
	m.asking = make(chan struct{}, maxCloudQueries)
	m.metrics = &metrics{cloudQueries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_metamanager_cloud_queries_total",
		Help: "Queries for objects missing on the edge asked of the cloud, by result (found, error, unanswered, busy)."}, []string{"result"})}
	if err := h.Metrics().Register(m.metrics.cloudQueries); err != nil {
		return err
	}
	if m.MetaServer.Enable {
		srv, err := startMetaServer(ctx, m)
		if err != nil {
			return err
		}
		m.server = srv
	}
	return nil
}

// apiServer is the MetaServer as metamanager drives it: told of every change to the store.
type apiServer interface {
	Addr() string
	record(obj sdk.Object, deleted bool)
}

// startMetaServer starts the MetaServer for m; nil when the build leaves it out (metaserver.go).
var startMetaServer func(ctx context.Context, m *Module) (apiServer, error)

// MetaServerAddr is the address the MetaServer is bound to; empty when it is off or not bound yet.
func (m *Module) MetaServerAddr() string {
	if m.server == nil {
		return ""
	}
	return m.server.Addr()
}

// Stop waits for the MetaServer and the cloud queries, which end with the module's context.
func (m *Module) Stop(context.Context) error {
	m.wg.Wait()
	return nil
}

// Handle stores or deletes the object a message carries, or answers a query.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	if msg.Route.Operation == message.OpInventory {
		return m.inventory(ctx, msg)
	}
	res, err := message.ParseEdge(msg.Route.Resource)
	if err != nil {
		return fmt.Errorf("message from %s: %w", msg.Route.Source, err)
	}
	applied := true
	switch msg.Route.Operation {
	case message.OpInsert, message.OpUpdate, message.OpPatch:
		applied, err = m.put(ctx, msg, res)
	case message.OpDelete:
		applied, err = m.delete(ctx, res)
	case message.OpQuery:
		return m.query(ctx, msg, res)
	case message.OpResponse, message.OpError:
		return nil // late answers to our own requests carry nothing to store
	default:
		return fmt.Errorf("operation %q on %s is not supported (insert, update, patch, delete, query)", msg.Route.Operation, msg.Route.Resource)
	}
	if err != nil {
		return err
	}
	if msg.Header.Sync {
		reply, err := msg.Reply(Name, "OK")
		if err != nil {
			return err
		}
		if err := m.host.Reply(ctx, reply); err != nil {
			return err
		}
	}
	if !applied {
		return nil // a stale or repeated delivery: nothing changed, nobody is told
	}
	return m.notify(ctx, msg, res)
}

// put stores the object unless the store holds a newer or equal version; applied says which.
func (m *Module) put(ctx context.Context, msg sdk.Message, res message.Resource) (applied bool, err error) {
	if res.Name == "" {
		return false, fmt.Errorf("%s %s: resource has no name", msg.Route.Operation, msg.Route.Resource)
	}
	var rv uint64
	if msg.Header.ResourceVersion != "" {
		if rv, err = strconv.ParseUint(msg.Header.ResourceVersion, 10, 64); err != nil {
			return false, fmt.Errorf("%s %s: resourceversion %q is not a number", msg.Route.Operation, msg.Route.Resource, msg.Header.ResourceVersion)
		}
	}
	applied, err = m.store(ctx, sdk.Object{Key: key(res), ResourceVersion: rv, Value: msg.Content})
	if err == nil && !applied {
		m.host.Logger().Debug("stale update ignored", "resource", msg.Route.Resource, "rv", rv)
	}
	return applied, err
}

// store writes obj (resourceVersion-guarded) and tells the MetaServer's watchers if it was applied.
func (m *Module) store(ctx context.Context, obj sdk.Object) (applied bool, err error) {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	r, err := m.host.Store().Put(ctx, obj)
	if err != nil {
		return false, err
	}
	if r.Applied && m.server != nil {
		m.server.record(obj, false)
	}
	return r.Applied, nil
}

// delete removes the object; watchers get a DELETED event carrying its last stored state.
func (m *Module) delete(ctx context.Context, res message.Resource) (existed bool, err error) {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	var last sdk.Object
	if m.server != nil {
		if last, err = m.host.Store().Get(ctx, key(res)); err != nil && !errors.Is(err, sdk.ErrNotFound) {
			return false, err
		}
	}
	existed, err = m.host.Store().Delete(ctx, key(res))
	if err != nil {
		return false, err
	}
	if existed && m.server != nil {
		m.server.record(sdk.Object{Key: key(res), ResourceVersion: last.ResourceVersion, Value: last.Value}, true)
	}
	if res.Type == "device" {
		// The device's last status report (devicetwin's, kept here on its way to the cloud) goes with it.
		if _, err := m.host.Store().Delete(ctx, sdk.Key{Type: "devicestatus", Namespace: res.Namespace, Name: res.Name}); err != nil {
			return existed, fmt.Errorf("delete device %s/%s: its devicestatus: %w", res.Namespace, res.Name, err)
		}
	}
	return existed, nil
}

// Item is one entry of an inventory: an object the node holds and its resourceVersion.
type Item struct {
	Resource        string `json:"resource"`
	ResourceVersion uint64 `json:"resourceVersion"`
}

// inventory answers with every versioned object (those that came from the cloud).
func (m *Module) inventory(ctx context.Context, msg sdk.Message) error {
	objs, err := m.host.Store().List(ctx, sdk.Query{})
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	items := make([]Item, 0, len(objs))
	for _, o := range objs {
		if o.ResourceVersion > 0 {
			r := message.Resource{Namespace: o.Namespace, Type: o.Type, Name: o.Name}
			items = append(items, Item{Resource: r.Edge(), ResourceVersion: o.ResourceVersion})
		}
	}
	reply, err := msg.Reply(Name, items)
	if err != nil {
		return err
	}
	return m.host.Reply(ctx, reply)
}

// notify tells whoever consumes the change: local consumers for changes from the cloud, the hub for
// changes made here. The object is already stored, so a missing receiver loses nothing.
func (m *Module) notify(ctx context.Context, msg sdk.Message, res message.Resource) error {
	msg.Header.Sync = false // the consumer is told, not asked; the sender already has its answer
	if msg.Route.Source == m.CloudSource {
		to, ok := m.Consumers[res.Type]
		if !ok || to == msg.Route.Source {
			return nil
		}
		err := m.host.Send(ctx, to, msg)
		return ignoreAbsent(err)
	}
	return ignoreAbsent(m.host.SendToGroup(ctx, m.HubGroup, msg))
}

// ignoreAbsent: a receiver that is not running (disabled, or not started yet) reads the store itself.
func ignoreAbsent(err error) error {
	if errors.Is(err, sdk.ErrUnknownModule) {
		return nil
	}
	return err
}

func (m *Module) query(ctx context.Context, msg sdk.Message, res message.Resource) error {
	var content any
	if res.Name != "" {
		obj, err := m.host.Store().Get(ctx, key(res))
		if errors.Is(err, sdk.ErrNotFound) && msg.Route.Source != m.CloudSource {
			return m.askCloud(msg, res)
		}
		if err != nil {
			return fmt.Errorf("query %s: %w", msg.Route.Resource, err)
		}
		content = json.RawMessage(obj.Value)
	} else {
		ns := res.Namespace
		if ns == AllNamespaces {
			ns = "" // `*/<type>`: that type across every namespace
		}
		objs, err := m.host.Store().List(ctx, sdk.Query{Type: res.Type, Namespace: ns})
		if err != nil {
			return fmt.Errorf("query %s: %w", msg.Route.Resource, err)
		}
		list := make([]json.RawMessage, 0, len(objs))
		for _, o := range objs {
			list = append(list, o.Value)
		}
		content = list
	}
	reply, err := msg.Reply(Name, content)
	if err != nil {
		return err
	}
	return m.host.Reply(ctx, reply)
}

// AllNamespaces as the namespace segment of a list query (`*/pod`) lists the type in every namespace.
const AllNamespaces = "*"

func key(r message.Resource) sdk.Key {
	return sdk.Key{Type: r.Type, Namespace: r.Namespace, Name: r.Name}
}
