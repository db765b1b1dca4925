package mbtcp

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DataType is how a register value is interpreted.
type DataType string

// The data types a register (or a pair of registers) can hold.
const (
	Int16   DataType = "int16"
	Uint16  DataType = "uint16"
	Int32   DataType = "int32"
	Uint32  DataType = "uint32"
	Float32 DataType = "float32"
	Int64   DataType = "int64"
	Uint64  DataType = "uint64"
	Float64 DataType = "float64"
)

// Registers is how many 16-bit registers the type occupies (0 for an unknown type).
func (t DataType) Registers() int {
	switch t {
	case Int16, Uint16:
		return 1
	case Int32, Uint32, Float32:
		return 2
	case Int64, Uint64, Float64:
		return 4
	}
	return 0
}

// ValueSpec converts between registers and an engineering value:
// value = raw*Scale + Offset (Scale 0 means 1). Registers travel big-endian; SwapByte swaps the two
// bytes inside each register, SwapWord reverses the order of the registers of a 32- or 64-bit value
// (the "CDAB" and "BADC" layouts many devices use; for 64 bits the low word comes first).
type ValueSpec struct {
	Type     DataType
	Scale    float64
	Offset   float64
	SwapByte bool
	SwapWord bool
}

// Validate says what is wrong with the spec, if anything.
func (s ValueSpec) Validate() error {
	if s.Type.Registers() == 0 {
		return fmt.Errorf("mbtcp: data type %q is not one of int16, uint16, int32, uint32, float32, int64, uint64, float64", s.Type)
	}
	if math.IsNaN(s.Scale) || math.IsInf(s.Scale, 0) || math.IsNaN(s.Offset) || math.IsInf(s.Offset, 0) {
		return fmt.Errorf("mbtcp: scale %v and offset %v must be finite numbers", s.Scale, s.Offset)
	}
	return nil
}

func (s ValueSpec) scale() float64 {
	if s.Scale == 0 {
		return 1
	}
	return s.Scale
}

// order applies the swap flags in place; both swaps are their own inverse.
func (s ValueSpec) order(b []byte) {
	if s.SwapByte {
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	}
	if s.SwapWord && len(b) >= 4 {
		for i, j := 0, len(b)-2; i < j; i, j = i+2, j-2 {
			b[i], b[i+1], b[j], b[j+1] = b[j], b[j+1], b[i], b[i+1]
		}
	}
}

// Raw reads the unscaled value from registers (exactly Type.Registers() of them).
func (s ValueSpec) Raw(regs []uint16) (float64, error) {
	if err := s.Validate(); err != nil {
		return 0, err
	}
	if n := s.Type.Registers(); len(regs) != n {
		return 0, fmt.Errorf("mbtcp: %s needs %d registers, got %d", s.Type, n, len(regs))
	}
	b := make([]byte, 2*len(regs))
	for i, r := range regs {
		binary.BigEndian.PutUint16(b[2*i:], r)
	}
	s.order(b)
	switch s.Type {
	case Int16:
		return float64(int16(binary.BigEndian.Uint16(b))), nil
	case Uint16:
		return float64(binary.BigEndian.Uint16(b)), nil
	case Int32:
		return float64(int32(binary.BigEndian.Uint32(b))), nil
	case Uint32:
		return float64(binary.BigEndian.Uint32(b)), nil
	case Int64:
		return float64(int64(binary.BigEndian.Uint64(b))), nil
	case Uint64:
		return float64(binary.BigEndian.Uint64(b)), nil
	case Float64:
		return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
	default: // Float32
		return float64(math.Float32frombits(binary.BigEndian.Uint32(b))), nil
	}
}

// Decode returns raw*Scale + Offset.
func (s ValueSpec) Decode(regs []uint16) (float64, error) {
	raw, err := s.Raw(regs)
	if err != nil {
		return 0, err
	}
	return raw*s.scale() + s.Offset, nil
}

// Encode turns an engineering value into registers: raw = (v - Offset) / Scale, rounded to the
// nearest integer for integer types; a value the type cannot hold is an error.
func (s ValueSpec) Encode(v float64) ([]uint16, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("mbtcp: cannot write %v as %s", v, s.Type)
	}
	raw := (v - s.Offset) / s.scale()
	b := make([]byte, 2*s.Type.Registers())
	inRange := func(lo, hi float64) error {
		if raw < lo || raw > hi {
			return fmt.Errorf("mbtcp: value %v (raw %v) out of range %v..%v for %s", v, raw, lo, hi, s.Type)
		}
		return nil
	}
	switch s.Type {
	case Int16:
		raw = math.Round(raw)
		if err := inRange(math.MinInt16, math.MaxInt16); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint16(b, uint16(int16(raw)))
	case Uint16:
		raw = math.Round(raw)
		if err := inRange(0, math.MaxUint16); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint16(b, uint16(raw))
	case Int32:
		raw = math.Round(raw)
		if err := inRange(math.MinInt32, math.MaxInt32); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(b, uint32(int32(raw)))
	case Uint32:
		raw = math.Round(raw)
		if err := inRange(0, math.MaxUint32); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(b, uint32(raw))
	case Float32:
		if err := inRange(-math.MaxFloat32, math.MaxFloat32); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(raw)))
	case Int64:
		raw = math.Round(raw)
		// float64 holds every integer up to 2^53 exactly; 2^63 itself is out of range.
		if raw < math.MinInt64 || raw >= math.MaxInt64 {
			return nil, fmt.Errorf("mbtcp: value %v (raw %v) out of range for %s", v, raw, s.Type)
		}
		binary.BigEndian.PutUint64(b, uint64(int64(raw)))
	case Uint64:
		raw = math.Round(raw)
		if raw < 0 || raw >= math.MaxUint64 {
			return nil, fmt.Errorf("mbtcp: value %v (raw %v) out of range for %s", v, raw, s.Type)
		}
		binary.BigEndian.PutUint64(b, uint64(raw))
	case Float64:
		binary.BigEndian.PutUint64(b, math.Float64bits(raw))
	}
	s.order(b)
	regs := make([]uint16, len(b)/2)
	for i := range regs {
		regs[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	return regs, nil
}
