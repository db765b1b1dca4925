// Command thermocodec is a Kedge WASM codec: the register layout of the Acme T-100 thermometer (see
// plugins/mappers/codecs/thermo/layout) behind the codec requests of the mapper SDK, so a vendor
// ships it as one .wasm file with its manifest and the host hot-swaps it like any module.
//
// In:  operation "decode", content {"property": ..., "raw": [hi, lo, check], "visitor": {...}}
//
//	operation "encode", content {"property": ..., "value": 21.5, "visitor": {...}}
//
// Out: a reply {"value": 21.5} or {"raw": [hi, lo, check]}; a bad request fails the call (the
// mapper's read or write fails with the reason).
//
// Built as is it is firmware 1 (degrees Celsius, version 1.0.0); with -tags thermocodec_v2 and
// manifest-v2.yaml it is firmware 2 (Kelvin, version 2.0.0).
package main

import (
	"encoding/json"
	"fmt"

	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo/layout"
	"github.com/kedge-io/kedge/wasm/guest"
)

type request struct {
	Property string          `json:"property"`
	Raw      json.RawMessage `json:"raw"`
	Value    json.RawMessage `json:"value"`
	Visitor  json.RawMessage `json:"visitor"`
}

type codec struct{ out []byte }

// Init takes no settings.
func (c *codec) Init(settings []byte) error {
	var s map[string]json.RawMessage
	if err := json.Unmarshal(settings, &s); err != nil {
		return fmt.Errorf("thermocodec settings: %w", err)
	}
	for k := range s {
		return fmt.Errorf("thermocodec settings: unknown key %q (it takes none)", k)
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
		if fault != nil {
			fault(req.Raw, req.Visitor)
		}
		key = `{"value":`
		b, err = layout.Decode(req.Raw, req.Visitor, version)
	case "encode":
		key = `{"raw":`
		b, err = layout.Encode(req.Value, req.Visitor, version)
	default:
		return fmt.Errorf("operation %q: a codec takes decode or encode", m.Route.Operation)
	}
	if err != nil {
		return fmt.Errorf("property %q: %w", req.Property, err)
	}
	c.out = append(append(append(c.out[:0], key...), b...), '}')
	return guest.Reply(m.Reply(c.out))
}

// fault is set by the thermocodec_faults test build only.
var fault func(raw, visitor []byte)

func init() { guest.Register(&codec{}) }

func main() {}
