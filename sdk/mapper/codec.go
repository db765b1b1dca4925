package mapper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// A codec is a module that holds a device's protocol-specific logic — which registers mean what, their
// scale and byte order, a serial sensor's line format — apart from the transport that moves the
// bytes. It is addressed by name through the router, so it runs builtin, as a process plugin or as
// WASM, and the host hot-swaps it like any module. A property uses one by naming it in its visitor
// config: visitors.configData {"codec": "thermo-codec", ...}. Its driver then returns Raw from Read
// (and receives Raw in Write); the runtime asks the codec to decode and encode with a sync request.

// Codec operations.
const (
	CodecDecode = "decode" // Raw → value
	CodecEncode = "encode" // value → Raw
)

// Raw is a reading a driver has not decoded: what the device sent, as JSON — register words
// (RawRegisters) or a line of text (RawLine) — for the property's codec. A driver returns it from Read
// when the property's visitor names a codec, and receives it in Write.
type Raw json.RawMessage

// RawRegisters is a reading of 16-bit registers: a JSON array of numbers.
func RawRegisters(regs ...uint16) Raw {
	b := make([]byte, 0, 2+6*len(regs))
	b = append(b, '[')
	for i, r := range regs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(r), 10)
	}
	return Raw(append(b, ']'))
}

// RawLine is one line of a text protocol: a JSON string.
func RawLine(line string) Raw {
	b, _ := json.Marshal(line) // a string always encodes
	return Raw(b)
}

// Registers reads Raw written by RawRegisters (for a driver's Write).
func (r Raw) Registers() ([]uint16, error) {
	var regs []uint16
	if err := json.Unmarshal(r, &regs); err != nil {
		return nil, fmt.Errorf("raw %s is not a list of 16-bit registers: %w", r, err)
	}
	return regs, nil
}

// Line reads Raw written by RawLine.
func (r Raw) Line() (string, error) {
	var s string
	if err := json.Unmarshal(r, &s); err != nil {
		return "", fmt.Errorf("raw %s is not a line of text: %w", r, err)
	}
	return s, nil
}

// CodecRequest is the content of a decode or encode request.
type CodecRequest struct {
	Device   string          `json:"device"`          // namespace/name
	Property string          `json:"property"`        // the property's name
	Type     string          `json:"type"`            // the model's type (INT, FLOAT, ...)
	Visitor  json.RawMessage `json:"visitor"`         // visitors.configData, the codec's own keys included
	Raw      json.RawMessage `json:"raw,omitempty"`   // decode: what the driver read
	Value    json.RawMessage `json:"value,omitempty"` // encode: the desired value (JSON: number, string, bool)
}

// CodecAnswer is the content of a codec's reply.
type CodecAnswer struct {
	Value json.RawMessage `json:"value,omitempty"` // decode: the property value (number, string or bool)
	Raw   json.RawMessage `json:"raw,omitempty"`   // encode: what the driver writes
}

// CodecName returns the codec a property's visitor config names ("" for none). A visitor that is not
// a JSON object names none.
func CodecName(visitor json.RawMessage) string {
	if !bytes.Contains(visitor, []byte(`"codec"`)) {
		return ""
	}
	var v struct {
		Codec string `json:"codec"`
	}
	_ = json.Unmarshal(visitor, &v)
	return v.Codec
}

// Codec calls a codec module over the router.
type Codec struct {
	Host    sdk.Host      // the caller's host: requests come from its module
	Timeout time.Duration // used when ctx has no deadline
}

// Decode asks codec to turn raw into a value of the property's type. The result is what the codec
// answered as a string (a JSON string unquoted, a number or bool as written), for FormatValue.
func (c Codec) Decode(ctx context.Context, codec string, device DeviceRef, p Property, raw Raw) (Value, error) {
	if !json.Valid(raw) {
		return nil, fmt.Errorf("property %q: the driver's raw reading %q is not JSON", p.Name, raw)
	}
	ans, err := c.call(ctx, codec, CodecDecode, CodecRequest{Device: device.String(), Property: p.Name, Type: p.Type,
		Visitor: visitorJSON(p.Visitor), Raw: json.RawMessage(raw)})
	if err != nil {
		return nil, err
	}
	if len(ans.Value) == 0 {
		return nil, fmt.Errorf("property %q: codec %s answered no value", p.Name, codec)
	}
	if ans.Value[0] == '"' {
		var s string
		if err := json.Unmarshal(ans.Value, &s); err != nil {
			return nil, fmt.Errorf("property %q: codec %s value %s: %w", p.Name, codec, ans.Value, err)
		}
		return s, nil
	}
	if ans.Value[0] == '{' || ans.Value[0] == '[' || string(ans.Value) == "null" {
		return nil, fmt.Errorf("property %q: codec %s value %s is not a number, string or bool", p.Name, codec, ans.Value)
	}
	return string(ans.Value), nil
}

// Encode asks codec to turn a desired value into what the driver writes.
func (c Codec) Encode(ctx context.Context, codec string, device DeviceRef, p Property, v Value) (Raw, error) {
	s, err := FormatValue(p.Type, v)
	if err != nil {
		return nil, fmt.Errorf("property %q: %w", p.Name, err)
	}
	val := json.RawMessage(strconv.Quote(s))
	switch p.Type {
	case "INT", "FLOAT", "DOUBLE", "BOOLEAN":
		val = json.RawMessage(s)
	}
	ans, err := c.call(ctx, codec, CodecEncode, CodecRequest{Device: device.String(), Property: p.Name, Type: p.Type,
		Visitor: visitorJSON(p.Visitor), Value: val})
	if err != nil {
		return nil, err
	}
	if len(ans.Raw) == 0 {
		return nil, fmt.Errorf("property %q: codec %s answered no raw data to write", p.Name, codec)
	}
	return Raw(ans.Raw), nil
}

func (c Codec) call(ctx context.Context, codec, op string, req CodecRequest) (CodecAnswer, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return CodecAnswer{}, fmt.Errorf("property %q: codec request: %w", req.Property, err)
	}
	timeout := c.Timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	m := message.New(c.Host.Name(), "codec", op, req.Device+"/"+req.Property)
	m.Content = body
	reply, err := c.Host.SendSync(ctx, codec, m, timeout)
	if err != nil {
		return CodecAnswer{}, fmt.Errorf("property %q: codec %s %s: %w", req.Property, codec, op, err)
	}
	if reply.Route.Operation == message.OpError {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(reply.Content, &e)
		if e.Error == "" {
			e.Error = string(reply.Content)
		}
		return CodecAnswer{}, fmt.Errorf("property %q: codec %s %s failed: %s", req.Property, codec, op, e.Error)
	}
	var ans CodecAnswer
	if err := json.Unmarshal(reply.Content, &ans); err != nil {
		return CodecAnswer{}, fmt.Errorf("property %q: codec %s %s answer %q: %w", req.Property, codec, op, reply.Content, err)
	}
	return ans, nil
}

func visitorJSON(v json.RawMessage) json.RawMessage {
	if len(v) == 0 {
		return json.RawMessage("{}")
	}
	return v
}

// errRawWithoutCodec: a driver returned Raw for a property whose visitor names no codec.
var errRawWithoutCodec = errors.New(`the driver returned raw data, but the property's visitors.configData names no "codec"`)

// decodeRead is the runtime's step after a driver's Read: a Raw reading goes to the codec the
// property's visitor names; anything else is the driver's own decoded value.
func (m *Module) decodeRead(ctx context.Context, device DeviceRef, p Property, v Value) (Value, error) {
	raw, ok := v.(Raw)
	if !ok {
		return v, nil
	}
	codec := CodecName(p.Visitor)
	if codec == "" {
		return nil, fmt.Errorf("property %q: %w", p.Name, errRawWithoutCodec)
	}
	return Codec{Host: m.host, Timeout: m.CallTimeout}.Decode(ctx, codec, device, p, raw)
}

// encodeWrite is the runtime's step before a driver's Write: with a codec named in the property's
// visitor the driver receives the codec's Raw, otherwise the value itself.
func (m *Module) encodeWrite(ctx context.Context, device DeviceRef, p Property, v Value) (Value, error) {
	codec := CodecName(p.Visitor)
	if codec == "" {
		return v, nil
	}
	return Codec{Host: m.host, Timeout: m.CallTimeout}.Encode(ctx, codec, device, p, v)
}

// CodecModule serves a codec as an sdk.Module from two functions (a builtin codec; a WASM codec is a
// guest answering the same requests). Errors fail the request; the caller's read or write fails with
// them.
type CodecModule struct {
	DecodeFunc func(req CodecRequest) (json.RawMessage, error) // → the value
	EncodeFunc func(req CodecRequest) (json.RawMessage, error) // → the raw data
	host       sdk.Host
}

// Start keeps the host for replies.
func (c *CodecModule) Start(_ context.Context, h sdk.Host) error { c.host = h; return nil }

// Stop has nothing to release.
func (c *CodecModule) Stop(context.Context) error { return nil }

// Handle answers one decode or encode request.
func (c *CodecModule) Handle(ctx context.Context, m sdk.Message) error {
	var req CodecRequest
	if err := json.Unmarshal(m.Content, &req); err != nil {
		return fmt.Errorf("codec %s request %q: %w", m.Route.Operation, m.Content, err)
	}
	var ans CodecAnswer
	var err error
	switch m.Route.Operation {
	case CodecDecode:
		ans.Value, err = c.DecodeFunc(req)
	case CodecEncode:
		if c.EncodeFunc == nil {
			return fmt.Errorf("property %q: this codec does not encode (read-only)", req.Property)
		}
		ans.Raw, err = c.EncodeFunc(req)
	default:
		return fmt.Errorf("operation %q: a codec takes decode or encode", m.Route.Operation)
	}
	if err != nil {
		return fmt.Errorf("property %q: %w", req.Property, err)
	}
	reply, err := m.Reply(c.host.Name(), ans)
	if err != nil {
		return err
	}
	return c.host.Reply(ctx, reply)
}
