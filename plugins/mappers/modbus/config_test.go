package modbus

import (
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

func TestProtocolConfigParsing(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     ProtocolConfig
		err      string
	}{
		{"full", `{"address":"127.0.0.1:502","unitID":3,"timeout":"250ms"}`, ProtocolConfig{"127.0.0.1:502", 3, 250 * time.Millisecond}, ""},
		{"defaults", `{"address":"plc:1502"}`, ProtocolConfig{"plc:1502", 1, time.Second}, ""},
		{"KubeEdge spelling", `{"ip":"10.0.0.5","port":"5020","slaveID":7}`, ProtocolConfig{"10.0.0.5:5020", 7, time.Second}, ""},
		{"timeout in ms", `{"address":"h:1","timeout":1500}`, ProtocolConfig{"h:1", 1, 1500 * time.Millisecond}, ""},
		{"missing address", `{}`, ProtocolConfig{}, `"address" is required`},
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
			if err != nil || got != tc.want {
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
	}{
		{"float32 word-swapped", `{"register":"HoldingRegister","offset":0,"limit":2,"dataType":"float32","scale":0.1,"swapByte":false,"swapWord":true}`,
			Visitor{HoldingRegister, 0, mbtcp.ValueSpec{Type: mbtcp.Float32, Scale: 0.1, SwapWord: true}}, ""},
		{"default uint16", `{"register":"InputRegister","offset":9}`, Visitor{InputRegister, 9, mbtcp.ValueSpec{Type: mbtcp.Uint16}}, ""},
		{"limit 2 means uint32", `{"register":"InputRegister","offset":9,"limit":2}`, Visitor{InputRegister, 9, mbtcp.ValueSpec{Type: mbtcp.Uint32}}, ""},
		{"KubeEdge names", `{"register":"CoilRegister","offset":4,"limit":1}`, Visitor{Coil, 4, mbtcp.ValueSpec{}}, ""},
		{"KubeEdge swaps", `{"register":"HoldingRegister","offset":1,"dataType":"int32","isSwap":true,"isRegisterSwap":true,"valueOffset":-40}`,
			Visitor{HoldingRegister, 1, mbtcp.ValueSpec{Type: mbtcp.Int32, Offset: -40, SwapByte: true, SwapWord: true}}, ""},
		{"unknown register", `{"register":"Holding","offset":0}`, Visitor{}, `register "Holding" is not one of`},
		{"no offset", `{"register":"Coil"}`, Visitor{}, `"offset" (the 0-based address) is required`},
		{"offset too big", `{"register":"Coil","offset":70000}`, Visitor{}, "offset 70000 out of range"},
		{"limit disagrees with type", `{"register":"HoldingRegister","offset":0,"limit":1,"dataType":"float32"}`, Visitor{}, "limit 1 but dataType float32 takes 2 registers"},
		{"unknown type", `{"register":"HoldingRegister","offset":0,"dataType":"float64"}`, Visitor{}, `data type "float64" is not one of`},
		{"zero scale", `{"register":"HoldingRegister","offset":0,"scale":0}`, Visitor{}, "scale 0 would make every value 0"},
		{"coil with a type", `{"register":"Coil","offset":0,"dataType":"int16"}`, Visitor{}, "apply to registers, not to Coil"},
		{"several coils", `{"register":"DiscreteInput","offset":0,"limit":8}`, Visitor{}, "limit 8 for DiscreteInput"},
		{"past the end", `{"register":"HoldingRegister","offset":65535,"dataType":"int32"}`, Visitor{}, "runs past address 65535"},
		{"typo", `{"register":"Coil","ofset":1}`, Visitor{}, `unknown field "ofset"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVisitor([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
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
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}
