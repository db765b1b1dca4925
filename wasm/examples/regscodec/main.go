// Command regscodec is a Kedge WASM codec for plain register values (package
// plugins/mappers/codecs/regs/words): raw 16-bit words ↔ a number or boolean, the data type from the
// visitor's "dataType" or, without one, from the model property's type that the mapper SDK sends
// with every request — the modbus mapper's own rules, so a KubeEdge-shaped visitor without dataType
// decodes the same on the codec path as on the driver's.
//
// In:  operation "decode", content {"property", "type": "FLOAT", "raw": [w1, w2], "visitor": {...}}
//
//	operation "encode", content {"property", "type": "FLOAT", "value": 21.5, "visitor": {...}}
//
// Out: a reply {"value": 21.5} or {"raw": [w1, w2]}; a bad request fails the call with the reason.
package main

import (
	"encoding/json"
	"fmt"

	"github.com/kedge-io/kedge/plugins/mappers/codecs/regs/words"
	"github.com/kedge-io/kedge/wasm/guest"
)

type request struct {
	Property string          `json:"property"`
	Type     string          `json:"type"`
	Raw      json.RawMessage `json:"raw"`
	Value    json.RawMessage `json:"value"`
	Visitor  json.RawMessage `json:"visitor"`
}

type codec struct{ out []byte }

// Init takes no settings.
func (c *codec) Init(settings []byte) error {
	var s map[string]json.RawMessage
	if err := json.Unmarshal(settings, &s); err != nil {
		return fmt.Errorf("regscodec settings: %w", err)
	}
	for k := range s {
		return fmt.Errorf("regscodec settings: unknown key %q (it takes none)", k)
	}
	return nil
}

func (c *codec) Handle(m guest.Message) error {
	var req request
	if err := json.Unmarshal(m.Content, &req); err != nil {
		return fmt.Errorf("codec request: %w", err)
	}
	var key string
	var b []byte
	var err error
	switch m.Route.Operation {
	case "decode":
		key = `{"value":`
		b, err = words.Decode(req.Raw, req.Visitor, req.Type)
	case "encode":
		key = `{"raw":`
		b, err = words.Encode(req.Value, req.Visitor, req.Type)
	default:
		return fmt.Errorf("operation %q: a codec takes decode or encode", m.Route.Operation)
	}
	if err != nil {
		return fmt.Errorf("property %q (model type %s): %w", req.Property, req.Type, err)
	}
	c.out = append(append(append(c.out[:0], key...), b...), '}')
	return guest.Reply(m.Reply(c.out))
}

func init() { guest.Register(&codec{}) }

func main() {}
