package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-io/kedge/wasm/manifest"
)

func TestPackEmbedsTheManifestAndRepackingReplacesIt(t *testing.T) {
	dir := t.TempDir()
	in, out, yaml := filepath.Join(dir, "guest.wasm"), filepath.Join(dir, "module.wasm"), filepath.Join(dir, "m.yaml")
	write(t, in, "\x00asm\x01\x00\x00\x00")
	write(t, yaml, "abi: 1\nversion: 1.0.0\ncapabilities:\n  log: true\n")
	if err := pack(yaml, in, out, "", true); err != nil {
		t.Fatal(err)
	}
	write(t, yaml, "abi: 1\nversion: 2.0.0\n")
	if err := pack(yaml, out, out, "", true); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	m, err := manifest.Read(b)
	if err != nil || m.Version != "2.0.0" || m.Capabilities.Log {
		t.Fatalf("packed manifest %+v, %v", m, err)
	}
	if err := show(out, "", true); err != nil {
		t.Fatal(err)
	}
}

func TestPackRefusesBadInputNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	good, text, yaml, bad := filepath.Join(dir, "g.wasm"), filepath.Join(dir, "notes.txt"), filepath.Join(dir, "m.yaml"), filepath.Join(dir, "bad.yaml")
	write(t, good, "\x00asm\x01\x00\x00\x00")
	write(t, text, "not a module")
	write(t, yaml, "abi: 1\n")
	write(t, bad, "abi: 1\ncapabilities:\n  sotre: true\n")
	out := filepath.Join(dir, "out.wasm")
	for _, tt := range []struct{ manifest, in, want string }{
		{bad, good, bad + `: manifest: json: unknown field "sotre"`},
		{yaml, text, text + ": not a WebAssembly module"},
		{yaml, filepath.Join(dir, "missing.wasm"), "no such file"},
	} {
		if err := pack(tt.manifest, tt.in, out, "", true); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("pack(%s, %s) = %v, want %q", tt.manifest, tt.in, err, tt.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("a failed pack left an output file")
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
