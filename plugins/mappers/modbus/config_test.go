package modbus

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbrtu"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

func TestProtocolConfigParsing(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     ProtocolConfig
		err      string
	}{
		{"full", `{"address":"127.0.0.1:502","unitID":3,"timeout":"250ms"}`, ProtocolConfig{Address: "127.0.0.1:502", UnitID: 3, Timeout: 250 * time.Millisecond}, ""},
		{"defaults", `{"address":"plc:1502"}`, ProtocolConfig{Address: "plc:1502", UnitID: 1, Timeout: time.Second}, ""},
		{"KubeEdge spelling", `{"ip":"10.0.0.5","port":"5020","slaveID":7}`, ProtocolConfig{Address: "10.0.0.5:5020", UnitID: 7, Timeout: time.Second}, ""},
		{"timeout in ms", `{"address":"h:1","timeout":1500}`, ProtocolConfig{Address: "h:1", UnitID: 1, Timeout: 1500 * time.Millisecond}, ""},
		{"RTU, KubeEdge's fields", `{"serialPort":"/dev/ttyUSB0","baudRate":115200,"dataBits":8,"parity":"odd","stopBits":2,"slaveID":4,"timeout":"300ms"}`,
			ProtocolConfig{Serial: &mbrtu.Line{Port: "/dev/ttyUSB0", BaudRate: 115200, DataBits: 8, Parity: "odd", StopBits: 2}, UnitID: 4, Timeout: 300 * time.Millisecond, Retries: 2}, ""},
		{"RTU defaults", `{"serialPort":"/dev/ttyS1","retries":0}`,
			ProtocolConfig{Serial: &mbrtu.Line{Port: "/dev/ttyS1", BaudRate: 19200, DataBits: 8, Parity: "even", StopBits: 1}, UnitID: 1, Timeout: time.Second}, ""},
		{"RTU and TCP at once", `{"serialPort":"/dev/ttyS1","address":"h:1"}`, ProtocolConfig{}, "either Modbus TCP"},
		{"RTU without a port", `{"baudRate":9600}`, ProtocolConfig{}, `"serialPort" is required`},
		{"RTU bad parity", `{"serialPort":"/dev/ttyS1","parity":"space"}`, ProtocolConfig{}, `parity "space" is not one of none, even, odd`},
		{"RTU bad baud", `{"serialPort":"/dev/ttyS1","baudRate":14400}`, ProtocolConfig{}, "baudRate 14400"},
		{"retries on TCP", `{"address":"h:1","retries":3}`, ProtocolConfig{}, "Modbus RTU (a serial line) only"},
		{"missing address", `{}`, ProtocolConfig{}, `"address" (Modbus TCP`},
		{"no port", `{"address":"127.0.0.1"}`, ProtocolConfig{}, `address "127.0.0.1" is not host:port`},
		{"bad port", `{"address":"h:99999"}`, ProtocolConfig{}, `has port "99999", want 1..65535`},
		{"unit out of range", `{"address":"h:1","unitID":300}`, ProtocolConfig{}, "unitID 300 out of range 0..255"},
		{"bad timeout", `{"address":"h:1","timeout":"soon"}`, ProtocolConfig{}, `timeout "soon" is not a duration`},
		{"negative timeout", `{"address":"h:1","timeout":"-1s"}`, ProtocolConfig{}, "must be positive"},
		{"typo", `{"adress":"h:1"}`, ProtocolConfig{}, `unknown field "adress"`},
		{"not JSON", `address: h`, ProtocolConfig{}, "modbus protocol configData"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProtocolConfig([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestVisitorConfigParsing(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Visitor
		err      string
		model    string // the model property's type ("" unknown)
	}{
		{"float32 word-swapped", `{"register":"HoldingRegister","offset":0,"limit":2,"dataType":"float32","scale":0.1,"swapByte":false,"swapWord":true}`,
			Visitor{HoldingRegister, 0, mbtcp.ValueSpec{Type: mbtcp.Float32, Scale: 0.1, SwapWord: true}, 0}, "", ""},
		{"default uint16", `{"register":"InputRegister","offset":9}`, Visitor{InputRegister, 9, mbtcp.ValueSpec{Type: mbtcp.Uint16}, 0}, "", ""},
		{"limit 2 means uint32", `{"register":"InputRegister","offset":9,"limit":2}`, Visitor{InputRegister, 9, mbtcp.ValueSpec{Type: mbtcp.Uint32}, 0}, "", ""},
		{"KubeEdge names", `{"register":"CoilRegister","offset":4,"limit":1}`, Visitor{Coil, 4, mbtcp.ValueSpec{}, 0}, "", ""},
		{"KubeEdge swaps", `{"register":"HoldingRegister","offset":1,"dataType":"int32","isSwap":true,"isRegisterSwap":true,"valueOffset":-40}`,
			Visitor{HoldingRegister, 1, mbtcp.ValueSpec{Type: mbtcp.Int32, Offset: -40, SwapByte: true, SwapWord: true}, 0}, "", ""},
		{"unknown register", `{"register":"Holding","offset":0}`, Visitor{}, `register "Holding" is not one of`, ""},
		{"no offset", `{"register":"Coil"}`, Visitor{}, `"offset" (the 0-based address) is required`, ""},
		{"offset too big", `{"register":"Coil","offset":70000}`, Visitor{}, "offset 70000 out of range", ""},
		{"limit disagrees with type", `{"register":"HoldingRegister","offset":0,"limit":1,"dataType":"float32"}`, Visitor{}, "limit 1 but dataType float32 takes 2 registers", ""},
		{"unknown type", `{"register":"HoldingRegister","offset":0,"dataType":"float16"}`, Visitor{}, `data type "float16" is not one of`, ""},
		{"zero scale", `{"register":"HoldingRegister","offset":0,"scale":0}`, Visitor{}, "scale 0 would make every value 0", ""},
		{"coil with a type", `{"register":"Coil","offset":0,"dataType":"int16"}`, Visitor{}, "apply to registers, not to Coil", ""},
		{"several coils", `{"register":"DiscreteInput","offset":0,"limit":8}`, Visitor{}, "limit 8 for DiscreteInput", ""},
		{"past the end", `{"register":"HoldingRegister","offset":65535,"dataType":"int32"}`, Visitor{}, "runs past address 65535", ""},
		{"typo", `{"register":"Coil","ofset":1}`, Visitor{}, `unknown field "ofset"`, ""},

		// Without dataType the type comes from the model (KubeEdge's documented visitors have none).
		{"FLOAT limit 2 is float32, KubeEdge swaps", `{"register":"HoldingRegister","offset":0,"limit":2,"scale":1,"isSwap":true,"isRegisterSwap":true}`,
			Visitor{HoldingRegister, 0, mbtcp.ValueSpec{Type: mbtcp.Float32, Scale: 1, SwapByte: true, SwapWord: true}, 0}, "", "FLOAT"},
		{"FLOAT without limit is float32", `{"register":"InputRegister","offset":3}`, Visitor{InputRegister, 3, mbtcp.ValueSpec{Type: mbtcp.Float32}, 0}, "", "FLOAT"},
		{"FLOAT limit 4 is float64", `{"register":"HoldingRegister","offset":0,"limit":4}`, Visitor{HoldingRegister, 0, mbtcp.ValueSpec{Type: mbtcp.Float64}, 0}, "", "float"},
		{"DOUBLE without limit is float64", `{"register":"HoldingRegister","offset":0}`, Visitor{HoldingRegister, 0, mbtcp.ValueSpec{Type: mbtcp.Float64}, 0}, "", "DOUBLE"},
		{"INT limit 1 is int16", `{"register":"HoldingRegister","offset":5,"limit":1}`, Visitor{HoldingRegister, 5, mbtcp.ValueSpec{Type: mbtcp.Int16}, 0}, "", "INT"},
		{"INT limit 2 is int32", `{"register":"HoldingRegister","offset":5,"limit":2}`, Visitor{HoldingRegister, 5, mbtcp.ValueSpec{Type: mbtcp.Int32}, 0}, "", "INT"},
		{"INT limit 4 is int64", `{"register":"HoldingRegister","offset":5,"limit":4}`, Visitor{HoldingRegister, 5, mbtcp.ValueSpec{Type: mbtcp.Int64}, 0}, "", "INT"},
		{"BOOLEAN in a register", `{"register":"HoldingRegister","offset":7}`, Visitor{HoldingRegister, 7, mbtcp.ValueSpec{Type: mbtcp.Uint16}, 0}, "", "BOOLEAN"},
		{"BOOLEAN on a coil", `{"register":"Coil","offset":7,"limit":1}`, Visitor{Coil, 7, mbtcp.ValueSpec{}, 0}, "", "BOOLEAN"},
		{"STRING in registers", `{"register":"HoldingRegister","offset":10,"limit":4}`, Visitor{HoldingRegister, 10, mbtcp.ValueSpec{}, 4}, "", "STRING"},
		{"explicit dataType wins over the model", `{"register":"HoldingRegister","offset":0,"limit":2,"dataType":"uint32"}`,
			Visitor{HoldingRegister, 0, mbtcp.ValueSpec{Type: mbtcp.Uint32}, 0}, "", "FLOAT"},
		{"FLOAT with limit 1 is refused", `{"register":"HoldingRegister","offset":0,"limit":1}`, Visitor{}, "model type FLOAT with limit 1: a float takes 2 registers", "FLOAT"},
		{"INT with limit 3 is refused", `{"register":"HoldingRegister","offset":0,"limit":3}`, Visitor{}, "model type INT with limit 3", "INT"},
		{"STRING on a coil is refused", `{"register":"Coil","offset":0}`, Visitor{}, "register Coil holds one bit; model type STRING cannot be read from it", "STRING"},
		{"STRING without limit is refused", `{"register":"HoldingRegister","offset":0}`, Visitor{}, `a string needs "limit"`, "STRING"},
		{"BOOLEAN over two registers is refused", `{"register":"HoldingRegister","offset":0,"limit":2}`, Visitor{}, "model type BOOLEAN with limit 2", "BOOLEAN"},
		{"BYTES is refused", `{"register":"HoldingRegister","offset":0,"limit":2}`, Visitor{}, "model type BYTES is not read from Modbus registers", "BYTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVisitor([]byte(tc.in), tc.model)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCodecVisitorConfigParsing(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     CodecVisitor
		err      string
	}{
		{"holding registers with the codec's keys beside", `{"codec":"thermo-codec","scale":0.1,"offset":-40,"wordOrder":"little","modbus":{"register":"HoldingRegister","offset":30,"limit":3}}`,
			CodecVisitor{Codec: "thermo-codec", Register: HoldingRegister, Offset: 30, Limit: 3}, ""},
		{"KubeEdge register name", `{"codec":"c","modbus":{"register":"CoilRegister","offset":0,"limit":16}}`, CodecVisitor{Codec: "c", Register: Coil, Limit: 16}, ""},
		{"Modbus keys at the top level", `{"codec":"c","register":"HoldingRegister","offset":1,"limit":3}`, CodecVisitor{}, `with a codec the Modbus keys go under "modbus"`},
		{"no modbus object", `{"codec":"c","scale":1}`, CodecVisitor{}, `"modbus": {"register", "offset", "limit"} is required`},
		{"typo in the modbus object", `{"codec":"c","modbus":{"register":"Coil","ofset":1,"limit":1}}`, CodecVisitor{}, `unknown field "ofset"`},
		{"dataType belongs to the codec", `{"codec":"c","modbus":{"register":"HoldingRegister","offset":1,"limit":2,"dataType":"float32"}}`, CodecVisitor{}, `unknown field "dataType"`},
		{"unknown register", `{"codec":"c","modbus":{"register":"Holding","offset":0,"limit":1}}`, CodecVisitor{}, `modbus.register "Holding" is not one of`},
		{"no offset", `{"codec":"c","modbus":{"register":"Coil","limit":1}}`, CodecVisitor{}, `"modbus.offset" (the 0-based address) is required`},
		{"no limit", `{"codec":"c","modbus":{"register":"InputRegister","offset":0}}`, CodecVisitor{}, `"modbus.limit" (how many InputRegisters the codec takes) is required`},
		{"limit above one read", `{"codec":"c","modbus":{"register":"HoldingRegister","offset":0,"limit":126}}`, CodecVisitor{}, "modbus.limit 126 out of range 1..125"},
		{"past the end", `{"codec":"c","modbus":{"register":"HoldingRegister","offset":65534,"limit":3}}`, CodecVisitor{}, "run past address 65535"},
		{"codec not a name", `{"codec":7,"modbus":{"register":"Coil","offset":0,"limit":1}}`, CodecVisitor{}, `"codec" 7: want the codec module's name`},
		{"the error names the codec", `{"codec":"thermo-codec","modbus":{"register":"Coil","offset":-1,"limit":1}}`, CodecVisitor{}, "(codec thermo-codec): modbus.offset -1 out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCodecVisitor([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}
