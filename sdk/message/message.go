// Package message is the unit of communication between Kedge modules, and between cloud and edge.
//
// Its shape and JSON field names are KubeEdge's, so a KubeEdge peer reads a Kedge message unchanged:
// a header (ids, timestamp, resourceVersion, sync flag, type), a route (source, destination, group,
// operation, resource) and the content. Content is raw JSON so a message crosses process and WASM
// boundaries without a type registry.
package message

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Operations used across Kedge. A module may use others; these are the ones the host knows.
const (
	OpInsert    = "insert"
	OpUpdate    = "update"
	OpPatch     = "patch"
	OpDelete    = "delete"
	OpQuery     = "query"
	OpResponse  = "response"
	OpError     = "error"
	OpPublish   = "publish"
	OpUpload    = "upload"
	OpKeepalive = "keepalive"
	// OpInventory asks for (edge → metamanager) or carries (edge → cloud, on connect) the list of
	// objects a node holds with their resourceVersions, so the cloud resends only what is missing.
	OpInventory = "inventory"
	// OpConnected and OpDisconnected are the hubs' link events on the router.
	OpConnected    = "connected"
	OpDisconnected = "disconnected"
)

// Header carries identity and ordering. Field names on the wire are KubeEdge's.
type Header struct {
	ID              string `json:"msg_id"`
	ParentID        string `json:"parent_msg_id,omitempty"`
	Timestamp       int64  `json:"timestamp"` // milliseconds since the Unix epoch
	ResourceVersion string `json:"resourceversion,omitempty"`
	Sync            bool   `json:"sync,omitempty"`
	Type            string `json:"type,omitempty"`
}

// Route says where a message comes from, where it goes and what it asks for.
type Route struct {
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
	Group       string `json:"group,omitempty"`
	Operation   string `json:"operation,omitempty"`
	Resource    string `json:"resource,omitempty"`
}

// Message is passed by value: a module that keeps or changes one never affects another's copy
// (Content is shared and must be treated as immutable).
type Message struct {
	Header  Header          `json:"header"`
	Route   Route           `json:"route,omitempty"`
	Content json.RawMessage `json:"content,omitempty"`
}

// NewID returns a random RFC 4122 version-4 UUID string, the ID format KubeEdge peers use. IDs are
// unique, not secret (they travel over authenticated links and are deduplicated per node), so the
// runtime's ChaCha8 generator, seeded from the OS, serves at a fraction of crypto/rand's cost.
func NewID() string {
	var s [IDLen]byte
	return string(AppendID(s[:0]))
}

// IDLen is the length of a message ID from NewID.
const IDLen = 36

// AppendID appends a new ID, as NewID makes, to dst without allocating when dst has room: a caller
// that allocates for a message anyway can carry the ID in the same allocation.
func AppendID(dst []byte) []byte {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	var s [IDLen]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return append(dst, s[:]...)
}

// New builds a request: a fresh ID and the current time, routed from source to group/resource.
func New(source, group, operation, resource string) Message {
	return Message{
		Header: Header{ID: NewID(), Timestamp: time.Now().UnixMilli()},
		Route:  Route{Source: source, Group: group, Operation: operation, Resource: resource},
	}
}

// WithContent returns m carrying v encoded as JSON. Raw JSON ([]byte or json.RawMessage) is kept as is
// after a validity check, so a caller cannot smuggle a broken document into a message.
func (m Message) WithContent(v any) (Message, error) {
	raw, err := encodeContent(v)
	if err != nil {
		return m, fmt.Errorf("message %s: content: %w", m.Header.ID, err)
	}
	m.Content = raw
	return m, nil
}

// Reply builds the response to m: a new ID, ParentID = m's ID, the route reversed to m's source, same
// group and resource, operation "response". The sync flag is kept so a sync waiter matches it.
func (m Message) Reply(source string, v any) (Message, error) {
	r := Message{
		Header: Header{ID: NewID(), ParentID: m.Header.ID, Timestamp: time.Now().UnixMilli(),
			Sync: m.Header.Sync, ResourceVersion: m.Header.ResourceVersion},
		Route: Route{Source: source, Destination: m.Route.Source, Group: m.Route.Group,
			Operation: OpResponse, Resource: m.Route.Resource},
	}
	return r.WithContent(v)
}

// ErrorReply builds a reply whose operation is "error" and whose content is {"error": reason}.
func (m Message) ErrorReply(source string, reason error) Message {
	r, _ := m.Reply(source, map[string]string{"error": reason.Error()}) // a map of strings always encodes
	r.Route.Operation = OpError
	return r
}

// IsReply reports whether m answers another message.
func (m Message) IsReply() bool { return m.Header.ParentID != "" }

// DecodeContent unmarshals m's content into v.
func (m Message) DecodeContent(v any) error {
	if len(m.Content) == 0 {
		return fmt.Errorf("message %s (%s %s): no content", m.Header.ID, m.Route.Operation, m.Route.Resource)
	}
	if err := json.Unmarshal(m.Content, v); err != nil {
		return fmt.Errorf("message %s (%s %s): decode content: %w", m.Header.ID, m.Route.Operation, m.Route.Resource, err)
	}
	return nil
}

// String is a one-line summary for logs; it never prints content (it may hold secrets).
func (m Message) String() string {
	return fmt.Sprintf("msg %s parent=%q %s->%s group=%s op=%s resource=%s (%d bytes)",
		m.Header.ID, m.Header.ParentID, m.Route.Source, m.Route.Destination, m.Route.Group,
		m.Route.Operation, m.Route.Resource, len(m.Content))
}

// MaxSize bounds an encoded message; the hub's frame limit is the same.
const MaxSize = 32 << 20

// Encode returns m as KubeEdge-shaped JSON.
func Encode(m Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// Decode parses and validates one JSON message. Unknown fields are ignored (a newer peer may add
// some); a missing ID, a bad timestamp or non-JSON content is an error that names the problem.
func Decode(data []byte) (Message, error) {
	var m Message
	if len(data) > MaxSize {
		return m, fmt.Errorf("decode message: %d bytes exceeds the %d-byte limit", len(data), MaxSize)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return Message{}, fmt.Errorf("decode message: %w", err)
	}
	if err := m.Validate(); err != nil {
		return Message{}, fmt.Errorf("decode message: %w", err)
	}
	return m, nil
}

// Validate checks what every message must have.
func (m Message) Validate() error {
	switch {
	case m.Header.ID == "":
		return errors.New("header.msg_id is empty")
	case m.Header.Timestamp < 0:
		return fmt.Errorf("message %s: header.timestamp %d is negative", m.Header.ID, m.Header.Timestamp)
	case m.Route.Operation == "":
		return fmt.Errorf("message %s: route.operation is empty", m.Header.ID)
	case len(m.Content) > 0 && !ValidJSON(m.Content):
		return fmt.Errorf("message %s: content is not valid JSON", m.Header.ID)
	}
	return nil
}

func encodeContent(v any) (json.RawMessage, error) {
	switch c := v.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return checkRaw(c)
	case []byte:
		return checkRaw(c)
	default:
		return json.Marshal(v)
	}
}

func checkRaw(b []byte) (json.RawMessage, error) {
	if !ValidJSON(b) {
		return nil, errors.New("raw content is not valid JSON")
	}
	return json.RawMessage(bytes.Clone(b)), nil
}
