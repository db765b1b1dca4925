package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/kedge-io/kedge/host/message"
)

// Field numbers of viaduct's message.proto (proto3), plus Kedge's two extensions. KubeEdge's decoder
// skips fields it does not know, so the extensions cost a KubeEdge peer nothing; they sit far above
// KubeEdge's numbers so a field KubeEdge adds later cannot collide with them.
const (
	fieldHeader  protowire.Number = 1 // MessageHeader
	fieldRouter  protowire.Number = 2 // MessageRouter
	fieldContent protowire.Number = 3 // bytes

	headerID              protowire.Number = 1    // string
	headerParentID        protowire.Number = 2    // string
	headerTimestamp       protowire.Number = 3    // sint64 (zigzag), ms since the epoch
	headerSync            protowire.Number = 4    // bool
	headerMessageType     protowire.Number = 5    // string
	headerResourceVersion protowire.Number = 1000 // string, Kedge extension

	routerSource      protowire.Number = 1    // string
	routerGroup       protowire.Number = 2    // string
	routerOperation   protowire.Number = 3    // string ("Operaion" in the .proto)
	routerResource    protowire.Number = 4    // string ("Resouce" in the .proto)
	routerDestination protowire.Number = 1000 // string, Kedge extension
)

// MarshalMessage appends m's protobuf encoding to dst. Zero values are omitted as proto3 does, except
// the header and router sub-messages, which are always present: KubeEdge's decoder dereferences both.
// Content goes out as its JSON bytes, exactly what a KubeEdge sender puts there for JSON content.
func MarshalMessage(dst []byte, m message.Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return dst, fmt.Errorf("encode message: %w", err)
	}
	h, r := &m.Header, &m.Route
	hsize := sizeString(headerID, h.ID) + sizeString(headerParentID, h.ParentID) +
		sizeString(headerMessageType, h.Type) + sizeString(headerResourceVersion, h.ResourceVersion)
	if h.Timestamp != 0 {
		hsize += protowire.SizeTag(headerTimestamp) + protowire.SizeVarint(protowire.EncodeZigZag(h.Timestamp))
	}
	if h.Sync {
		hsize += protowire.SizeTag(headerSync) + 1
	}
	rsize := sizeString(routerSource, r.Source) + sizeString(routerGroup, r.Group) +
		sizeString(routerOperation, r.Operation) + sizeString(routerResource, r.Resource) +
		sizeString(routerDestination, r.Destination)

	dst = protowire.AppendTag(dst, fieldHeader, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(hsize))
	dst = appendString(dst, headerID, h.ID)
	dst = appendString(dst, headerParentID, h.ParentID)
	if h.Timestamp != 0 {
		dst = protowire.AppendTag(dst, headerTimestamp, protowire.VarintType)
		dst = protowire.AppendVarint(dst, protowire.EncodeZigZag(h.Timestamp))
	}
	if h.Sync {
		dst = protowire.AppendTag(dst, headerSync, protowire.VarintType)
		dst = protowire.AppendVarint(dst, 1)
	}
	dst = appendString(dst, headerMessageType, h.Type)
	dst = appendString(dst, headerResourceVersion, h.ResourceVersion)

	dst = protowire.AppendTag(dst, fieldRouter, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(rsize))
	dst = appendString(dst, routerSource, r.Source)
	dst = appendString(dst, routerGroup, r.Group)
	dst = appendString(dst, routerOperation, r.Operation)
	dst = appendString(dst, routerResource, r.Resource)
	dst = appendString(dst, routerDestination, r.Destination)

	if len(m.Content) > 0 {
		dst = protowire.AppendTag(dst, fieldContent, protowire.BytesType)
		dst = protowire.AppendBytes(dst, m.Content)
	}
	return dst, nil
}

func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func appendString(dst []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendString(dst, s)
}

// UnmarshalMessage decodes a protobuf payload. Unknown fields are skipped; a repeated scalar keeps the
// last value and a repeated sub-message merges, as proto3 decoders do. Content bytes that are valid JSON
// are kept as they are (sharing b's memory); other valid UTF-8 text, such as a bare OK from a peer that
// put raw bytes there, becomes a JSON string; anything else is an ErrContent. The result must pass
// message.Validate.
func UnmarshalMessage(b []byte) (message.Message, error) {
	var m message.Message
	var content []byte
	err := walkFields(b, "message", func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case fieldHeader:
			if err := wantBytes(typ, "header", num); err != nil {
				return err
			}
			return decodeHeader(v, &m.Header)
		case fieldRouter:
			if err := wantBytes(typ, "router", num); err != nil {
				return err
			}
			return decodeRouter(v, &m.Route)
		case fieldContent:
			if err := wantBytes(typ, "content", num); err != nil {
				return err
			}
			content = v
		}
		return nil
	})
	if err != nil {
		return message.Message{}, err
	}
	if m.Content, err = contentJSON(content); err != nil {
		return message.Message{}, err
	}
	if err := m.Validate(); err != nil {
		return message.Message{}, &FrameError{Err: ErrInvalid, Detail: err.Error()}
	}
	return m, nil
}

func decodeHeader(b []byte, h *message.Header) error {
	return walkFields(b, "header", func(num protowire.Number, typ protowire.Type, v []byte) error {
		var err error
		switch num {
		case headerID:
			h.ID, err = stringField(typ, v, "header.ID", num)
		case headerParentID:
			h.ParentID, err = stringField(typ, v, "header.ParentID", num)
		case headerTimestamp:
			var x uint64
			if x, err = varintField(typ, v, "header.Timestamp", num); err == nil {
				h.Timestamp = protowire.DecodeZigZag(x)
			}
		case headerSync:
			var x uint64
			if x, err = varintField(typ, v, "header.Sync", num); err == nil {
				h.Sync = x != 0
			}
		case headerMessageType:
			h.Type, err = stringField(typ, v, "header.MessageType", num)
		case headerResourceVersion:
			h.ResourceVersion, err = stringField(typ, v, "header.resourceVersion (Kedge)", num)
		}
		return err
	})
}

func decodeRouter(b []byte, r *message.Route) error {
	return walkFields(b, "router", func(num protowire.Number, typ protowire.Type, v []byte) error {
		var err error
		switch num {
		case routerSource:
			r.Source, err = stringField(typ, v, "router.Source", num)
		case routerGroup:
			r.Group, err = stringField(typ, v, "router.Group", num)
		case routerOperation:
			r.Operation, err = stringField(typ, v, "router.Operation", num)
		case routerResource:
			r.Resource, err = stringField(typ, v, "router.Resource", num)
		case routerDestination:
			r.Destination, err = stringField(typ, v, "router.destination (Kedge)", num)
		}
		return err
	})
}

// walkFields calls fn for each field of the protobuf message b. For a bytes field v is its value;
// for a varint field v is the raw varint; other wire types are skipped after a length check, and so
// are fields fn ignores.
func walkFields(b []byte, where string, fn func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return parseErr(n, "%s: tag at byte %d", where, off)
		}
		off += n
		var v []byte
		switch typ {
		case protowire.BytesType:
			val, n := protowire.ConsumeBytes(b[off:])
			if n < 0 {
				return parseErr(n, "%s: field %d at byte %d", where, num, off)
			}
			v = val
			off += n
		case protowire.VarintType:
			_, n := protowire.ConsumeVarint(b[off:])
			if n < 0 {
				return parseErr(n, "%s: field %d at byte %d", where, num, off)
			}
			v = b[off : off+n]
			off += n
		default:
			n := protowire.ConsumeFieldValue(num, typ, b[off:])
			if n < 0 {
				return parseErr(n, "%s: field %d at byte %d", where, num, off)
			}
			off += n
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

func parseErr(n int, format string, args ...any) error {
	err := protowire.ParseError(n)
	kind := ErrMalformed
	if errors.Is(err, io.ErrUnexpectedEOF) {
		kind = ErrTruncated
	}
	return frameErr(kind, "%s: %v", fmt.Sprintf(format, args...), err)
}

func wantBytes(typ protowire.Type, name string, num protowire.Number) error {
	if typ != protowire.BytesType {
		return frameErr(ErrWireType, "%s (field %d) has wire type %s, want length-delimited", name, num, wireName(typ))
	}
	return nil
}

func stringField(typ protowire.Type, v []byte, name string, num protowire.Number) (string, error) {
	if err := wantBytes(typ, name, num); err != nil {
		return "", err
	}
	if !utf8.Valid(v) {
		return "", frameErr(ErrMalformed, "%s (field %d) is not valid UTF-8, as a proto3 string must be", name, num)
	}
	return string(v), nil
}

func varintField(typ protowire.Type, v []byte, name string, num protowire.Number) (uint64, error) {
	if typ != protowire.VarintType {
		return 0, frameErr(ErrWireType, "%s (field %d) has wire type %s, want varint", name, num, wireName(typ))
	}
	x, _ := protowire.ConsumeVarint(v) // walkFields already checked it
	return x, nil
}

func wireName(t protowire.Type) string {
	switch t {
	case protowire.VarintType:
		return "varint"
	case protowire.Fixed32Type:
		return "fixed32"
	case protowire.Fixed64Type:
		return "fixed64"
	case protowire.BytesType:
		return "length-delimited"
	case protowire.StartGroupType:
		return "start-group"
	case protowire.EndGroupType:
		return "end-group"
	}
	return fmt.Sprintf("%d", t)
}

func contentJSON(b []byte) (json.RawMessage, error) {
	switch {
	case len(b) == 0:
		return nil, nil
	case message.ValidJSON(b):
		return json.RawMessage(b), nil
	case utf8.Valid(b):
		s, err := json.Marshal(string(b))
		return s, err
	}
	return nil, frameErr(ErrContent, "%d content bytes are neither JSON nor UTF-8 text", len(b))
}
