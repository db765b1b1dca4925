package mbtcp

import (
	"encoding/binary"
	"fmt"
)

// HeaderLen is the MBAP header length: transaction id (2), protocol id (2), length (2), unit id (1).
const HeaderLen = 7

// Header is a decoded MBAP header.
type Header struct {
	TransactionID uint16
	ProtocolID    uint16
	Length        uint16 // bytes that follow the length field: unit id + PDU
	UnitID        byte
}

// EncodeFrame prefixes pdu with an MBAP header.
func EncodeFrame(txID uint16, unit byte, pdu []byte) []byte {
	f := make([]byte, HeaderLen+len(pdu))
	binary.BigEndian.PutUint16(f[0:], txID)
	binary.BigEndian.PutUint16(f[2:], 0)
	binary.BigEndian.PutUint16(f[4:], uint16(1+len(pdu)))
	f[6] = unit
	copy(f[HeaderLen:], pdu)
	return f
}

// DecodeHeader parses and checks an MBAP header: protocol id 0 and a length that fits a PDU.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("mbtcp: MBAP header has %d bytes, want %d", len(b), HeaderLen)
	}
	h := Header{
		TransactionID: binary.BigEndian.Uint16(b[0:]),
		ProtocolID:    binary.BigEndian.Uint16(b[2:]),
		Length:        binary.BigEndian.Uint16(b[4:]),
		UnitID:        b[6],
	}
	if h.ProtocolID != 0 {
		return h, fmt.Errorf("mbtcp: MBAP protocol id %d, want 0 (Modbus)", h.ProtocolID)
	}
	if h.Length < 2 || h.Length > 1+MaxPDU {
		return h, fmt.Errorf("mbtcp: MBAP length %d out of range 2..%d", h.Length, 1+MaxPDU)
	}
	return h, nil
}

// DecodeResponseFrame checks a whole response frame (MBAP header + PDU) against the request it
// answers: transaction id, protocol id, length, unit id, then the PDU (see DecodeResponsePDU).
func DecodeResponseFrame(req Request, txID uint16, unit byte, frame []byte) (Response, error) {
	h, err := DecodeHeader(frame)
	if err != nil {
		return Response{}, err
	}
	if got := len(frame) - 6; got != int(h.Length) {
		return Response{}, fmt.Errorf("mbtcp: MBAP length %d but %d bytes follow it", h.Length, got)
	}
	if h.TransactionID != txID {
		return Response{}, fmt.Errorf("mbtcp: response transaction id %d, request was %d", h.TransactionID, txID)
	}
	if h.UnitID != unit {
		return Response{}, fmt.Errorf("mbtcp: response unit id %d, request was %d", h.UnitID, unit)
	}
	return DecodeResponsePDU(req, frame[HeaderLen:])
}
