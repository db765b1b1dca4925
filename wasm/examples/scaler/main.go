// Command scaler is an example Kedge WASM module, a taste of a protocol driver: it turns raw
// register values into engineering values (value = raw*scale + offset), keeps a per-register count
// and the last reading in its store, forwards each reading to another module, and answers sync
// requests with the reading.
//
// In:  operation "update", resource "device/<id>/register/<name>", content {"raw": <number>}
// Out: operation "update", resource "device/<id>/reading/<name>",
//
//	content {"value": <number>, "unit": "<unit>", "raw": <number>, "count": <n>}
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/kedge-io/kedge/wasm/guest"
)

// config is the module's block in the host config, minus the host's own keys.
type config struct {
	Scale  float64 `json:"scale"`  // multiplier applied to the raw value (default 1)
	Offset float64 `json:"offset"` // added after scaling
	Unit   string  `json:"unit"`   // engineering unit reported with each value
	To     string  `json:"to"`     // module that receives each reading; empty: none
}

type reading struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit,omitempty"`
	Raw   float64 `json:"raw"`
	Count int     `json:"count"`
}

type scaler struct{ cfg config }

func (s *scaler) Init(raw []byte) error {
	s.cfg = config{Scale: 1}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s.cfg); err != nil {
		return fmt.Errorf("scaler settings: %w", err)
	}
	return nil
}

func (s *scaler) Handle(m guest.Message) error {
	if m.Route.Operation != "update" {
		return fmt.Errorf("operation %q: scaler only takes update", m.Route.Operation)
	}
	device, register, ok := parseRegister(m.Route.Resource)
	if !ok {
		return fmt.Errorf("resource %q: want device/<id>/register/<name>", m.Route.Resource)
	}
	var in struct {
		Raw *float64 `json:"raw"`
	}
	if err := json.Unmarshal(m.Content, &in); err != nil || in.Raw == nil {
		return fmt.Errorf("content %s: want {\"raw\": <number>}", m.Content)
	}
	r := reading{Value: *in.Raw*s.cfg.Scale + s.cfg.Offset, Unit: s.cfg.Unit, Raw: *in.Raw}

	// The count lives in the store, so it survives a restart of the instance.
	key := guest.Key{Type: "reading", Namespace: device, Name: register}
	var last reading
	switch b, err := guest.StoreGet(key); {
	case err == nil:
		_ = json.Unmarshal(b, &last)
	case !errors.Is(err, guest.ErrNotFound):
		return fmt.Errorf("read last reading: %w", err)
	}
	r.Count = last.Count + 1
	body, _ := json.Marshal(r) // plain fields: cannot fail
	if err := guest.StorePut(key, body); err != nil {
		return fmt.Errorf("store reading: %w", err)
	}

	if s.cfg.To != "" {
		out := guest.Message{
			Route:   guest.Route{Operation: "update", Resource: "device/" + device + "/reading/" + register},
			Content: body,
		}
		if err := guest.Send(s.cfg.To, out); err != nil {
			return fmt.Errorf("forward reading to %s: %w", s.cfg.To, err)
		}
	}
	if m.Header.Sync {
		return guest.Reply(m.Reply(body))
	}
	return nil
}

func parseRegister(resource string) (device, register string, ok bool) {
	parts := strings.Split(resource, "/")
	if len(parts) != 4 || parts[0] != "device" || parts[2] != "register" || parts[1] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[1], parts[3], true
}

func init() { guest.Register(&scaler{}) }

func main() {} // never called: a reactor module runs its init functions, then waits for calls
