package mapper

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestRawRoundTripsRegistersAndLines(t *testing.T) {
	r := RawRegisters(0, 1, 65535)
	if string(r) != "[0,1,65535]" {
		t.Fatalf("RawRegisters = %s", r)
	}
	if regs, err := r.Registers(); err != nil || !slices.Equal(regs, []uint16{0, 1, 65535}) {
		t.Fatalf("Registers = %v, %v", regs, err)
	}
	if _, err := Raw(`[70000]`).Registers(); err == nil {
		t.Fatal("a word above 65535 was taken as a register")
	}
	l := RawLine(`T="21.5"`)
	if s, err := l.Line(); err != nil || s != `T="21.5"` {
		t.Fatalf("Line = %q, %v", s, err)
	}
	if _, err := r.Line(); err == nil {
		t.Fatal("registers were taken as a line")
	}
}

func TestCodecNameComesFromTheVisitor(t *testing.T) {
	for _, tc := range []struct{ visitor, want string }{
		{`{"codec":"thermo-codec","register":4}`, "thermo-codec"},
		{`{"register":4}`, ""},
		{``, ""},
		{`"codec"`, ""},
		{`{"codec":7}`, ""},
	} {
		if got := CodecName(json.RawMessage(tc.visitor)); got != tc.want {
			t.Errorf("CodecName(%s) = %q, want %q", tc.visitor, got, tc.want)
		}
	}
}

func TestDriverValuesPassAndRawNeedsACodec(t *testing.T) {
	m := New("x", nil)
	p := Property{Name: "temperature", Type: "FLOAT", Visitor: json.RawMessage(`{"register":4}`)}
	if v, err := m.decodeRead(context.Background(), DeviceRef{}, p, 21.5); err != nil || v != 21.5 {
		t.Fatalf("a decoded value changed: %v, %v", v, err)
	}
	if _, err := m.decodeRead(context.Background(), DeviceRef{}, p, RawRegisters(1)); !errors.Is(err, errRawWithoutCodec) {
		t.Fatalf("raw without a codec: %v", err)
	}
	if v, err := m.encodeWrite(context.Background(), DeviceRef{}, p, 3.0); err != nil || v != 3.0 {
		t.Fatalf("a value for a property without codec changed: %v, %v", v, err)
	}
}
