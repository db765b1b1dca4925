// Package words is the register codec's logic (regs-codec, WASM build wasm/examples/regscodec):
// 16-bit register words ↔ a property value, the data type given by the visitor's "dataType" or,
// without one, by the model property's type — the same rules as the modbus mapper's own decoding
// (mbtcp.TypeFromModel), so a KubeEdge-shaped visitor without dataType reads a FLOAT as a float32 on
// the codec path too. Pure Go: it compiles for GOOS=wasip1.
package words

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// Visitor is the codec's part of a property's visitors.configData (other keys — "codec", the
// transport's nested "modbus" object except its "limit" — belong to others and are ignored).
type Visitor struct {
	DataType       string   `json:"dataType"`    // int16 ... float64; empty: from the model type
	Limit          int      `json:"limit"`       // registers, for a write without dataType; default the transport's modbus.limit
	Scale          *float64 `json:"scale"`       // value = raw*scale + valueOffset (default 1, 0 refused)
	ValueOffset    float64  `json:"valueOffset"` //
	SwapByte       bool     `json:"swapByte"`
	SwapWord       bool     `json:"swapWord"`
	IsSwap         bool     `json:"isSwap"`         // KubeEdge's spelling of swapByte
	IsRegisterSwap bool     `json:"isRegisterSwap"` // KubeEdge's spelling of swapWord
	Modbus         struct {
		Limit int `json:"limit"`
	} `json:"modbus"`
}

// spec works out the value spec for modelType and n registers (0: not known, a write).
func spec(visitor []byte, modelType string, n int) (mbtcp.ValueSpec, error) {
	var v Visitor
	if len(visitor) > 0 {
		if err := json.Unmarshal(visitor, &v); err != nil {
			return mbtcp.ValueSpec{}, fmt.Errorf("visitor %s: %w", visitor, err)
		}
	}
	mt := strings.ToUpper(modelType)
	switch mt {
	case "STRING", "BYTES", "STREAM":
		return mbtcp.ValueSpec{}, fmt.Errorf("model type %s: regs-codec turns registers into numbers and booleans only", mt)
	}
	dt := mbtcp.DataType(strings.ToLower(v.DataType))
	if dt == "" {
		limit := n
		if limit == 0 {
			limit = v.Limit
		}
		if limit == 0 {
			limit = v.Modbus.Limit
		}
		t, err := mbtcp.TypeFromModel(mt, limit)
		if err != nil {
			return mbtcp.ValueSpec{}, fmt.Errorf("no dataType: %w", err)
		}
		dt = t
	}
	s := mbtcp.ValueSpec{Type: dt, Offset: v.ValueOffset, SwapByte: v.SwapByte || v.IsSwap, SwapWord: v.SwapWord || v.IsRegisterSwap}
	if v.Scale != nil {
		if *v.Scale == 0 {
			return s, fmt.Errorf("visitor scale 0 would make every value 0")
		}
		s.Scale = *v.Scale
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	if n > 0 && n != dt.Registers() {
		return s, fmt.Errorf("%d registers read, but %s takes %d (model type %s, dataType %q)", n, dt, dt.Registers(), cmpOr(mt, "none"), v.DataType)
	}
	return s, nil
}

func cmpOr(a, b string) string {
	if a == "" {
		return b
	}
	return a
}

// Decode turns raw registers (a JSON array of words) into the property's value as JSON: a number,
// or true/false for BOOLEAN (non-zero is true).
func Decode(raw, visitor []byte, modelType string) ([]byte, error) {
	var regs []uint16
	if err := json.Unmarshal(raw, &regs); err != nil || len(regs) == 0 {
		return nil, fmt.Errorf("raw %s: want a JSON array of 16-bit registers", raw)
	}
	s, err := spec(visitor, modelType, len(regs))
	if err != nil {
		return nil, err
	}
	f, err := s.Decode(regs)
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(modelType, "BOOLEAN") {
		return strconv.AppendBool(nil, f != 0), nil
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("raw %s decodes to %v as %s: not a value", raw, f, s.Type)
	}
	return strconv.AppendFloat(nil, f, 'f', -1, 64), nil
}

// Encode turns a desired value (a JSON number, or a bool for BOOLEAN) into the registers to write.
func Encode(value, visitor []byte, modelType string) ([]byte, error) {
	s, err := spec(visitor, modelType, 0)
	if err != nil {
		return nil, err
	}
	var f float64
	var b bool
	switch {
	case json.Unmarshal(value, &f) == nil:
	case json.Unmarshal(value, &b) == nil:
		if b {
			f = 1
		}
	default:
		return nil, fmt.Errorf("value %s: want a number or true/false", value)
	}
	regs, err := s.Encode(f)
	if err != nil {
		return nil, err
	}
	out := []byte{'['}
	for i, r := range regs {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendUint(out, uint64(r), 10)
	}
	return append(out, ']'), nil
}
