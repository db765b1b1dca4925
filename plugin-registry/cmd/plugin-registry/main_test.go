package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func cli(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String() + errb.String()
}

func TestCLIPublishesSignsVerifiesListsAndServes(t *testing.T) {
	dir, keys, src := t.TempDir(), t.TempDir(), t.TempDir()
	art := filepath.Join(src, "mapper")
	if err := os.WriteFile(art, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"keygen writes a key pair", []string{"keygen", "--out", keys}, 0, "key id"},
		{"publish 1.0.0", []string{"publish", "--dir", dir, "--name", "modbus", "--version", "1.0.0", "--kind", "mapper", "--runtime", "process", "--os", "linux", "--arch", "arm64", art}, 0, "published modbus 1.0.0 (process/linux/arm64)"},
		{"publish 1.1.0", []string{"publish", "--dir", dir, "--name", "modbus", "--version", "1.1.0", "--kind", "mapper", "--runtime", "process", art}, 0, "copying"},
		{"publish refuses a version that is not semver", []string{"publish", "--dir", dir, "--name", "modbus", "--version", "1.2", "--kind", "mapper", "--runtime", "process", art}, 1, `version "1.2" is not semver`},
		{"publish refuses a wasm artifact without manifest", []string{"publish", "--dir", dir, "--name", "modbus", "--version", "1.2.0", "--kind", "mapper", "--runtime", "wasm", art}, 1, "not a WebAssembly module"},
		{"publish refuses an unknown kind", []string{"publish", "--dir", dir, "--name", "modbus", "--version", "1.2.0", "--kind", "driver", "--runtime", "process", art}, 1, `kind "driver": module or mapper`},
		{"ls before sign shows the draft", []string{"ls", "--dir", dir, "--draft"}, 0, "modbus  1.1.0"},
		{"sign", []string{"sign", "--dir", dir, "--key", filepath.Join(keys, "registry.key"), "--expires", "1h"}, 0, "index version 1, 2 plugin version(s)"},
		{"sign again bumps the version", []string{"sign", "--dir", dir, "--key", filepath.Join(keys, "registry.key")}, 0, "index version 2"},
		{"verify the folder and its artifacts", []string{"verify", "--dir", dir, "--key", filepath.Join(keys, "registry.pub"), "--state", filepath.Join(src, "state")}, 0, "verified"},
		{"ls with the key", []string{"ls", "--dir", dir, "--key", filepath.Join(keys, "registry.pub")}, 0, "signature by"},
		{"ls without a key says so", []string{"ls", "--dir", dir}, 0, "signature NOT checked"},
		{"verify with the private key file is refused", []string{"verify", "--dir", dir, "--key", filepath.Join(keys, "registry.key")}, 1, `expected "PUBLIC KEY"`},
		{"unknown flag is a usage error", []string{"sign", "--dir", dir, "--bogus"}, 2, "unknown flag"},
		{"dir and url together", []string{"ls", "--dir", dir, "--url", "https://x/"}, 1, "none of the others can be"},
	}
	for _, s := range steps {
		code, out := cli(t, s.args...)
		if code != s.code || !strings.Contains(out, s.out) {
			t.Fatalf("%s: exit %d, output:\n%s\nwant exit %d containing %q", s.name, code, out, s.code, s.out)
		}
	}

	// A tampered artifact fails verify.
	entries, _ := os.ReadDir(filepath.Join(dir, "artifacts"))
	if err := os.WriteFile(filepath.Join(dir, "artifacts", entries[0].Name()), []byte("v9"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := cli(t, "verify", "--dir", dir, "--key", filepath.Join(keys, "registry.pub")); code != 1 || !strings.Contains(out, "does not match the index") {
		t.Fatalf("tampered artifact: exit %d\n%s", code, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "artifacts", entries[0].Name()), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}

	// serve (plain HTTP with --insecure, on a port the OS picks) and verify through it.
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuf{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dir", dir, "--addr", "127.0.0.1:0", "--insecure"}, logs, logs)
	}()
	re := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+/)`)
	var url string
	for deadline := time.Now().Add(10 * time.Second); url == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			url = m[1]
		}
	}
	if url == "" {
		cancel()
		t.Fatalf("serve did not start:\n%s", logs.String())
	}
	code, out := cli(t, "verify", "--url", url, "--key", filepath.Join(keys, "registry.pub"), "--state", filepath.Join(src, "state"))
	if code != 0 || !strings.Contains(out, "checking modbus 1.1.0") || !strings.Contains(out, "recorded index version 2") {
		t.Fatalf("verify --url: exit %d\n%s", code, out)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d\n%s", code, logs.String())
	}
	if code, out := cli(t, "serve", "--dir", dir, "--addr", "127.0.0.1:0"); code != 1 || !strings.Contains(out, "--tls-cert and --tls-key are required") {
		t.Fatalf("serve without TLS: exit %d\n%s", code, out)
	}
}
