package mbrtu

import (
	"testing"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// FuzzDecodeResponseADU feeds arbitrary frames to the response framing and decoder: no panic, and
// a frame accepted as a read answer has exactly the registers asked for.
func FuzzDecodeResponseADU(f *testing.F) {
	f.Add([]byte{1, 3, 4, 3, 0xE8, 3, 0xE9, 0x7B, 0x5D})
	f.Add(EncodeADU(1, []byte{0x83, 0x02}))
	f.Add(EncodeADU(1, []byte{0x03, 0x04, 0x03, 0xE8, 0x03, 0xE9}))
	f.Add([]byte{1, 3})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, adu []byte) {
		req, _ := mbtcp.NewReadRequest(mbtcp.ReadHoldingRegisters, 0, 2)
		if total, need, err := ResponseLen(req, adu); err == nil && need == 0 && total < 0 {
			t.Fatalf("negative frame length %d", total)
		}
		resp, err := DecodeResponseADU(req, 1, adu)
		if err == nil && len(resp.Registers) != 2 {
			t.Fatalf("accepted %x with %d registers", adu, len(resp.Registers))
		}
	})
}
