package mapper

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

func TestFormatValueRendersDriverValuesForTheModelTypeAndRefusesMisfits(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		v    Value
		want string
		err  string
	}{
		{"INT", int64(42), "42", ""},
		{"INT", uint16(7), "7", ""},
		{"INT", 3.0, "3", ""},
		{"INT", 3.5, "", "not a whole number"},
		{"INT", "12", "12", ""},
		{"INT", "warm", "", "not an INT"},
		{"FLOAT", 21.25, "21.25", ""},
		{"DOUBLE", int32(-4), "-4", ""},
		{"FLOAT", true, "", "does not fit type FLOAT"},
		{"BOOLEAN", true, "true", ""},
		{"BOOLEAN", "yes", "", "not a BOOLEAN"},
		{"STRING", "eco", "eco", ""},
		{"STRING", 5, "5", ""},
		{"BYTES", []byte{1, 2}, "AQI=", ""},
		{"WEIRD", 1, "", `unknown property type "WEIRD"`},
	} {
		got, err := FormatValue(tc.typ, tc.v)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("FormatValue(%s, %v) error = %v, want %q", tc.typ, tc.v, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("FormatValue(%s, %v) = %q, %v; want %q", tc.typ, tc.v, got, err, tc.want)
		}
	}
}

func TestParseValueGivesTheGoTypeOfTheModelType(t *testing.T) {
	for _, tc := range []struct {
		typ, s string
		want   Value
		bad    bool
	}{
		{"INT", "42", int64(42), false},
		{"INT", "4.2", nil, true},
		{"float", "4.5", 4.5, false},
		{"DOUBLE", "NaN", nil, true},
		{"BOOLEAN", "false", false, false},
		{"BOOLEAN", "maybe", nil, true},
		{"STRING", "x", "x", false},
	} {
		got, err := ParseValue(tc.typ, tc.s)
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("ParseValue(%s, %q) = %v (%T), %v", tc.typ, tc.s, got, got, err)
		}
	}
}

func TestConfigDataWrappersBecomeOneJSONObject(t *testing.T) {
	mk := func(v any) *anypb.Any {
		var a *anypb.Any
		var err error
		switch x := v.(type) {
		case string:
			a, err = anypb.New(wrapperspb.String(x))
		case int64:
			a, err = anypb.New(wrapperspb.Int64(x))
		case float64:
			a, err = anypb.New(wrapperspb.Double(x))
		case bool:
			a, err = anypb.New(wrapperspb.Bool(x))
		}
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	got, err := configJSON(&dmiv1beta1.CustomizedValue{Data: map[string]*anypb.Any{
		"host": mk("10.0.0.7"), "port": mk(int64(502)), "ratio": mk(0.5), "tls": mk(true), "extra": mk(`{"a":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"extra":{"a":1},"host":"10.0.0.7","port":502,"ratio":0.5,"tls":true}`
	if string(got) != want {
		t.Fatalf("configJSON = %s, want %s", got, want)
	}
	if got, err := configJSON(nil); err != nil || string(got) != "{}" {
		t.Fatalf("configJSON(nil) = %s, %v; want {}", got, err)
	}
	bad, _ := anypb.New(&dmiv1beta1.MapperInfo{Name: "x"})
	if _, err := configJSON(&dmiv1beta1.CustomizedValue{Data: map[string]*anypb.Any{"odd": bad}}); err == nil || !strings.Contains(err.Error(), `"odd"`) {
		t.Fatalf("configJSON with a non-wrapper value: err = %v, want one naming key odd", err)
	}
}

func TestNewMapperRefusesBadSettingsNamingThem(t *testing.T) {
	m := New("", nil)
	m.Socket = "relative.sock"
	m.CallTimeout = 0
	err := m.Validate()
	for _, want := range []string{"no driver", "protocol: must not be empty", `socket: "relative.sock" is not an absolute path`, "callTimeout: must be positive, got 0s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
	}
}
