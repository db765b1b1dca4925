package words

import (
	"strings"
	"testing"
)

// Without dataType the model type decides, as in the modbus mapper: FLOAT over 2 words is a float32,
// INT over 2 an int32, BOOLEAN non-zero; the word orders apply; an explicit dataType wins; what
// cannot work is refused naming the model type.
func TestDecodeTakesTheModelTypeWhenTheVisitorHasNoDataType(t *testing.T) {
	for _, tc := range []struct {
		name, raw, visitor, model, want, err string
	}{
		{"FLOAT float32 23.75", "[16830,0]", `{"codec":"regs-codec"}`, "FLOAT", "23.75", ""},
		{"FLOAT word-swapped", "[0,16830]", `{"isRegisterSwap":true}`, "FLOAT", "23.75", ""},
		{"FLOAT byte-swapped", "[48705,0]", `{"isSwap":true}`, "FLOAT", "23.75", ""},
		{"DOUBLE 4 words float64", "[16439,49152,0,0]", `{}`, "DOUBLE", "23.75", ""},
		{"INT 1 word int16", "[65535]", `{}`, "INT", "-1", ""},
		{"INT 2 words int32 scaled", "[1,2]", `{"scale":0.5}`, "INT", "32769", ""},
		{"BOOLEAN non-zero", "[7]", `{}`, "BOOLEAN", "true", ""},
		{"explicit dataType wins", "[16830,0]", `{"dataType":"uint32"}`, "FLOAT", "1102970880", ""},
		{"FLOAT over 1 word", "[1]", `{}`, "FLOAT", "", "model type FLOAT with limit 1"},
		{"STRING refused", "[1]", `{}`, "STRING", "", "numbers and booleans only"},
		{"dataType not matching the words", "[1]", `{"dataType":"float32"}`, "FLOAT", "", "1 registers read, but float32 takes 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.raw), []byte(tc.visitor), tc.model)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Decode = %s, %v; want an error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("Decode = %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestEncodeTakesTheModelTypeAndTheTransportLimit(t *testing.T) {
	for _, tc := range []struct{ name, value, visitor, model, want string }{
		{"FLOAT default float32", "23.75", `{}`, "FLOAT", "[16830,0]"},
		{"FLOAT limit 4 from modbus.limit", "23.75", `{"modbus":{"limit":4}}`, "FLOAT", "[16439,49152,0,0]"},
		{"INT limit 2", "-2", `{"limit":2}`, "INT", "[65535,65534]"},
		{"BOOLEAN true", "true", `{}`, "BOOLEAN", "[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Encode([]byte(tc.value), []byte(tc.visitor), tc.model)
			if err != nil || string(got) != tc.want {
				t.Fatalf("Encode = %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}
