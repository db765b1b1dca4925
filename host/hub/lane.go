package hub

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/kedge-io/kedge/host/message"
)

// Lane is how messages travel on a connection, chosen at the websocket handshake.
type Lane int

const (
	// LaneKedge is Kedge's framing: per message a 10-byte header frame and a protobuf payload frame
	// (binary), the wire KubeEdge's viaduct uses on QUIC. Both ends are Kedge: the edge offered the
	// Subprotocol and the cloud selected it. Every message is acknowledged and resent until it is.
	LaneKedge Lane = iota
	// LaneKubeEdge is KubeEdge's websocket lane: one JSON text frame per message (header, route,
	// content), what KubeEdge's edgehub and cloudhub send each other on websockets. A client that did
	// not offer the Subprotocol is a KubeEdge edgecore; a cloud that did not select it is KubeEdge's
	// cloudcore.
	LaneKubeEdge
)

// Subprotocol is the websocket subprotocol a Kedge edge offers and a Kedge cloud selects; it is how
// each end knows the other is Kedge (KubeEdge's viaduct neither offers nor selects subprotocols).
const Subprotocol = "kedge.hub.v1"

func (l Lane) String() string {
	switch l {
	case LaneKedge:
		return "kedge"
	case LaneKubeEdge:
		return "kubeedge-json"
	}
	return "lane(" + strconv.Itoa(int(l)) + ")"
}

// MarshalJSONLane encodes m as the JSON text frame of KubeEdge's websocket lane: KubeEdge's field
// names (header.msg_id, parent_msg_id, timestamp, resourceversion, sync, type; route.source,
// destination, group, operation, resource; content). Content is written as the JSON value it holds
// (an object stays an object, the string "OK" stays a string), which is what KubeEdge's own sender
// writes for structured content.
func MarshalJSONLane(m message.Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, frameErr(ErrInvalid, "%v", err)
	}
	if len(m.Content) == 0 {
		m.Content = json.RawMessage("null") // KubeEdge always writes content; null for none
	}
	return json.Marshal(m)
}

// UnmarshalJSONLane decodes one JSON text frame of KubeEdge's websocket lane. Content is taken as
// KubeEdge's receivers take it (model.Message.GetContentData): a JSON string stands for its text —
// KubeEdge sends JSON documents as strings (devicetwin's membership and twin messages) — so a string
// whose text is a JSON document becomes that document, as on the protobuf lane where the same
// content arrives as raw bytes; any other string (such as "ping" or "OK") and every other JSON value
// are kept as they are; null is no content.
func UnmarshalJSONLane(b []byte) (message.Message, error) {
	var m message.Message
	if err := json.Unmarshal(b, &m); err != nil {
		return message.Message{}, frameErr(ErrMalformed, "JSON message: %v", err)
	}
	c := bytes.TrimSpace(m.Content)
	switch {
	case len(c) == 0 || string(c) == "null":
		m.Content = nil
	case c[0] == '"':
		var s string
		if err := json.Unmarshal(c, &s); err != nil { // cannot fail for what Unmarshal accepted
			return message.Message{}, frameErr(ErrContent, "content string: %v", err)
		}
		if t := bytes.TrimSpace([]byte(s)); len(t) > 0 && (t[0] == '{' || t[0] == '[') && message.ValidJSON(t) {
			m.Content = json.RawMessage(s)
		} else {
			m.Content = json.RawMessage(c)
		}
	default:
		m.Content = json.RawMessage(c)
	}
	if err := m.Validate(); err != nil {
		return message.Message{}, frameErr(ErrInvalid, "%v", err)
	}
	return m, nil
}
