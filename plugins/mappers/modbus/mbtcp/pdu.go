// Package mbtcp is a Modbus TCP client written from the Modbus Application Protocol (v1.1b3) and
// Modbus Messaging on TCP/IP (v1.0b) specifications: the PDU codec for function codes 1–6, 15 and
// 16, the MBAP framing, a client with connection reuse, and register value conversion.
package mbtcp

import (
	"encoding/binary"
	"fmt"
)

// FunctionCode is a Modbus public function code.
type FunctionCode byte

// The function codes this package speaks.
const (
	ReadCoils              FunctionCode = 0x01
	ReadDiscreteInputs     FunctionCode = 0x02
	ReadHoldingRegisters   FunctionCode = 0x03
	ReadInputRegisters     FunctionCode = 0x04
	WriteSingleCoil        FunctionCode = 0x05
	WriteSingleRegister    FunctionCode = 0x06
	WriteMultipleCoils     FunctionCode = 0x0F
	WriteMultipleRegisters FunctionCode = 0x10
)

func (f FunctionCode) String() string {
	switch f {
	case ReadCoils:
		return "read coils (0x01)"
	case ReadDiscreteInputs:
		return "read discrete inputs (0x02)"
	case ReadHoldingRegisters:
		return "read holding registers (0x03)"
	case ReadInputRegisters:
		return "read input registers (0x04)"
	case WriteSingleCoil:
		return "write single coil (0x05)"
	case WriteSingleRegister:
		return "write single register (0x06)"
	case WriteMultipleCoils:
		return "write multiple coils (0x0f)"
	case WriteMultipleRegisters:
		return "write multiple registers (0x10)"
	}
	return fmt.Sprintf("function 0x%02x", byte(f))
}

// Quantity limits from the specification.
const (
	MaxReadBits       = 2000 // FC 1, 2
	MaxReadRegisters  = 125  // FC 3, 4
	MaxWriteBits      = 1968 // FC 15
	MaxWriteRegisters = 123  // FC 16
	MaxPDU            = 253  // a PDU never exceeds 253 bytes
)

// Request is one Modbus request PDU, kept structured so the response can be checked against it.
type Request struct {
	Function FunctionCode
	Address  uint16
	Quantity uint16 // reads and multiple writes: how many bits/registers; single writes: 1
	Value    uint16 // single writes: the coil value (0xFF00/0x0000) or the register value
	Data     []byte // multiple writes: packed coils or big-endian registers
}

// Response is a decoded, validated response.
type Response struct {
	Function  FunctionCode
	Bits      []bool   // FC 1, 2: exactly Request.Quantity values
	Registers []uint16 // FC 3, 4: exactly Request.Quantity values
	Address   uint16   // FC 5, 6, 15, 16: the echoed address
	Value     uint16   // FC 5, 6: the echoed value; FC 15, 16: the echoed quantity
}

// NewReadRequest builds a read of qty items of kind fc (1–4) starting at addr.
func NewReadRequest(fc FunctionCode, addr, qty uint16) (Request, error) {
	var max uint16
	switch fc {
	case ReadCoils, ReadDiscreteInputs:
		max = MaxReadBits
	case ReadHoldingRegisters, ReadInputRegisters:
		max = MaxReadRegisters
	default:
		return Request{}, fmt.Errorf("mbtcp: %s is not a read function", fc)
	}
	if qty < 1 || qty > max {
		return Request{}, fmt.Errorf("mbtcp: %s quantity %d out of range 1..%d", fc, qty, max)
	}
	if uint32(addr)+uint32(qty) > 0x10000 {
		return Request{}, fmt.Errorf("mbtcp: %s of %d items at address %d runs past address 65535", fc, qty, addr)
	}
	return Request{Function: fc, Address: addr, Quantity: qty}, nil
}

// NewWriteSingleCoil builds FC 5.
func NewWriteSingleCoil(addr uint16, on bool) Request {
	v := uint16(0x0000)
	if on {
		v = 0xFF00
	}
	return Request{Function: WriteSingleCoil, Address: addr, Quantity: 1, Value: v}
}

// NewWriteSingleRegister builds FC 6.
func NewWriteSingleRegister(addr, value uint16) Request {
	return Request{Function: WriteSingleRegister, Address: addr, Quantity: 1, Value: value}
}

// NewWriteMultipleCoils builds FC 15.
func NewWriteMultipleCoils(addr uint16, values []bool) (Request, error) {
	n := len(values)
	if n < 1 || n > MaxWriteBits {
		return Request{}, fmt.Errorf("mbtcp: %s quantity %d out of range 1..%d", WriteMultipleCoils, n, MaxWriteBits)
	}
	if int(addr)+n > 0x10000 {
		return Request{}, fmt.Errorf("mbtcp: %s of %d coils at address %d runs past address 65535", WriteMultipleCoils, n, addr)
	}
	return Request{Function: WriteMultipleCoils, Address: addr, Quantity: uint16(n), Data: PackBits(values)}, nil
}

// NewWriteMultipleRegisters builds FC 16.
func NewWriteMultipleRegisters(addr uint16, values []uint16) (Request, error) {
	n := len(values)
	if n < 1 || n > MaxWriteRegisters {
		return Request{}, fmt.Errorf("mbtcp: %s quantity %d out of range 1..%d", WriteMultipleRegisters, n, MaxWriteRegisters)
	}
	if int(addr)+n > 0x10000 {
		return Request{}, fmt.Errorf("mbtcp: %s of %d registers at address %d runs past address 65535", WriteMultipleRegisters, n, addr)
	}
	data := make([]byte, 2*n)
	for i, v := range values {
		binary.BigEndian.PutUint16(data[2*i:], v)
	}
	return Request{Function: WriteMultipleRegisters, Address: addr, Quantity: uint16(n), Data: data}, nil
}

// PackBits packs bits LSB-first into bytes, as coils travel on the wire.
func PackBits(values []bool) []byte {
	out := make([]byte, (len(values)+7)/8)
	for i, v := range values {
		if v {
			out[i/8] |= 1 << (i % 8)
		}
	}
	return out
}

// Encode returns the request PDU (function code + data).
func (r Request) Encode() ([]byte, error) {
	switch r.Function {
	case ReadCoils, ReadDiscreteInputs, ReadHoldingRegisters, ReadInputRegisters:
		return []byte{byte(r.Function), byte(r.Address >> 8), byte(r.Address), byte(r.Quantity >> 8), byte(r.Quantity)}, nil
	case WriteSingleCoil, WriteSingleRegister:
		return []byte{byte(r.Function), byte(r.Address >> 8), byte(r.Address), byte(r.Value >> 8), byte(r.Value)}, nil
	case WriteMultipleCoils, WriteMultipleRegisters:
		if len(r.Data) > 255 || 6+len(r.Data) > MaxPDU {
			return nil, fmt.Errorf("mbtcp: %s with %d data bytes exceeds the PDU limit", r.Function, len(r.Data))
		}
		p := make([]byte, 6+len(r.Data))
		p[0] = byte(r.Function)
		binary.BigEndian.PutUint16(p[1:], r.Address)
		binary.BigEndian.PutUint16(p[3:], r.Quantity)
		p[5] = byte(len(r.Data))
		copy(p[6:], r.Data)
		return p, nil
	}
	return nil, fmt.Errorf("mbtcp: cannot encode %s", r.Function)
}

// DecodeResponsePDU checks a response PDU against the request it answers and decodes it. An
// exception response is returned as *ExceptionError; anything malformed gets an error naming the
// field that was wrong.
func DecodeResponsePDU(req Request, pdu []byte) (Response, error) {
	if len(pdu) == 0 {
		return Response{}, fmt.Errorf("mbtcp: empty response PDU")
	}
	fc := FunctionCode(pdu[0])
	if fc == req.Function|0x80 {
		if len(pdu) != 2 {
			return Response{}, fmt.Errorf("mbtcp: exception response for %s has %d bytes, want 2", req.Function, len(pdu))
		}
		return Response{}, &ExceptionError{Function: req.Function, Code: ExceptionCode(pdu[1])}
	}
	if fc != req.Function {
		return Response{}, fmt.Errorf("mbtcp: response function code 0x%02x does not echo the request's %s", byte(fc), req.Function)
	}
	resp := Response{Function: fc}
	switch fc {
	case ReadCoils, ReadDiscreteInputs:
		want := (int(req.Quantity) + 7) / 8
		if err := checkByteCount(fc, pdu, want); err != nil {
			return Response{}, err
		}
		resp.Bits = make([]bool, req.Quantity)
		for i := range resp.Bits {
			resp.Bits[i] = pdu[2+i/8]&(1<<(i%8)) != 0
		}
	case ReadHoldingRegisters, ReadInputRegisters:
		if err := checkByteCount(fc, pdu, 2*int(req.Quantity)); err != nil {
			return Response{}, err
		}
		resp.Registers = make([]uint16, req.Quantity)
		for i := range resp.Registers {
			resp.Registers[i] = binary.BigEndian.Uint16(pdu[2+2*i:])
		}
	case WriteSingleCoil, WriteSingleRegister, WriteMultipleCoils, WriteMultipleRegisters:
		if len(pdu) != 5 {
			return Response{}, fmt.Errorf("mbtcp: %s response has %d bytes, want 5", fc, len(pdu))
		}
		resp.Address = binary.BigEndian.Uint16(pdu[1:])
		resp.Value = binary.BigEndian.Uint16(pdu[3:])
		if resp.Address != req.Address {
			return Response{}, fmt.Errorf("mbtcp: %s response echoes address %d, request was %d", fc, resp.Address, req.Address)
		}
		want, what := req.Value, "value"
		if fc == WriteMultipleCoils || fc == WriteMultipleRegisters {
			want, what = req.Quantity, "quantity"
		}
		if resp.Value != want {
			return Response{}, fmt.Errorf("mbtcp: %s response echoes %s %d, request was %d", fc, what, resp.Value, want)
		}
	default:
		return Response{}, fmt.Errorf("mbtcp: cannot decode a response to %s", fc)
	}
	return resp, nil
}

func checkByteCount(fc FunctionCode, pdu []byte, want int) error {
	if len(pdu) < 2 {
		return fmt.Errorf("mbtcp: %s response has no byte count", fc)
	}
	if got := int(pdu[1]); got != want {
		return fmt.Errorf("mbtcp: %s response byte count %d, want %d for the requested quantity", fc, got, want)
	}
	if len(pdu) != 2+want {
		return fmt.Errorf("mbtcp: %s response has %d data bytes, byte count says %d", fc, len(pdu)-2, want)
	}
	return nil
}
