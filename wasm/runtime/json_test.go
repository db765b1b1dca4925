package wasmruntime

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, in := range []string{
		``, ` `, `null`, ` true `, `false`, `nul`, `truex`, `0`, `-0`, `01`, `-`, `1.`, `1.5`, `1e`, `1e+`, `1E-7`,
		`-12.5e10`, `"a"`, `"a`, `"\u00e9\n\"\\\/\b\f\r\t"`, `"\u12"`, `"\x"`, "\"\x01\"", "\"\xff\"",
		`{}`, `{ }`, `{"a":1}`, `{"a" : [1, 2, {"b": null}] }`, `{"a":1,}`, `{a:1}`, `{"a"}`, `{"a":}`,
		`[]`, `[1,]`, `[,1]`, `[1 2]`, `1 2`, `{"a":1}}`, "\t[1]\r\n", deep(maxDepth), deep(maxDepth + 1),
	} {
		if got, want := validJSON([]byte(in)), json.Valid([]byte(in)); got != want {
			t.Errorf("validJSON(%.40q) = %v, encoding/json says %v", in, got, want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,"x\u00e9",true,null]}`, `[[[]]]`, `"\"`, `-0.0E+1`, `{"a" 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}

func BenchmarkValidJSON1KiB(b *testing.B) {
	doc := []byte(`{"name":"sensor-1","values":[` + strings.Repeat(`12.5,`, 150) + `1],"unit":"degC","ok":true}`)
	b.SetBytes(int64(len(doc)))
	b.Run("validJSON", func(b *testing.B) {
		for b.Loop() {
			validJSON(doc)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			json.Valid(doc)
		}
	})
}

func BenchmarkValidJSONString1KiB(b *testing.B) {
	doc := []byte(`"` + strings.Repeat("x", 1022) + `"`)
	b.SetBytes(int64(len(doc)))
	b.Run("validJSON", func(b *testing.B) {
		for b.Loop() {
			validJSON(doc)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			json.Valid(doc)
		}
	})
}
