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

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/sdk"
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

	host sdk.Host
}

var _ sdk.Module = (*Module)(nil)

// New returns a metamanager with its defaults.
func New() *Module {
	return &Module{
		Consumers: map[string]string{
			"pod": "edged", "configmap": "edged", "secret": "edged", "serviceaccounttoken": "edged",
			"device": "devicetwin", "devicemodel": "devicetwin", "membership": "devicetwin",
		},
		CloudSource: "edgehub",
		HubGroup:    "hub",
	}
}

func (m *Module) Start(_ context.Context, h sdk.Host) error {
	m.host = h
	return nil
}

func (m *Module) Stop(context.Context) error { return nil }

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
		applied, err = m.host.Store().Delete(ctx, key(res))
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
	r, err := m.host.Store().Put(ctx, sdk.Object{Key: key(res), ResourceVersion: rv, Value: msg.Content})
	if err != nil {
		return false, err
	}
	if !r.Applied {
		m.host.Logger().Debug("stale update ignored", "resource", msg.Route.Resource, "rv", rv, "stored", r.Stored)
	}
	return r.Applied, nil
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
		if err != nil {
			return fmt.Errorf("query %s: %w", msg.Route.Resource, err)
		}
		content = json.RawMessage(obj.Value)
	} else {
		objs, err := m.host.Store().List(ctx, sdk.Query{Type: res.Type, Namespace: res.Namespace})
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

func key(r message.Resource) sdk.Key {
	return sdk.Key{Type: r.Type, Namespace: r.Namespace, Name: r.Name}
}
