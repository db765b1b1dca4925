// Package layout is the register layout of the (fictional) Acme T-100 thermometer, shared by the
// thermo-codec builtin module and its WASM build (wasm/examples/thermocodec), so both give the same
// values. Pure Go with no Kedge dependencies: it compiles for GOOS=wasip1 as well.
//
// The device holds a temperature in three 16-bit registers: a uint32 count in two words (high word
// first unless wordOrder is "little") and a check word, hi XOR lo XOR 0x5A5A. The count is in units
// of scale (default 0.1) above offset (default 0) degrees Celsius. Firmware 2 (Version 2) reports
// Kelvin: the same reading plus 273.15.
package layout

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Check is the vendor's checksum constant.
const Check = 0x5A5A

// Kelvin is what Version 2 adds to a Celsius value.
const Kelvin = 273.15

// Visitor is the codec's part of a property's visitors.configData (other keys belong to the
// transport and are ignored).
type Visitor struct {
	Scale     *float64 `json:"scale"`     // degrees per count; default 0.1, must not be 0
	Offset    float64  `json:"offset"`    // degrees at count 0
	WordOrder string   `json:"wordOrder"` // "big" (default): high word first; "little"
}

func parseVisitor(b []byte) (Visitor, float64, error) {
	var v Visitor
	if len(b) > 0 {
		if err := json.Unmarshal(b, &v); err != nil {
			return v, 0, fmt.Errorf("visitor %s: %w", b, err)
		}
	}
	scale := 0.1
	if v.Scale != nil {
		scale = *v.Scale
	}
	if scale == 0 || math.IsNaN(scale) || math.IsInf(scale, 0) {
		return v, 0, fmt.Errorf("visitor scale %v: want a finite non-zero number", scale)
	}
	switch v.WordOrder {
	case "", "big", "little":
	default:
		return v, 0, fmt.Errorf("visitor wordOrder %q: want big or little", v.WordOrder)
	}
	return v, scale, nil
}

// Decode turns raw registers (a JSON array of three words) into the temperature (a JSON number).
func Decode(raw, visitor []byte, version int) ([]byte, error) {
	v, scale, err := parseVisitor(visitor)
	if err != nil {
		return nil, err
	}
	var regs []uint16
	if err := json.Unmarshal(raw, &regs); err != nil || len(regs) != 3 {
		return nil, fmt.Errorf("raw %s: want three 16-bit registers [hi, lo, check]", raw)
	}
	hi, lo := regs[0], regs[1]
	if regs[2] != hi^lo^Check {
		return nil, fmt.Errorf("raw %s: check word %#04x, want %#04x (corrupt reading)", raw, regs[2], hi^lo^Check)
	}
	if v.WordOrder == "little" {
		hi, lo = lo, hi
	}
	n := uint32(hi)<<16 | uint32(lo)
	t := float64(n)*scale + v.Offset
	if version >= 2 {
		t += Kelvin
	}
	t = math.Round(t*1e6) / 1e6
	return strconv.AppendFloat(nil, t, 'f', -1, 64), nil
}

// Encode turns a temperature (a JSON number) into the three registers to write.
func Encode(value, visitor []byte, version int) ([]byte, error) {
	v, scale, err := parseVisitor(visitor)
	if err != nil {
		return nil, err
	}
	var t float64
	if err := json.Unmarshal(value, &t); err != nil {
		return nil, fmt.Errorf("value %s: want a number: %w", value, err)
	}
	if version >= 2 {
		t -= Kelvin
	}
	c := math.Round((t - v.Offset) / scale)
	if c < 0 || c > math.MaxUint32 {
		return nil, fmt.Errorf("value %s: outside what the registers hold (count %v)", value, c)
	}
	n := uint32(c)
	hi, lo := uint16(n>>16), uint16(n)
	check := hi ^ lo ^ Check
	if v.WordOrder == "little" {
		hi, lo = lo, hi
	}
	return fmt.Appendf(nil, "[%d,%d,%d]", hi, lo, check), nil
}

// Registers is the device side: the three registers holding count n (for simulators and tests).
func Registers(n uint32, little bool) [3]uint16 {
	hi, lo := uint16(n>>16), uint16(n)
	check := hi ^ lo ^ Check
	if little {
		hi, lo = lo, hi
	}
	return [3]uint16{hi, lo, check}
}
