package mbrtu

import (
	"errors"
	"strings"
	"testing"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

func TestCRC16MatchesTheModbusSpecificationExamples(t *testing.T) {
	for _, tc := range []struct {
		frame []byte
		lo    byte
		hi    byte
	}{
		{[]byte{0x01, 0x03, 0x00, 0x00, 0x00, 0x0A}, 0xC5, 0xCD},
		{[]byte{0x11, 0x03, 0x00, 0x6B, 0x00, 0x03}, 0x76, 0x87},
		{[]byte{0x01, 0x06, 0x00, 0x01, 0x00, 0x03}, 0x98, 0x0B},
	} {
		adu := EncodeADU(tc.frame[0], tc.frame[1:])
		if got := adu[len(adu)-2:]; got[0] != tc.lo || got[1] != tc.hi {
			t.Errorf("CRC of % x = % x, want %02x %02x", tc.frame, got, tc.lo, tc.hi)
		}
	}
}

func TestDecodeResponseADURejectsDamagedAndForeignFramesNamingTheFault(t *testing.T) {
	req, _ := mbtcp.NewReadRequest(mbtcp.ReadHoldingRegisters, 0, 2)
	good := EncodeADU(1, []byte{0x03, 0x04, 0x03, 0xE8, 0x03, 0xE9})
	flipped := append([]byte(nil), good...)
	flipped[4] ^= 0x01
	for _, tc := range []struct {
		name string
		adu  []byte
		unit byte
		want string
	}{
		{"good", good, 1, ""},
		{"damaged data", flipped, 1, "CRC"},
		{"other unit", good, 2, "from unit 1, request was to unit 2"},
		{"too short", []byte{1, 3, 0}, 1, "at least 4"},
		{"exception", EncodeADU(1, []byte{0x83, 0x02}), 1, "illegal data address"},
		{"wrong byte count", EncodeADU(1, []byte{0x03, 0x02, 0x03, 0xE8}), 1, "byte count 2, want 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := DecodeResponseADU(req, tc.unit, tc.adu)
			if tc.want == "" {
				if err != nil || len(resp.Registers) != 2 || resp.Registers[0] != 1000 || resp.Registers[1] != 1001 {
					t.Fatalf("resp %+v err %v", resp, err)
				}
				return
			}
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
			var crc *CRCError
			if tc.name == "damaged data" && !errors.As(err, &crc) {
				t.Fatalf("err = %T, want *CRCError", err)
			}
		})
	}
}

func TestResponseLenKnowsEachFunctionsFrameLength(t *testing.T) {
	read, _ := mbtcp.NewReadRequest(mbtcp.ReadInputRegisters, 0, 3)
	write := mbtcp.NewWriteSingleRegister(1, 7)
	for _, tc := range []struct {
		name        string
		req         mbtcp.Request
		head        []byte
		total, need int
		err         string
	}{
		{"nothing yet", read, nil, 0, 2, ""},
		{"read needs the byte count", read, []byte{1, 4}, 0, 1, ""},
		{"read", read, []byte{1, 4, 6}, 11, 0, ""},
		{"exception", read, []byte{1, 0x84}, 5, 0, ""},
		{"write", write, []byte{1, 6}, 8, 0, ""},
		{"foreign function", read, []byte{1, 3}, 0, 0, "does not echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total, need, err := ResponseLen(tc.req, tc.head)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || total != tc.total || need != tc.need {
				t.Fatalf("ResponseLen = %d, %d, %v; want %d, %d", total, need, err, tc.total, tc.need)
			}
		})
	}
}

func TestLineNormalizeFillsDefaultsAndNamesTheWrongField(t *testing.T) {
	l, err := Line{Port: "/dev/ttyUSB0"}.Normalize()
	if err != nil || l.BaudRate != 19200 || l.DataBits != 8 || l.Parity != "even" || l.StopBits != 1 {
		t.Fatalf("defaults: %+v %v", l, err)
	}
	if s := (Line{Port: "/x", BaudRate: 9600, DataBits: 8, Parity: "even", StopBits: 1}).Silence(); s < 4*1000*1000 || s > 4100*1000 {
		t.Fatalf("t3.5 at 9600 8E1 = %s, want ~4.01ms (3.5 × 11 bits / 9600)", s)
	}
	for _, tc := range []struct {
		l    Line
		want string
	}{
		{Line{}, `"serialPort" is required`},
		{Line{Port: "ttyUSB0"}, "not an absolute device path"},
		{Line{Port: "/dev/x", BaudRate: 12345}, "baudRate 12345"},
		{Line{Port: "/dev/x", DataBits: 9}, "dataBits 9"},
		{Line{Port: "/dev/x", Parity: "mark"}, `parity "mark"`},
		{Line{Port: "/dev/x", StopBits: 3}, "stopBits 3"},
	} {
		if _, err := tc.l.Normalize(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Normalize(%+v) = %v, want %q", tc.l, err, tc.want)
		}
	}
}
