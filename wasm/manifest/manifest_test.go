package manifest

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// empty is the smallest valid WebAssembly module: the header alone.
var empty = []byte("\x00asm\x01\x00\x00\x00")

func TestParseFillsDefaultsAndRejectsMistakesNamingTheField(t *testing.T) {
	m, err := Parse([]byte(`{"abi":1,"capabilities":{"send":{"modules":["twin-*"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Limits.MemoryPages != DefaultMemoryPages || time.Duration(m.Limits.Deadline) != DefaultDeadline ||
		time.Duration(m.Limits.InitDeadline) != DefaultInitDeadline {
		t.Fatalf("defaults not filled in: %+v", m.Limits)
	}
	tests := []struct{ in, want string }{
		{`{"abi":2}`, "abi is 2, this host speaks ABI version 1"},
		{`{"abi":1,"limits":{"memoryPages":70000}}`, "limits.memoryPages 70000 exceeds 65536"},
		{`{"abi":1,"limits":{"deadline":"-1s"}}`, "limits.deadline -1s is negative"},
		{`{"abi":1,"limits":{"deadline":5}}`, `a duration is a string such as "50ms"`},
		{`{"abi":1,"limits":{"deadline":"soon"}}`, `invalid duration "soon"`},
		{`{"abi":1,"capabilities":{"send":{"resources":["a*b"]}}}`, `capabilities.send.resources[0] "a*b"`},
		{`{"abi":1,"capabilities":{"send":{"groups":[""]}}}`, `capabilities.send.groups[0] ""`},
		{`{"abi":1,"capabilities":{"stor":true}}`, `unknown field "stor"`},
		{`{"abi":1} {}`, "data after the JSON object"},
		{`[1]`, "cannot unmarshal array"},
	}
	for _, tt := range tests {
		if _, err := Parse([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%s) = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func TestParseYAMLReadsWhatAuthorsWrite(t *testing.T) {
	m, err := ParseYAML([]byte("abi: 1\nversion: 1.2.0\nlimits:\n  memoryPages: 64\n  deadline: 250ms\ncapabilities:\n  send:\n    modules: [devicetwin]\n    resources: [device/*]\n  store: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Manifest{ABI: 1, Version: "1.2.0",
		Limits:       Limits{MemoryPages: 64, Deadline: Duration(250 * time.Millisecond), InitDeadline: Duration(DefaultInitDeadline)},
		Capabilities: Capabilities{Send: Send{Modules: []string{"devicetwin"}, Resources: []string{"device/*"}}, Store: true}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	for in, problem := range map[string]string{"- a\n- b\n": "expected a mapping", "abi: 1\nlog: true\n": `unknown field "log"`, "abi: [": "yaml"} {
		if _, err := ParseYAML([]byte(in)); err == nil || !strings.Contains(err.Error(), problem) {
			t.Errorf("ParseYAML(%q) = %v, want %q", in, err, problem)
		}
	}
}

func TestEmbedThenReadGivesTheManifestAndTheCodeWithoutIt(t *testing.T) {
	m := Manifest{ABI: 1, Version: "1", Capabilities: Capabilities{Log: true}}
	packed, err := Embed(empty, m)
	if err != nil {
		t.Fatal(err)
	}
	got, code, err := Split(packed)
	if err != nil {
		t.Fatal(err)
	}
	m.applyDefaults()
	if !reflect.DeepEqual(got, m) || !bytes.Equal(code, empty) {
		t.Fatalf("Split = %+v, %x", got, code)
	}
	m.Version = "2"
	repacked, err := Embed(packed, m)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Read(repacked); err != nil || got.Version != "2" {
		t.Fatalf("repacking did not replace the manifest: %+v %v", got, err)
	}
	// A section after the manifest: Split must cut the manifest out of the middle.
	trailing := append(bytes.Clone(packed), customSection("other", []byte("x"))...)
	if _, code, err := Split(trailing); err != nil || !bytes.Equal(code, append(bytes.Clone(empty), customSection("other", []byte("x"))...)) {
		t.Fatalf("Split with a later section: %x %v", code, err)
	}
}

func TestReadRejectsWhatIsNotAPackedModule(t *testing.T) {
	packed, _ := Embed(empty, Manifest{ABI: 1})
	tests := []struct {
		name string
		in   []byte
		want error
		text string
	}{
		{"text file", []byte("hello, world\n"), ErrNotWASM, "does not start with the \\0asm magic"},
		{"version 2", []byte("\x00asm\x02\x00\x00\x00"), ErrNotWASM, "binary format version"},
		{"section size past the end", append(bytes.Clone(empty), 1, 10, 0), ErrNotWASM, "claims 10 bytes, 1 left"},
		{"size longer than 32 bits", append(bytes.Clone(empty), 1, 0xff, 0xff, 0xff, 0xff, 0x7f), ErrNotWASM, "exceeds 32 bits"},
		{"truncated size", append(bytes.Clone(empty), 1, 0x80), ErrNotWASM, "truncated"},
		{"custom name too long", append(bytes.Clone(empty), 0, 2, 5, 'a'), ErrNotWASM, "malformed name"},
		{"no manifest", empty, ErrNoManifest, "pack the guest with wasmpack"},
		{"two manifests", append(bytes.Clone(packed), customSection(SectionName, []byte(`{"abi":1}`))...), nil, "2 kedge.manifest sections"},
		{"broken manifest", append(bytes.Clone(empty), customSection(SectionName, []byte(`{"abi":`))...), nil, "manifest: unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(tt.in)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Read error = %v, want %v with %q", err, tt.want, tt.text)
			}
		})
	}
}

func TestMatchTakesExactNamesAndPrefixes(t *testing.T) {
	tests := []struct {
		patterns []string
		s        string
		want     bool
	}{
		{nil, "anything", false},
		{[]string{"*"}, "", true},
		{[]string{"sink"}, "sink", true},
		{[]string{"sink"}, "sink2", false},
		{[]string{"twin-*"}, "twin-", true},
		{[]string{"twin-*"}, "twin-a", true},
		{[]string{"twin-*"}, "twin", false},
		{[]string{"a", "device/*"}, "device/d1/x", true},
	}
	for _, tt := range tests {
		if got := Match(tt.patterns, tt.s); got != tt.want {
			t.Errorf("Match(%q, %q) = %v", tt.patterns, tt.s, got)
		}
	}
}

func customSection(name string, payload []byte) []byte {
	body := appendULEB(nil, uint32(len(name)))
	body = append(append(body, name...), payload...)
	return append(appendULEB([]byte{0}, uint32(len(body))), body...)
}

func FuzzRead(f *testing.F) {
	packed, _ := Embed(empty, Manifest{ABI: 1, Capabilities: Capabilities{Send: Send{Modules: []string{"a*"}}}})
	f.Add(packed)
	f.Add(empty)
	f.Add([]byte("not wasm"))
	f.Add(append(bytes.Clone(empty), 0, 0x80, 0x80, 0x80, 0x80, 0x10))
	f.Add(append(bytes.Clone(empty), customSection(SectionName, []byte(`{"abi":1,"capabilities":{"send":{"modules":[]}}}`))...))
	f.Fuzz(func(t *testing.T, wasm []byte) {
		m, code, err := Split(wasm)
		if err != nil {
			return
		}
		// Whatever Read accepts, Embed writes back so that Read returns the same manifest.
		again, err := Embed(code, m)
		if err != nil {
			t.Fatalf("Embed of an accepted manifest: %v", err)
		}
		if got, err := Read(again); err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("re-read %+v, %v; want %+v", got, err, m)
		}
	})
}
