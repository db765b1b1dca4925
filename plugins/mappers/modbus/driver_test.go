package modbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
	"github.com/kedge-io/kedge/sdk/mapper"
)

var dev = mapper.DeviceRef{Namespace: "default", Name: "plc-1", Model: "plc"}

func initDriver(t *testing.T, cfg string) mapper.Driver {
	t.Helper()
	d := modbus.NewDriver()
	if err := d.Init(context.Background(), mapper.ProtocolConfig{Device: dev, Name: "modbus", ConfigData: json.RawMessage(cfg)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func prop(name, typ, visitor string) mapper.Property {
	return mapper.Property{Name: name, Type: typ, AccessMode: "ReadWrite", VisitorProtocol: "modbus", Visitor: json.RawMessage(visitor)}
}

func TestDriverReadsAndWritesTheLibmodbusServer(t *testing.T) {
	srv := mbserver.Start(t)
	d := initDriver(t, fmt.Sprintf(`{"address":%q,"unitID":1,"timeout":"2s"}`, srv.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Health(ctx, dev); err != nil {
		t.Fatalf("health: %v", err)
	}
	for _, tc := range []struct {
		name string
		p    mapper.Property
		want string
	}{
		{"int16 input register", prop("t", "INT", `{"register":"InputRegister","offset":0,"dataType":"int16"}`), "-1234"},
		{"scaled uint16 as FLOAT", prop("t", "FLOAT", `{"register":"InputRegister","offset":1,"dataType":"uint16","scale":0.01}`), "543.21"},
		{"int32 CDAB", prop("t", "INT", `{"register":"InputRegister","offset":22,"limit":2,"dataType":"int32","swapWord":true}`), "-123456789"},
		{"float32 DCBA", prop("t", "FLOAT", `{"register":"InputRegister","offset":16,"dataType":"float32","swapByte":true,"swapWord":true}`), "3.141590118408203"},
		{"uint32", prop("t", "INT", `{"register":"InputRegister","offset":4,"limit":2,"dataType":"uint32"}`), "3000000000"},
		{"INT limit 2 without dataType is int32", prop("t", "INT", `{"register":"InputRegister","offset":4,"limit":2}`), "-1294967296"},
		{"coil", prop("t", "BOOLEAN", `{"register":"Coil","offset":3}`), "true"},
		{"discrete input", prop("t", "BOOLEAN", `{"register":"DiscreteInput","offset":4}`), "false"},
		{"holding register", prop("t", "INT", `{"register":"HoldingRegister","offset":2}`), "1002"},
	} {
		t.Run("read "+tc.name, func(t *testing.T) {
			v, err := d.Read(ctx, dev, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			s, err := mapper.FormatValue(tc.p.Type, v)
			if err != nil || s != tc.want {
				t.Fatalf("read %v (%T) → %q %v, want %q", v, v, s, err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		p     mapper.Property
		value mapper.Value
	}{
		{"float32 word-swapped with scale", prop("sp", "FLOAT", `{"register":"HoldingRegister","offset":10,"limit":2,"dataType":"float32","scale":0.1,"swapWord":true}`), 21.5},
		{"int16 with offset", prop("sp", "INT", `{"register":"HoldingRegister","offset":12,"dataType":"int16","valueOffset":-40}`), int64(-55)},
		{"uint32", prop("sp", "INT", `{"register":"HoldingRegister","offset":14,"dataType":"uint32"}`), int64(4000000000)},
		{"coil", prop("sw", "BOOLEAN", `{"register":"Coil","offset":50}`), true},
	} {
		t.Run("write "+tc.name, func(t *testing.T) {
			if err := d.Write(ctx, dev, tc.p, tc.value); err != nil {
				t.Fatal(err)
			}
			v, err := d.Read(ctx, dev, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := mapper.FormatValue(tc.p.Type, v)
			want, _ := mapper.FormatValue(tc.p.Type, tc.value)
			if got != want {
				t.Fatalf("read back %q, wrote %q", got, want)
			}
		})
	}
	// The written float32 sits on the wire as the device expects: raw 215 as CDAB.
	c := mbtcp.NewClient(srv.Addr(), mbtcp.Options{UnitID: 1})
	defer c.Close()
	regs, err := c.ReadHoldingRegisters(ctx, 10, 2)
	if err != nil || fmt.Sprintf("%04x", regs) != "[0000 4357]" {
		t.Fatalf("registers 10-11 = %04x %v, want float32 215 word-swapped [0000 4357]", regs, err)
	}
}

func TestDriverErrorsNameWhatWasWrong(t *testing.T) {
	srv := mbserver.Start(t)
	d := initDriver(t, fmt.Sprintf(`{"address":%q}`, srv.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := d.Read(ctx, dev, prop("far", "INT", `{"register":"HoldingRegister","offset":500}`))
	if !errors.Is(err, mbtcp.IllegalDataAddress) || !strings.Contains(err.Error(), `property "far"`) {
		t.Fatalf("read of a wrong address: %v, want IllegalDataAddress naming the property", err)
	}
	_, err = d.Read(ctx, dev, prop("bad", "INT", `{"register":"Holding","offset":1}`))
	if err == nil || !strings.Contains(err.Error(), `property "bad": modbus visitor configData: register "Holding"`) {
		t.Fatalf("malformed visitor: %v", err)
	}
	err = d.Write(ctx, dev, prop("ro", "INT", `{"register":"InputRegister","offset":1}`), int64(1))
	if !errors.Is(err, mapper.ErrReadOnly) {
		t.Fatalf("write to an input register: %v, want ErrReadOnly", err)
	}
	err = d.Write(ctx, dev, prop("big", "INT", `{"register":"HoldingRegister","offset":1,"dataType":"int16"}`), int64(70000))
	if err == nil || !strings.Contains(err.Error(), "out of range -32768..32767 for int16") {
		t.Fatalf("write of a value that does not fit: %v", err)
	}
	if err := modbus.NewDriver().Init(ctx, mapper.ProtocolConfig{Device: dev, ConfigData: json.RawMessage(`{"address":"nowhere"}`)}); err == nil ||
		!strings.Contains(err.Error(), "default/plc-1") || !strings.Contains(err.Error(), "not host:port") {
		t.Fatalf("Init with a bad address: %v", err)
	}
}

func TestDriverHealthFailsForAnUnreachableDevice(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	d := initDriver(t, fmt.Sprintf(`{"address":%q,"timeout":"200ms"}`, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Health(ctx, dev); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("health of an unreachable device: %v", err)
	}
	if _, err := d.Read(ctx, dev, prop("t", "INT", `{"register":"HoldingRegister","offset":0}`)); err == nil {
		t.Fatal("read from an unreachable device succeeded")
	}
}

func TestDevicesBehindOneAddressShareOneConnection(t *testing.T) {
	srv := mbserver.Start(t)
	cfg := fmt.Sprintf(`{"address":%q,"unitID":1}`, srv.Addr())
	a, b := initDriver(t, cfg), initDriver(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := prop("t", "INT", `{"register":"HoldingRegister","offset":3}`)
	if err := a.Write(ctx, dev, p, int64(7)); err != nil {
		t.Fatal(err)
	}
	v, err := b.Read(ctx, dev, p)
	if err != nil || v != int64(7) {
		t.Fatalf("second device read %v %v", v, err)
	}
	// Closing one device leaves the other's connection working.
	a.Close()
	if _, err := b.Read(ctx, dev, p); err != nil {
		t.Fatalf("read after the other device closed: %v", err)
	}
}
