package mbtcp

import (
	"math"
	"strings"
	"testing"
)

func TestValueSpecDecodesEveryTypeAndOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec ValueSpec
		regs []uint16
		want float64
	}{
		{"int16", ValueSpec{Type: Int16}, []uint16{0xFB2E}, -1234},
		{"int16 swapped bytes", ValueSpec{Type: Int16, SwapByte: true}, []uint16{0x2EFB}, -1234},
		{"uint16", ValueSpec{Type: Uint16}, []uint16{54321}, 54321},
		{"int32 ABCD", ValueSpec{Type: Int32}, []uint16{0xF8A4, 0x32EB}, -123456789},
		{"int32 CDAB", ValueSpec{Type: Int32, SwapWord: true}, []uint16{0x32EB, 0xF8A4}, -123456789},
		{"int32 BADC", ValueSpec{Type: Int32, SwapByte: true}, []uint16{0xA4F8, 0xEB32}, -123456789},
		{"int32 DCBA", ValueSpec{Type: Int32, SwapByte: true, SwapWord: true}, []uint16{0xEB32, 0xA4F8}, -123456789},
		{"uint32", ValueSpec{Type: Uint32}, []uint16{0xB2D0, 0x5E00}, 3000000000},
		{"float32 ABCD", ValueSpec{Type: Float32}, []uint16{0x4049, 0x0FD0}, float64(float32(3.14159))},
		{"float32 CDAB", ValueSpec{Type: Float32, SwapWord: true}, []uint16{0x0FD0, 0x4049}, float64(float32(3.14159))},
		{"scale and offset", ValueSpec{Type: Int16, Scale: 0.1, Offset: -40}, []uint16{652}, 652*0.1 - 40},
		// 64 bits: -1234567890123 is 0xFFFF_FEE0_8E04_FB35; pi as float64 is 0x4009_21FB_5444_2D18.
		{"int64 ABCDEFGH", ValueSpec{Type: Int64}, []uint16{0xFFFF, 0xFEE0, 0x8E04, 0xFB35}, -1234567890123},
		{"int64 words reversed", ValueSpec{Type: Int64, SwapWord: true}, []uint16{0xFB35, 0x8E04, 0xFEE0, 0xFFFF}, -1234567890123},
		{"uint64", ValueSpec{Type: Uint64}, []uint16{0x0000, 0x0123, 0x4567, 0x89AB}, 0x0123456789AB},
		{"float64", ValueSpec{Type: Float64}, []uint16{0x4009, 0x21FB, 0x5444, 0x2D18}, math.Pi},
		{"float64 bytes swapped", ValueSpec{Type: Float64, SwapByte: true}, []uint16{0x0940, 0xFB21, 0x4454, 0x182D}, math.Pi},
		{"float64 words reversed and bytes swapped", ValueSpec{Type: Float64, SwapByte: true, SwapWord: true}, []uint16{0x182D, 0x4454, 0xFB21, 0x0940}, math.Pi},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.spec.Decode(tc.regs)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("decoded %v, want %v", got, tc.want)
			}
			back, err := tc.spec.Encode(got)
			if err != nil {
				t.Fatal(err)
			}
			for i := range back {
				if back[i] != tc.regs[i] {
					t.Fatalf("encoded back %04x, want %04x", back, tc.regs)
				}
			}
		})
	}
}

func TestValueSpecRefusesWhatItCannotRepresent(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec ValueSpec
		v    float64
		want string
	}{
		{"unknown type", ValueSpec{Type: "int128"}, 1, `data type "int128" is not one of`},
		{"int16 overflow", ValueSpec{Type: Int16}, 40000, "out of range -32768..32767 for int16"},
		{"uint16 negative", ValueSpec{Type: Uint16}, -1, "out of range 0..65535 for uint16"},
		{"uint32 overflow after scale", ValueSpec{Type: Uint32, Scale: 0.001}, 5e6, "out of range 0..4.294967295e+09"},
		{"NaN", ValueSpec{Type: Float32}, math.NaN(), "cannot write NaN"},
		{"infinite scale", ValueSpec{Type: Float32, Scale: math.Inf(1)}, 1, "must be finite"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.spec.Encode(tc.v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := (ValueSpec{Type: Int32}).Decode([]uint16{1}); err == nil || !strings.Contains(err.Error(), "int32 needs 2 registers, got 1") {
		t.Fatalf("short decode: %v", err)
	}
}
