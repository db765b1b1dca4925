package config

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzDecode feeds arbitrary YAML and one arbitrary --set value through Decode into the
// representative schema. Properties: no panic; every failure is a one-line *Error (the schema
// is valid, so a plain programming error would be a bug); and whatever decodes successfully
// renders to YAML that decodes back to the same values.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("node: {name: edge1, labels: {zone: a}}\ntimeout: 10s\n"), "limits.port=8080")
	f.Add([]byte("limits: {port: 70000}\n"), "tags=a,b")
	f.Add([]byte("modules: {eventbus: {qos: abc}}\n"), "modules.eventbus.qos=2")
	f.Fuzz(func(t *testing.T, data []byte, set string) {
		var tree map[string]any
		if yaml.Unmarshal(data, &tree) != nil {
			return
		}
		ov, err := ParseSet([]string{set})
		checkErr(t, err)
		cfg := defaults()
		err = Decode("fuzz.yaml", tree, "", &ov, &cfg)
		checkErr(t, err)
		var eb eventbusConfig
		checkErr(t, Decode("fuzz.yaml", tree, "modules.eventbus", &ov, &eb))
		for _, e := range ov.Unused() {
			checkErr(t, e)
		}
		if err != nil || hasNaN(reflect.ValueOf(cfg)) {
			return // NaN != NaN, so the round trip cannot compare equal
		}
		n, err := Node(&cfg, false)
		if err != nil {
			t.Fatalf("Node: %v", err)
		}
		out, err := Render(n)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		var back map[string]any
		if err := yaml.Unmarshal(out, &back); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, out)
		}
		var again testConfig
		if err := Decode("rendered.yaml", back, "", nil, &again); err != nil {
			t.Fatalf("rendered YAML does not decode: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(again, cfg) {
			t.Fatalf("round trip changed values\n got  %#v\n want %#v\nfrom:\n%s", again, cfg, out)
		}
	})
}

func checkErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("not a *Error: %v (%T)", err, err)
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Fatalf("message spans lines: %q", err)
	}
}

func hasNaN(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		return math.IsNaN(v.Float())
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && hasNaN(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			if hasNaN(v.Field(i)) {
				return true
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			if hasNaN(v.Index(i)) {
				return true
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if hasNaN(it.Value()) {
				return true
			}
		}
	}
	return false
}
