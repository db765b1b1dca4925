package mbtcp

import (
	"encoding/binary"
	"errors"
	"testing"
)

var fuzzFunctions = []FunctionCode{ReadCoils, ReadDiscreteInputs, ReadHoldingRegisters, ReadInputRegisters,
	WriteSingleCoil, WriteSingleRegister, WriteMultipleCoils, WriteMultipleRegisters}

// fuzzRequest makes a valid request of every kind from the fuzzer's numbers.
func fuzzRequest(sel byte, addr, qty uint16) Request {
	fc := fuzzFunctions[int(sel)%len(fuzzFunctions)]
	switch fc {
	case WriteSingleCoil:
		return NewWriteSingleCoil(addr, qty&1 == 1)
	case WriteSingleRegister:
		return NewWriteSingleRegister(addr, qty)
	case WriteMultipleCoils:
		r, err := NewWriteMultipleCoils(addr%1000, make([]bool, 1+int(qty)%MaxWriteBits))
		if err != nil {
			panic(err)
		}
		return r
	case WriteMultipleRegisters:
		r, err := NewWriteMultipleRegisters(addr%1000, make([]uint16, 1+int(qty)%MaxWriteRegisters))
		if err != nil {
			panic(err)
		}
		return r
	}
	max := uint16(MaxReadRegisters)
	if fc == ReadCoils || fc == ReadDiscreteInputs {
		max = MaxReadBits
	}
	r, err := NewReadRequest(fc, addr%1000, 1+qty%max)
	if err != nil {
		panic(err)
	}
	return r
}

// FuzzDecodeResponseFrame feeds arbitrary bytes as the answer to a valid request: the decoder must
// never panic, and whatever it accepts must be consistent with the request.
func FuzzDecodeResponseFrame(f *testing.F) {
	f.Add(byte(2), uint16(0), uint16(0), EncodeFrame(1, 1, []byte{0x03, 0x02, 0x12, 0x34}))
	f.Add(byte(0), uint16(0), uint16(9), EncodeFrame(1, 1, []byte{0x01, 0x02, 0xCD, 0x01}))
	f.Add(byte(2), uint16(0), uint16(0), EncodeFrame(1, 1, []byte{0x83, 0x02}))
	f.Add(byte(5), uint16(1), uint16(3), EncodeFrame(1, 1, []byte{0x06, 0x00, 0x01, 0x00, 0x03}))
	f.Add(byte(7), uint16(1), uint16(1), EncodeFrame(1, 1, []byte{0x10, 0x00, 0x01, 0x00, 0x02}))
	f.Add(byte(2), uint16(0), uint16(0), []byte{0, 1, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, sel byte, addr, qty uint16, frame []byte) {
		req := fuzzRequest(sel, addr, qty)
		resp, err := DecodeResponseFrame(req, 1, 1, frame)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			var exc *ExceptionError
			if errors.As(err, &exc) && (len(frame) != HeaderLen+2 || frame[HeaderLen] != byte(req.Function)|0x80) {
				t.Fatalf("exception %v from a frame that is not an exception response: % x", err, frame)
			}
			return
		}
		if resp.Function != req.Function {
			t.Fatalf("accepted function %s for a %s request", resp.Function, req.Function)
		}
		if binary.BigEndian.Uint16(frame[4:]) != uint16(len(frame)-6) {
			t.Fatalf("accepted a frame whose MBAP length disagrees with its size: % x", frame)
		}
		switch req.Function {
		case ReadCoils, ReadDiscreteInputs:
			if len(resp.Bits) != int(req.Quantity) {
				t.Fatalf("%d bits for a request of %d", len(resp.Bits), req.Quantity)
			}
		case ReadHoldingRegisters, ReadInputRegisters:
			if len(resp.Registers) != int(req.Quantity) {
				t.Fatalf("%d registers for a request of %d", len(resp.Registers), req.Quantity)
			}
		default:
			if resp.Address != req.Address {
				t.Fatalf("accepted echo address %d for %d", resp.Address, req.Address)
			}
		}
	})
}
