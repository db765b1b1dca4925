// Package mbrtu speaks Modbus RTU on a serial line: the request and response PDUs of package mbtcp
// framed as an ADU (unit id + PDU + CRC-16, low byte first), with the line silent for at least 3.5
// character times between frames. One Client owns one serial line (an RS-485 bus) and serialises
// the requests of every slave on it.
package mbrtu

import (
	"fmt"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// MaxADU is the largest RTU frame: unit id (1) + PDU (253) + CRC (2).
const MaxADU = 1 + mbtcp.MaxPDU + 2

// CRC16 is the Modbus CRC (reflected polynomial 0xA001, initial value 0xFFFF).
func CRC16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// EncodeADU frames pdu for unit: unit id, PDU, CRC low byte, CRC high byte.
func EncodeADU(unit byte, pdu []byte) []byte {
	f := make([]byte, 0, len(pdu)+3)
	f = append(f, unit)
	f = append(f, pdu...)
	crc := CRC16(f)
	return append(f, byte(crc), byte(crc>>8))
}

// CRCError is a frame whose CRC does not match its contents (line noise, a collision on the bus).
type CRCError struct {
	Got, Want uint16
}

func (e *CRCError) Error() string {
	return fmt.Sprintf("mbrtu: CRC 0x%04x, frame content gives 0x%04x", e.Got, e.Want)
}

// ResponseLen tells how long the response frame that starts with head is. head holds the first
// bytes received: unit id and function code, plus the byte count for reads (3 bytes). It returns
// need > 0 when more header bytes are required to know, or the total frame length.
func ResponseLen(req mbtcp.Request, head []byte) (total, need int, err error) {
	if len(head) < 2 {
		return 0, 2 - len(head), nil
	}
	fc := mbtcp.FunctionCode(head[1])
	switch {
	case fc == req.Function|0x80:
		return 1 + 2 + 2, 0, nil // unit, fc, exception code, CRC
	case fc != req.Function:
		return 0, 0, fmt.Errorf("mbrtu: response function code 0x%02x does not echo the request's %s", byte(fc), req.Function)
	}
	switch fc {
	case mbtcp.ReadCoils, mbtcp.ReadDiscreteInputs, mbtcp.ReadHoldingRegisters, mbtcp.ReadInputRegisters:
		if len(head) < 3 {
			return 0, 3 - len(head), nil
		}
		return 3 + int(head[2]) + 2, 0, nil
	case mbtcp.WriteSingleCoil, mbtcp.WriteSingleRegister, mbtcp.WriteMultipleCoils, mbtcp.WriteMultipleRegisters:
		return 1 + 5 + 2, 0, nil
	}
	return 0, 0, fmt.Errorf("mbrtu: cannot frame a response to %s", fc)
}

// DecodeResponseADU checks a whole response frame against the request it answers: length, CRC,
// unit id, then the PDU (mbtcp.DecodeResponsePDU). A CRC mismatch is a *CRCError.
func DecodeResponseADU(req mbtcp.Request, unit byte, adu []byte) (mbtcp.Response, error) {
	if len(adu) < 4 {
		return mbtcp.Response{}, fmt.Errorf("mbrtu: response frame has %d bytes, want at least 4 (unit, function, CRC)", len(adu))
	}
	if len(adu) > MaxADU {
		return mbtcp.Response{}, fmt.Errorf("mbrtu: response frame has %d bytes, more than the %d an RTU frame can hold", len(adu), MaxADU)
	}
	n := len(adu) - 2
	got := uint16(adu[n]) | uint16(adu[n+1])<<8
	if want := CRC16(adu[:n]); got != want {
		return mbtcp.Response{}, &CRCError{Got: got, Want: want}
	}
	if adu[0] != unit {
		return mbtcp.Response{}, fmt.Errorf("mbrtu: response from unit %d, request was to unit %d", adu[0], unit)
	}
	return mbtcp.DecodeResponsePDU(req, adu[1:n])
}
