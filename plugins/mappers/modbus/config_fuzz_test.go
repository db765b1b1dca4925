package modbus

import (
	"strings"
	"testing"
)

// FuzzParseVisitor feeds the visitor parser arbitrary configData and model types: it never panics,
// and what it accepts can be read — a known register table, a data type of 1, 2 or 4 registers or
// a text of at least one, all within the address space, nothing but one bit for coils and discrete
// inputs. Seed corpus: testdata/fuzz/FuzzParseVisitor (plus the cases below).
// Run: go test -run XXX -fuzz FuzzParseVisitor -fuzztime 60s ./plugins/mappers/modbus/
func FuzzParseVisitor(f *testing.F) {
	for _, s := range []struct{ visitor, model string }{
		{`{"register":"HoldingRegister","offset":0,"limit":2,"scale":1,"isSwap":true,"isRegisterSwap":true}`, "FLOAT"},
		{`{"register":"HoldingRegister","offset":0,"limit":4}`, "INT"},
		{`{"register":"InputRegister","offset":65534,"limit":2}`, "FLOAT"},
		{`{"register":"CoilRegister","offset":4,"limit":1}`, "BOOLEAN"},
		{`{"register":"HoldingRegister","offset":10,"limit":8}`, "STRING"},
		{`{"register":"HoldingRegister","offset":0,"limit":1}`, "FLOAT"},
		{`{"register":"Coil","offset":0}`, "STRING"},
		{`{"register":"HoldingRegister","offset":1,"dataType":"int32","valueOffset":-40,"scale":0.1}`, ""},
		{`{"register":"HoldingRegister","offset":-1}`, "INT"},
		{`{"register":"HoldingRegister","offset":0,"limit":126}`, "STRING"},
		{`{}`, ""},
		{`[1,2]`, "INT"},
	} {
		f.Add([]byte(s.visitor), s.model)
	}
	f.Fuzz(func(t *testing.T, data []byte, model string) {
		v, err := ParseVisitor(data, model)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "modbus visitor configData") {
				t.Fatalf("error %q does not say it is about the visitor configData", err)
			}
			return
		}
		switch v.Register {
		case Coil, DiscreteInput:
			if v.Text != 0 || v.Value.Type != "" {
				t.Fatalf("%s accepted with a register data type: %+v", v.Register, v)
			}
			return
		case HoldingRegister, InputRegister:
		default:
			t.Fatalf("accepted unknown register %q", v.Register)
		}
		n := v.Value.Type.Registers()
		if v.Text > 0 {
			n = int(v.Text)
		} else if err := v.Value.Validate(); err != nil {
			t.Fatalf("accepted a value spec that does not validate: %v (%+v)", err, v)
		}
		if n < 1 || n > 125 || int(v.Offset)+n > 0x10000 {
			t.Fatalf("accepted %d registers at offset %d", n, v.Offset)
		}
		mt := strings.ToUpper(model)
		if v.Text > 0 && mt != "STRING" && !strings.Contains(strings.ToLower(string(data)), "datatype") {
			t.Fatalf("text for model type %q without a dataType", model)
		}
	})
}
