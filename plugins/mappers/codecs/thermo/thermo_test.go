package thermo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo"
	"github.com/kedge-io/kedge/sdk/mapper"
)

// The same requests to the builtin codec and to its WASM build (both running in one manager, asked
// through the router like a mapper asks) give the same values and the same refusals, and the WASM v2
// build differs only by reporting Kelvin.
func TestBuiltinAndWASMCodecsDecodeAndEncodeAlike(t *testing.T) {
	r := newRig(t, map[string]any{}, map[string]map[string]any{
		"thermo-wasm": wasmBlock(guests.v1), "thermo-wasm-v2": wasmBlock(guests.v2)})
	codec := mapper.Codec{Host: r.caller, Timeout: 5 * time.Second}
	dev := mapper.DeviceRef{Namespace: "default", Name: "t-1"}
	prop := func(visitor string) mapper.Property {
		return mapper.Property{Name: "temperature", Type: "FLOAT", Visitor: json.RawMessage(visitor)}
	}
	tests := []struct {
		name    string
		visitor string
		raw     mapper.Raw
		want    string // value, or "error: <part of the message>"
	}{
		{"count in tenths of a degree", `{"codec":"x"}`, mapper.RawRegisters(0, 215, 215^0x5A5A), "21.5"},
		{"high word first", `{"scale":0.01}`, mapper.RawRegisters(1, 0, 1^0x5A5A), "655.36"},
		{"little word order", `{"wordOrder":"little"}`, mapper.RawRegisters(215, 0, 215^0x5A5A), "21.5"},
		{"offset below zero", `{"scale":0.5,"offset":-40}`, mapper.RawRegisters(0, 20, 20^0x5A5A), "-30"},
		{"corrupt check word", `{}`, mapper.RawRegisters(0, 215, 0), "error: check word"},
		{"two registers only", `{}`, mapper.RawRegisters(0, 215), "error: want three 16-bit registers"},
		{"a line instead of registers", `{}`, mapper.RawLine("T=21.5"), "error: want three 16-bit registers"},
		{"zero scale", `{"scale":0}`, mapper.RawRegisters(0, 1, 1^0x5A5A), "error: scale 0"},
		{"unknown word order", `{"wordOrder":"middle"}`, mapper.RawRegisters(0, 1, 1^0x5A5A), "error: wordOrder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range []string{thermo.Name, "thermo-wasm"} {
				v, err := codec.Decode(context.Background(), name, dev, prop(tt.visitor), tt.raw)
				got := fmt.Sprint(v)
				if err != nil {
					got = "error: " + err.Error()
				}
				if !strings.HasPrefix(tt.want, "error: ") && got != tt.want || strings.HasPrefix(tt.want, "error: ") && !strings.Contains(got, strings.TrimPrefix(tt.want, "error: ")) {
					t.Errorf("%s decoded %s to %q, want %q", name, tt.raw, got, tt.want)
				}
			}
		})
	}
	t.Run("v2 reports Kelvin", func(t *testing.T) {
		v, err := codec.Decode(context.Background(), "thermo-wasm-v2", dev, prop(`{}`), mapper.RawRegisters(0, 215, 215^0x5A5A))
		if err != nil || v != "294.65" {
			t.Fatalf("v2 decoded 21.5 °C to %v (%v), want 294.65", v, err)
		}
	})
	t.Run("encode is the inverse of decode", func(t *testing.T) {
		for _, name := range []string{thermo.Name, "thermo-wasm"} {
			raw, err := codec.Encode(context.Background(), name, dev, prop(`{"wordOrder":"little"}`), 6553.7)
			if err != nil {
				t.Fatalf("%s encode: %v", name, err)
			}
			if want := fmt.Sprintf("[1,1,%d]", 1^1^0x5A5A); string(raw) != want {
				t.Fatalf("%s encoded 6553.7 to %s, want %s", name, raw, want)
			}
			v, err := codec.Decode(context.Background(), name, dev, prop(`{"wordOrder":"little"}`), raw)
			if err != nil || v != "6553.7" {
				t.Fatalf("%s decoded its own %s to %v (%v)", name, raw, v, err)
			}
		}
	})
	t.Run("a negative count cannot be written", func(t *testing.T) {
		for _, name := range []string{thermo.Name, "thermo-wasm"} {
			if _, err := codec.Encode(context.Background(), name, dev, prop(`{}`), -1.0); err == nil || !strings.Contains(err.Error(), "outside what the registers hold") {
				t.Fatalf("%s encoded -1: %v", name, err)
			}
		}
	})
}
