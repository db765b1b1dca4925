package modulepb

import (
	"time"

	"github.com/kedge-io/kedge/sdk/message"
	store "github.com/kedge-io/kedge/sdk/storeapi"
)

// FromMessage converts a host message to its wire form. Content is shared, not copied.
func FromMessage(m message.Message) *Message {
	return &Message{
		Header: &Header{
			Id:              m.Header.ID,
			ParentId:        m.Header.ParentID,
			Timestamp:       m.Header.Timestamp,
			ResourceVersion: m.Header.ResourceVersion,
			Sync:            m.Header.Sync,
			Type:            m.Header.Type,
		},
		Route: &Route{
			Source:      m.Route.Source,
			Destination: m.Route.Destination,
			Group:       m.Route.Group,
			Operation:   m.Route.Operation,
			Resource:    m.Route.Resource,
		},
		Content: m.Content,
	}
}

// ToMessage converts a wire message back; a nil message or missing parts give zero fields. It does
// not validate: the receiver decides (the host validates what a plugin sends, see message.Validate).
func (x *Message) ToMessage() message.Message {
	h, r := x.GetHeader(), x.GetRoute()
	return message.Message{
		Header: message.Header{
			ID:              h.GetId(),
			ParentID:        h.GetParentId(),
			Timestamp:       h.GetTimestamp(),
			ResourceVersion: h.GetResourceVersion(),
			Sync:            h.GetSync(),
			Type:            h.GetType(),
		},
		Route: message.Route{
			Source:      r.GetSource(),
			Destination: r.GetDestination(),
			Group:       r.GetGroup(),
			Operation:   r.GetOperation(),
			Resource:    r.GetResource(),
		},
		Content: x.GetContent(),
	}
}

// FromKey converts a store key.
func FromKey(k store.Key) *Key { return &Key{Type: k.Type, Namespace: k.Namespace, Name: k.Name} }

// ToKey converts a wire key.
func (x *Key) ToKey() store.Key {
	return store.Key{Type: x.GetType(), Namespace: x.GetNamespace(), Name: x.GetName()}
}

// FromObject converts a stored object.
func FromObject(o store.Object) *Object {
	var updated int64
	if !o.UpdatedAt.IsZero() {
		updated = o.UpdatedAt.UnixNano()
	}
	return &Object{Key: FromKey(o.Key), ResourceVersion: o.ResourceVersion, Value: o.Value, UpdatedAtUnixNano: updated}
}

// ToObject converts a wire object.
func (x *Object) ToObject() store.Object {
	o := store.Object{Key: x.GetKey().ToKey(), ResourceVersion: x.GetResourceVersion(), Value: x.GetValue()}
	if ns := x.GetUpdatedAtUnixNano(); ns != 0 {
		o.UpdatedAt = time.Unix(0, ns)
	}
	return o
}

// FromPutResult converts a put result.
func FromPutResult(r store.PutResult) *PutResult {
	return &PutResult{Applied: r.Applied, Stored: r.Stored}
}

// ToPutResult converts a wire put result.
func (x *PutResult) ToPutResult() store.PutResult {
	return store.PutResult{Applied: x.GetApplied(), Stored: x.GetStored()}
}
