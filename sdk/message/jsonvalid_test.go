package message

import (
	"encoding/json"
	"strings"
	"testing"
)

var jsonCases = []string{
	``, ` `, `0`, `-0`, `-`, `01`, `1.`, `.5`, `1.5e`, `1e+`, `1E-7`, `-12.5e+3`, `1 2`, `true`, `tru`, `nulls`,
	`"`, `"a`, `"\u00e9"`, `"\u00g9"`, `"\x"`, `"\/"`, "\"\x01\"", "\"\xff\xfe\"", `"a\"b"`,
	`{}`, `{ }`, `{"a":1}`, `{"a" : [1, {"b": null}] }`, `{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`, `{1:2}`,
	`[]`, `[ ]`, `[1,2]`, `[1,]`, `[,1]`, `[1 2]`, `[[[]]]`, `[[]`, `[]]`, `{"a":1}}`, "\t[1]\r\n",
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
	strings.Repeat(`{"a":`, 10000) + "{}" + strings.Repeat("}", 10000),
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range jsonCases {
		if got, want := ValidJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("ValidJSON(%.40q) = %v, json.Valid says %v", c, got, want)
		}
	}
}

// FuzzValidJSON holds validJSON to exactly json.Valid's answer on any input.
func FuzzValidJSON(f *testing.F) {
	for _, c := range jsonCases {
		if len(c) < 200 {
			f.Add([]byte(c))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := ValidJSON(b), json.Valid(b); got != want {
			t.Fatalf("ValidJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

func BenchmarkValidJSON1KiB(b *testing.B) {
	doc := []byte(`{"metadata":{"name":"nginx","labels":{"app":"web"}},"spec":{"containers":[{"image":"nginx:1.27","ports":[80,443]}]},"note":"` + strings.Repeat("k", 900) + `"}`)
	b.Run("hub", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for range b.N {
			ValidJSON(doc)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for range b.N {
			json.Valid(doc)
		}
	})
}

// TestValidJSONFindsEveryStringEventAtEveryOffset puts each byte a string must stop at (and bytes it
// must not stop at) at every position of a 24-byte run, so each lands at every offset mod 8 of the
// eight-byte scan, after both the word loop and the byte tail.
func TestValidJSONFindsEveryStringEventAtEveryOffset(t *testing.T) {
	events := []struct {
		name  string
		event string
	}{
		{"quote ends the string early", `"`},
		{"escaped quote", `\"`},
		{"escaped backslash", `\\`},
		{"unicode escape", `\u00e9`},
		{"bad escape", `\x`},
		{"truncated unicode escape", `\u12`},
		{"control character 0x00", "\x00"},
		{"control character 0x1f", "\x1f"},
		{"space 0x20 is plain", " "},
		{"DEL 0x7f is plain", "\x7f"},
		{"high byte 0x80 is plain", "\x80"},
		{"high byte 0xff is plain", "\xff"},
		{"UTF-8 é is plain", "é"},
		{"bytes next to the specials are plain", "!#[]"},
	}
	for _, e := range events {
		t.Run(e.name, func(t *testing.T) {
			for pad := range 24 {
				for tail := range 10 {
					doc := `"` + strings.Repeat("a", pad) + e.event + strings.Repeat("b", tail) + `"`
					for _, c := range []string{doc, "[" + doc + "]", `{"k":` + doc + `}`, doc[:len(doc)-1]} {
						if got, want := ValidJSON([]byte(c)), json.Valid([]byte(c)); got != want {
							t.Fatalf("ValidJSON(%q) = %v, json.Valid says %v", c, got, want)
						}
					}
				}
			}
		})
	}
}
