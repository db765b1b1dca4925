package modbus_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo"
	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo/layout"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
	"github.com/kedge-io/kedge/sdk/mapper"
	"github.com/kedge-io/kedge/sdk/message"
)

// thermoVisitor is a T-100 temperature at holding registers at..at+2 through thermo-codec; the
// codec's own "offset" (degrees) sits beside the nested Modbus address.
func thermoVisitor(at int, codecKeys string) string {
	return fmt.Sprintf(`{"codec":"thermo-codec"%s,"modbus":{"register":"HoldingRegister","offset":%d,"limit":3}}`, codecKeys, at)
}

func TestDriverHandsRawRegistersToAndFromACodec(t *testing.T) {
	srv := mbserver.Start(t)
	d := initDriver(t, fmt.Sprintf(`{"address":%q,"unitID":1,"timeout":"2s"}`, srv.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := mbtcp.NewClient(srv.Addr(), mbtcp.Options{UnitID: 1})
	defer c.Close()

	for _, tc := range []struct {
		name, visitor, want string
	}{
		// The server's tables: holding register i = 1000+i, input register i = i (0..1 typed values
		// below 10 — see testdata/server.c), coil i on when i%3 == 0, discrete input i on when i is odd.
		{"holding registers", `{"codec":"x","modbus":{"register":"HoldingRegister","offset":40,"limit":3}}`, "[1040,1041,1042]"},
		{"input registers", `{"codec":"x","modbus":{"register":"InputRegister","offset":30,"limit":2}}`, "[30,31]"},
		{"coils as 0/1", `{"codec":"x","modbus":{"register":"Coil","offset":0,"limit":4}}`, "[1,0,0,1]"},
		{"discrete inputs as 0/1", `{"codec":"x","modbus":{"register":"DiscreteInput","offset":0,"limit":3}}`, "[0,1,0]"},
		{"codec keys at the top level are the codec's, not checked here", `{"codec":"x","offset":-40,"scale":2,"anything":{"a":1},"modbus":{"register":"HoldingRegister","offset":41,"limit":1}}`, "[1041]"},
	} {
		t.Run("read "+tc.name, func(t *testing.T) {
			v, err := d.Read(ctx, dev, prop("t", "FLOAT", tc.visitor))
			if err != nil {
				t.Fatal(err)
			}
			raw, ok := v.(mapper.Raw)
			if !ok || string(raw) != tc.want {
				t.Fatalf("read %v (%T), want mapper.Raw %s", v, v, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name, visitor string
		raw           mapper.Raw
		check         func() (string, error)
		want          string
	}{
		{"three holding registers (FC 16)", thermoVisitor(50, ""), mapper.RawRegisters(1, 2, 3), func() (string, error) {
			r, err := c.ReadHoldingRegisters(ctx, 50, 3)
			return fmt.Sprint(r), err
		}, "[1 2 3]"},
		{"one holding register (FC 6)", `{"codec":"x","modbus":{"register":"HoldingRegister","offset":55,"limit":1}}`, mapper.RawRegisters(777), func() (string, error) {
			r, err := c.ReadHoldingRegisters(ctx, 55, 1)
			return fmt.Sprint(r), err
		}, "[777]"},
		{"coils (FC 15)", `{"codec":"x","modbus":{"register":"Coil","offset":60,"limit":3}}`, mapper.RawRegisters(0, 1, 1), func() (string, error) {
			r, err := c.ReadCoils(ctx, 60, 3)
			return fmt.Sprint(r), err
		}, "[false true true]"},
	} {
		t.Run("write "+tc.name, func(t *testing.T) {
			if err := d.Write(ctx, dev, prop("sp", "FLOAT", tc.visitor), tc.raw); err != nil {
				t.Fatal(err)
			}
			got, err := tc.check()
			if err != nil || got != tc.want {
				t.Fatalf("read back %s %v, want %s", got, err, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name, visitor string
		value         mapper.Value
		err           string
	}{
		{"a decoded value instead of raw", thermoVisitor(50, ""), 21.5, "takes the codec's raw registers, not 21.5"},
		{"fewer registers than the property spans", thermoVisitor(50, ""), mapper.RawRegisters(1, 2), "encoded 2 registers [1 2], the property spans modbus.limit 3"},
		{"raw that is not registers", thermoVisitor(50, ""), mapper.Raw(`"text"`), "is not a list of 16-bit registers"},
		{"a coil value other than 0/1", `{"codec":"x","modbus":{"register":"Coil","offset":60,"limit":1}}`, mapper.RawRegisters(2), "encoded 2 for coil 60, want 0 or 1"},
		{"an input register", `{"codec":"x","modbus":{"register":"InputRegister","offset":0,"limit":1}}`, mapper.RawRegisters(1), "read-only"},
	} {
		t.Run("write refuses "+tc.name, func(t *testing.T) {
			err := d.Write(ctx, dev, prop("sp", "FLOAT", tc.visitor), tc.value)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}

	t.Run("an exception response names the codec's registers", func(t *testing.T) {
		_, err := d.Read(ctx, dev, prop("t", "FLOAT", thermoVisitor(4000, "")))
		if err == nil || !strings.Contains(err.Error(), "HoldingRegister 4000, 3 for codec thermo-codec") || !strings.Contains(err.Error(), "illegal data address") {
			t.Fatalf("error %v", err)
		}
	})
}

const t100Model = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"t100","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"modbus","properties":[{"name":"temperature","type":"FLOAT","accessMode":"ReadWrite"}]}}`

func t100Device(name, rv, addr string, at int, desired string) string {
	d := ""
	if desired != "" {
		d = fmt.Sprintf(`"desired":{"value":%q},`, desired)
	}
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"t100"},"nodeName":%q,"protocol":{"protocolName":"modbus","configData":{"address":%q,"timeout":"500ms"}},
  "properties":[{"name":"temperature","reportToCloud":true,"collectCycle":20,%s"visitors":{"protocolName":"modbus","configData":%s}}]}}`,
		name, rv, sdktest.NodeName, addr, d, thermoVisitor(at, `,"scale":0.1,"offset":-40`))
}

// The modbus mapper with the builtin thermo-codec beside (real dmi, devicetwin, metamanager, libmodbus
// server): the registers the device holds reach the twin decoded by the codec, and a desired value is
// encoded by the codec and written to the registers.
func TestModbusDeviceDecodedAndEncodedByTheThermoCodec(t *testing.T) {
	r := newRig(t, sdktest.Beside(thermo.Info, nil))
	c := mbtcp.NewClient(r.srv.Addr(), mbtcp.Options{UnitID: 1})
	defer c.Close()
	put := func(n uint32) {
		t.Helper()
		regs := layout.Registers(n, false)
		if err := c.WriteMultipleRegisters(context.Background(), 30, regs[:]); err != nil {
			t.Fatal(err)
		}
	}
	put(612) // 612 × 0.1 − 40 = 21.2 °C
	r.fromCloud(t, message.OpInsert, "default/devicemodel/t100", "1", t100Model)
	r.fromCloud(t, message.OpInsert, "default/device/t-1", "2", t100Device("t-1", "2", r.srv.Addr(), 30, ""))
	r.waitState(t, "t-1", "online")
	r.waitTwin(t, "t-1", "temperature", "21.2")
	put(70000) // a count past 16 bits: 6960 °C, both words matter
	r.waitTwin(t, "t-1", "temperature", "6960")

	t.Run("a corrupt check word fails the reading, the next good one reports", func(t *testing.T) {
		regs := layout.Registers(500, false)
		regs[2] ^= 1
		if err := c.WriteMultipleRegisters(context.Background(), 30, regs[:]); err != nil {
			t.Fatal(err)
		}
		before := readErrors(t, r, "default/t-1")
		waitFor(t, 15*time.Second, "a read error for the corrupt check word", func() error {
			if n := readErrors(t, r, "default/t-1"); n <= before {
				return fmt.Errorf("read errors %v", n)
			}
			return nil
		})
		if v, _ := r.twin("t-1", "temperature"); v != "6960" {
			t.Fatalf("a corrupt reading changed the twin to %q", v)
		}
		put(500)
		r.waitTwin(t, "t-1", "temperature", "10")
	})

	t.Run("a desired value is encoded by the codec and written to the registers", func(t *testing.T) {
		r.fromCloud(t, message.OpUpdate, "default/device/t-1", "3", t100Device("t-1", "3", r.srv.Addr(), 30, "22.5"))
		want := layout.Registers(625, false) // (22.5 + 40) / 0.1
		waitFor(t, 15*time.Second, "holding registers 30-32 = the codec's encoding of 22.5", func() error {
			regs, err := c.ReadHoldingRegisters(context.Background(), 30, 3)
			if err != nil {
				return err
			}
			if fmt.Sprint(regs) != fmt.Sprint(want[:]) {
				return fmt.Errorf("registers %v, want %v", regs, want)
			}
			return nil
		})
		r.waitTwin(t, "t-1", "temperature", "22.5")
	})
}

// readErrors is kedge_mapper_read_errors_total for one device.
func readErrors(t *testing.T, r *rig, device string) float64 {
	t.Helper()
	mfs, err := r.h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kedge_mapper_read_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "device" && l.GetValue() == device {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
