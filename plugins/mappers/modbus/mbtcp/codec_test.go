package mbtcp

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func mustRead(t *testing.T, fc FunctionCode, addr, qty uint16) Request {
	t.Helper()
	r, err := NewReadRequest(fc, addr, qty)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRequestEncodingMatchesTheSpecificationExamples(t *testing.T) {
	// The request examples of the Modbus Application Protocol specification, section 6.
	wmc, _ := NewWriteMultipleCoils(19, []bool{true, false, true, true, false, false, true, true, true, false})
	wmr, _ := NewWriteMultipleRegisters(1, []uint16{0x000A, 0x0102})
	for _, tc := range []struct {
		name string
		req  Request
		want []byte
	}{
		{"read coils 20-38", mustRead(t, ReadCoils, 19, 19), []byte{0x01, 0x00, 0x13, 0x00, 0x13}},
		{"read discrete inputs 197-218", mustRead(t, ReadDiscreteInputs, 196, 22), []byte{0x02, 0x00, 0xC4, 0x00, 0x16}},
		{"read holding registers 108-110", mustRead(t, ReadHoldingRegisters, 107, 3), []byte{0x03, 0x00, 0x6B, 0x00, 0x03}},
		{"read input register 9", mustRead(t, ReadInputRegisters, 8, 1), []byte{0x04, 0x00, 0x08, 0x00, 0x01}},
		{"write coil 173 on", NewWriteSingleCoil(172, true), []byte{0x05, 0x00, 0xAC, 0xFF, 0x00}},
		{"write coil off", NewWriteSingleCoil(172, false), []byte{0x05, 0x00, 0xAC, 0x00, 0x00}},
		{"write register 2", NewWriteSingleRegister(1, 3), []byte{0x06, 0x00, 0x01, 0x00, 0x03}},
		{"write 10 coils from 20", wmc, []byte{0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01}},
		{"write 2 registers from 2", wmr, []byte{0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.req.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("PDU % x, want % x", got, tc.want)
			}
		})
	}
}

func TestRequestBuildersRefuseOutOfRangeQuantities(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"zero coils", func() error { _, err := NewReadRequest(ReadCoils, 0, 0); return err }, "quantity 0 out of range 1..2000"},
		{"2001 coils", func() error { _, err := NewReadRequest(ReadCoils, 0, 2001); return err }, "quantity 2001 out of range 1..2000"},
		{"126 registers", func() error { _, err := NewReadRequest(ReadHoldingRegisters, 0, 126); return err }, "quantity 126 out of range 1..125"},
		{"past the last address", func() error { _, err := NewReadRequest(ReadInputRegisters, 65535, 2); return err }, "runs past address 65535"},
		{"write is not a read", func() error { _, err := NewReadRequest(WriteSingleCoil, 0, 1); return err }, "not a read function"},
		{"124 registers written", func() error { _, err := NewWriteMultipleRegisters(0, make([]uint16, 124)); return err }, "quantity 124 out of range 1..123"},
		{"no coils written", func() error { _, err := NewWriteMultipleCoils(0, nil); return err }, "quantity 0 out of range 1..1968"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestResponseDecodingAcceptsValidResponses(t *testing.T) {
	coils := mustRead(t, ReadCoils, 19, 19)
	resp, err := DecodeResponsePDU(coils, []byte{0x01, 0x03, 0xCD, 0x6B, 0x05})
	if err != nil {
		t.Fatal(err)
	}
	want := "1011001111010110101"
	var got strings.Builder
	for _, b := range resp.Bits {
		if b {
			got.WriteByte('1')
		} else {
			got.WriteByte('0')
		}
	}
	if got.String() != want {
		t.Fatalf("coils %s, want %s", got.String(), want)
	}
	regs := mustRead(t, ReadHoldingRegisters, 107, 3)
	resp, err = DecodeResponsePDU(regs, []byte{0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Registers[0] != 555 || resp.Registers[1] != 0 || resp.Registers[2] != 100 {
		t.Fatalf("registers %v, want [555 0 100]", resp.Registers)
	}
	if _, err := DecodeResponsePDU(NewWriteSingleCoil(172, true), []byte{0x05, 0x00, 0xAC, 0xFF, 0x00}); err != nil {
		t.Fatal(err)
	}
	wmr, _ := NewWriteMultipleRegisters(1, []uint16{10, 258})
	if _, err := DecodeResponsePDU(wmr, []byte{0x10, 0x00, 0x01, 0x00, 0x02}); err != nil {
		t.Fatal(err)
	}
}

func TestResponseDecodingNamesWhatIsWrong(t *testing.T) {
	regs := mustRead(t, ReadHoldingRegisters, 107, 3)
	coils := mustRead(t, ReadCoils, 0, 10)
	wsr := NewWriteSingleRegister(1, 3)
	wmc, _ := NewWriteMultipleCoils(19, make([]bool, 10))
	for _, tc := range []struct {
		name string
		req  Request
		pdu  []byte
		want string
	}{
		{"empty", regs, nil, "empty response PDU"},
		{"other function", regs, []byte{0x04, 0x06, 0, 0, 0, 0, 0, 0}, "does not echo the request's read holding registers"},
		{"byte count for other quantity", regs, []byte{0x03, 0x04, 0, 0, 0, 0}, "byte count 4, want 6"},
		{"truncated data", regs, []byte{0x03, 0x06, 0, 0, 0}, "has 3 data bytes, byte count says 6"},
		{"trailing data", regs, []byte{0x03, 0x06, 0, 0, 0, 0, 0, 0, 0}, "has 7 data bytes"},
		{"no byte count", coils, []byte{0x01}, "no byte count"},
		{"coil byte count", coils, []byte{0x01, 0x01, 0xFF}, "byte count 1, want 2"},
		{"write echo address", wsr, []byte{0x06, 0x00, 0x02, 0x00, 0x03}, "echoes address 2, request was 1"},
		{"write echo value", wsr, []byte{0x06, 0x00, 0x01, 0x00, 0x04}, "echoes value 4, request was 3"},
		{"write echo quantity", wmc, []byte{0x0F, 0x00, 0x13, 0x00, 0x09}, "echoes quantity 9, request was 10"},
		{"write response length", wsr, []byte{0x06, 0x00, 0x01, 0x00}, "has 4 bytes, want 5"},
		{"exception too long", regs, []byte{0x83, 0x02, 0x00}, "exception response for read holding registers (0x03) has 3 bytes, want 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeResponsePDU(tc.req, tc.pdu)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestExceptionResponsesAreTypedErrors(t *testing.T) {
	regs := mustRead(t, ReadHoldingRegisters, 107, 3)
	for _, code := range []ExceptionCode{IllegalFunction, IllegalDataAddress, IllegalDataValue, ServerDeviceFailure, ServerDeviceBusy} {
		t.Run(code.String(), func(t *testing.T) {
			_, err := DecodeResponsePDU(regs, []byte{0x83, byte(code)})
			var exc *ExceptionError
			if !errors.As(err, &exc) || exc.Code != code || exc.Function != ReadHoldingRegisters {
				t.Fatalf("error %v, want *ExceptionError %s", err, code)
			}
			if !errors.Is(err, code) {
				t.Fatalf("errors.Is(%v, %v) false", err, code)
			}
			if !strings.Contains(err.Error(), code.String()) {
				t.Fatalf("error %q does not name %q", err, code.String())
			}
		})
	}
}

func TestFrameDecodingChecksTheMBAPHeader(t *testing.T) {
	req := mustRead(t, ReadHoldingRegisters, 0, 1)
	good := EncodeFrame(7, 1, []byte{0x03, 0x02, 0x12, 0x34})
	if resp, err := DecodeResponseFrame(req, 7, 1, good); err != nil || resp.Registers[0] != 0x1234 {
		t.Fatalf("good frame: %v %v", resp, err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"short header", good[:5], "MBAP header has 5 bytes"},
		{"protocol id", mod(func(b []byte) []byte { b[3] = 1; return b }), "protocol id 1, want 0"},
		{"length zero", mod(func(b []byte) []byte { b[5] = 0; return b }), "MBAP length 0 out of range"},
		{"length too big", mod(func(b []byte) []byte { b[4] = 1; return b }), "out of range 2..254"},
		{"length disagrees", mod(func(b []byte) []byte { b[5] = 4; return b }), "MBAP length 4 but 5 bytes follow"},
		{"transaction id", mod(func(b []byte) []byte { b[1] = 8; return b }), "transaction id 8, request was 7"},
		{"unit id", mod(func(b []byte) []byte { b[6] = 2; return b }), "unit id 2, request was 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeResponseFrame(req, 7, 1, tc.frame)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
