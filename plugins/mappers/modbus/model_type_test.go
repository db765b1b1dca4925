package modbus_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
	"github.com/kedge-io/kedge/sdk/mapper"
)

// wire lays big-endian bytes out as registers the way a device with the given order holds them,
// written here independently of mbtcp: isSwap swaps the two bytes of each register, isRegisterSwap
// reverses the order of the registers.
func wire(be []byte, isSwap, isRegisterSwap bool) []uint16 {
	regs := make([]uint16, len(be)/2)
	for i := range regs {
		hi, lo := be[2*i], be[2*i+1]
		if isSwap {
			hi, lo = lo, hi
		}
		regs[i] = uint16(hi)<<8 | uint16(lo)
	}
	if isRegisterSwap {
		for i, j := 0, len(regs)-1; i < j; i, j = i+1, j-1 {
			regs[i], regs[j] = regs[j], regs[i]
		}
	}
	return regs
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// KubeEdge-shaped visitors without dataType (register, offset, limit, isSwap, isRegisterSwap) read
// and write what the model property's type says, with each of the four byte/word orders, against the
// libmodbus server: FLOAT limit 2 is float32, limit 4 float64; INT limit 2 int32, limit 4 int64. Every
// value has no zero word and no two equal bytes in a register, so a wrong order reads another number
// (the 23.75 read as the uint32 1102970880 would fail here).
func TestVisitorWithoutDataTypeTakesTheModelTypeInEveryByteAndWordOrder(t *testing.T) {
	srv := mbserver.Start(t)
	d := initDriver(t, fmt.Sprintf(`{"address":%q,"unitID":1,"timeout":"2s"}`, srv.Addr()))
	c := mbtcp.NewClient(srv.Addr(), mbtcp.Options{UnitID: 1})
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// As big-endian bytes: c49a522b, 41aaf5c3 | f8a432eb, 12345678 | c0c34a4587e7c06e,
	// 400921fb54442d11 | fffb9d2ac3754540, 00123456789abcde.
	const f32in, f32out = float32(-1234.5677), float32(21.37)
	i32in, i32out := int32(-123456789), int32(305419896)
	const f64in, f64out = -9876.54321, 3.14159265358979
	i64in, i64out := int64(-1234567890123456), int64(0x0012_3456_789A_BCDE) // below 2^53: int64 values travel as float64
	orders := []struct {
		name                   string
		isSwap, isRegisterSwap bool
	}{{"ABCD", false, false}, {"CDAB (isRegisterSwap)", false, true}, {"BADC (isSwap)", true, false}, {"DCBA (both)", true, true}}
	for i, o := range orders {
		base := uint16(40 + 12*i) // 2 + 2 + 4 + 4 registers per order
		cases := []struct {
			model    string
			offset   uint16
			limit    int
			rawIn    []byte
			wantIn   string
			valueOut mapper.Value
			rawOut   []byte
		}{
			{"FLOAT", base, 2, be32(math.Float32bits(f32in)), "-1234.5677490234375", float64(f32out), be32(math.Float32bits(f32out))},
			{"INT", base + 2, 2, be32(uint32(i32in)), "-123456789", int64(i32out), be32(uint32(i32out))},
			{"FLOAT", base + 4, 4, be64(math.Float64bits(f64in)), "-9876.54321", f64out, be64(math.Float64bits(f64out))},
			{"INT", base + 8, 4, be64(uint64(i64in)), "-1234567890123456", i64out, be64(uint64(i64out))},
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s %s limit %d", o.name, tc.model, tc.limit), func(t *testing.T) {
				for k := 0; k+1 < len(tc.rawIn); k += 2 {
					if tc.rawIn[k] == tc.rawIn[k+1] || (tc.rawIn[k] == 0 && tc.rawIn[k+1] == 0) {
						t.Fatalf("test value %x has a register a swap cannot change", tc.rawIn)
					}
				}
				p := prop("p", tc.model, fmt.Sprintf(`{"register":"HoldingRegister","offset":%d,"limit":%d,"scale":1,"isSwap":%v,"isRegisterSwap":%v}`,
					tc.offset, tc.limit, o.isSwap, o.isRegisterSwap))
				if err := c.WriteMultipleRegisters(ctx, tc.offset, wire(tc.rawIn, o.isSwap, o.isRegisterSwap)); err != nil {
					t.Fatal(err)
				}
				v, err := d.Read(ctx, dev, p)
				if err != nil {
					t.Fatal(err)
				}
				if s, err := mapper.FormatValue(tc.model, v); err != nil || s != tc.wantIn {
					t.Fatalf("read %v (%T) → %q %v, want %s", v, v, s, err, tc.wantIn)
				}
				if err := d.Write(ctx, dev, p, tc.valueOut); err != nil {
					t.Fatal(err)
				}
				regs, err := c.ReadHoldingRegisters(ctx, tc.offset, uint16(tc.limit))
				if want := wire(tc.rawOut, o.isSwap, o.isRegisterSwap); err != nil || fmt.Sprintf("%04x", regs) != fmt.Sprintf("%04x", want) {
					t.Fatalf("wrote %v: registers %04x %v, want %04x", tc.valueOut, regs, err, want)
				}
			})
		}
	}

	t.Run("BOOLEAN in a holding register: non-zero is true, writes 1 and 0", func(t *testing.T) {
		p := prop("b", "BOOLEAN", `{"register":"HoldingRegister","offset":90}`)
		if err := c.WriteMultipleRegisters(ctx, 90, []uint16{0x0100}); err != nil {
			t.Fatal(err)
		}
		if v, err := d.Read(ctx, dev, p); err != nil || v != true {
			t.Fatalf("read %v %v, want true", v, err)
		}
		for _, w := range []bool{false, true} {
			if err := d.Write(ctx, dev, p, w); err != nil {
				t.Fatal(err)
			}
			regs, err := c.ReadHoldingRegisters(ctx, 90, 1)
			if want := map[bool]uint16{false: 0, true: 1}[w]; err != nil || regs[0] != want {
				t.Fatalf("wrote %v: register %v %v, want %d", w, regs, err, want)
			}
		}
	})
	t.Run("BOOLEAN on a coil", func(t *testing.T) {
		p := prop("b", "BOOLEAN", `{"register":"Coil","offset":60,"limit":1}`)
		if err := d.Write(ctx, dev, p, true); err != nil {
			t.Fatal(err)
		}
		if v, err := d.Read(ctx, dev, p); err != nil || v != true {
			t.Fatalf("read %v %v, want true", v, err)
		}
	})
	for _, swap := range []bool{false, true} {
		t.Run(fmt.Sprintf("STRING in 3 registers isSwap %v", swap), func(t *testing.T) {
			p := prop("s", "STRING", fmt.Sprintf(`{"register":"HoldingRegister","offset":92,"limit":3,"isSwap":%v}`, swap))
			if err := d.Write(ctx, dev, p, "Kedge"); err != nil {
				t.Fatal(err)
			}
			regs, err := c.ReadHoldingRegisters(ctx, 92, 3)
			want := wire([]byte("Kedge\x00"), swap, false)
			if err != nil || fmt.Sprintf("%04x", regs) != fmt.Sprintf("%04x", want) {
				t.Fatalf("registers %04x %v, want %04x", regs, err, want)
			}
			if v, err := d.Read(ctx, dev, p); err != nil || v != "Kedge" {
				t.Fatalf("read %q %v, want Kedge", v, err)
			}
			if err := d.Write(ctx, dev, p, "too long!"); err == nil || !strings.Contains(err.Error(), "does not fit in 3 registers") {
				t.Fatalf("write of 9 bytes into 3 registers: %v", err)
			}
		})
	}
	t.Run("an explicit dataType wins over the model", func(t *testing.T) {
		if err := c.WriteMultipleRegisters(ctx, 96, []uint16{0xB2D0, 0x5E01}); err != nil {
			t.Fatal(err)
		}
		v, err := d.Read(ctx, dev, prop("u", "INT", `{"register":"HoldingRegister","offset":96,"limit":2,"dataType":"uint32"}`))
		if err != nil || v != int64(3000000001) {
			t.Fatalf("read %v %v, want the uint32 3000000001", v, err)
		}
	})
}

// A property whose visitor cannot work with its model type is refused when the device arrives
// (CheckProperty, called by the mapper runtime), with a message naming the fields.
func TestImpossibleModelAndVisitorCombinationsAreRefusedNamingTheFields(t *testing.T) {
	d := modbus.NewDriver()
	for _, tc := range []struct{ name, model, visitor, want string }{
		{"FLOAT in one register", "FLOAT", `{"register":"HoldingRegister","offset":0,"limit":1}`, "register HoldingRegister, offset 0, no dataType): model type FLOAT with limit 1"},
		{"STRING on a coil", "STRING", `{"register":"Coil","offset":3}`, "register Coil holds one bit; model type STRING cannot be read from it"},
		{"INT in three registers", "INT", `{"register":"InputRegister","offset":0,"limit":3}`, "model type INT with limit 3"},
		{"BOOLEAN in two registers", "BOOLEAN", `{"register":"HoldingRegister","offset":0,"limit":2}`, "model type BOOLEAN with limit 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.(mapper.PropertyChecker).CheckProperty(prop("temperature", tc.model, tc.visitor))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckProperty: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if err := d.(mapper.PropertyChecker).CheckProperty(prop("temperature", "FLOAT", `{"register":"HoldingRegister","offset":0,"limit":2,"isSwap":true}`)); err != nil {
		t.Fatalf("a good property refused: %v", err)
	}
}
