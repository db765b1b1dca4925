package pki

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadOrCreateCACreatesPrivateFilesOnFirstUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, created, err := LoadOrCreateCA(context.Background(), FileStorage{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Error("created = false for an empty directory")
	}
	if !ca.Certificate().IsCA {
		t.Error("the CA certificate is not a CA")
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("directory mode = %v (err %v); want 0700", info.Mode().Perm(), err)
	}
	for _, name := range []string{CACertName, CAKeyName, TokenSecretName} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v; want 0600", name, info.Mode().Perm())
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestLoadOrCreateCAReloadsTheSameCAAfterRestart(t *testing.T) {
	st := FileStorage{Dir: t.TempDir()}
	first, _, err := LoadOrCreateCA(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := testToken(t, first, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	second, created, err := LoadOrCreateCA(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("created = true when the CA was already there")
	}
	if !bytes.Equal(first.Certificate().Raw, second.Certificate().Raw) {
		t.Error("a restart produced a different CA certificate")
	}
	// Same token secret: a token made before the restart still verifies after it.
	if err := second.VerifyJWT(tok.JWT); err != nil {
		t.Errorf("token from before the restart: %v", err)
	}
	// Same key: a certificate issued after the restart chains to the CA from before it.
	cert, err := second.IssueNodeCert(newKey(t).Public(), "edge-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(first.Certificate()); err != nil {
		t.Errorf("certificate issued after restart does not chain to the CA: %v", err)
	}
}

func TestLoadOrCreateCANamesTheDamagedFile(t *testing.T) {
	otherDir := t.TempDir()
	if _, _, err := LoadOrCreateCA(context.Background(), FileStorage{Dir: otherDir}); err != nil {
		t.Fatal(err)
	}
	otherKey, _ := os.ReadFile(filepath.Join(otherDir, CAKeyName))
	tests := []struct {
		name   string
		damage func(dir string)
		want   string
	}{
		{"garbage certificate", func(dir string) { write(t, dir, CACertName, "not a certificate") }, "ca.crt in "},
		{"truncated certificate", func(dir string) { truncate(t, dir, CACertName) }, "ca.crt in "},
		{"garbage key", func(dir string) {
			write(t, dir, CAKeyName, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
		}, "ca.key in "},
		{"key of another CA", func(dir string) { write(t, dir, CAKeyName, string(otherKey)) }, "does not belong to ca.crt"},
		{"missing key", func(dir string) { remove(t, dir, CAKeyName) }, "read ca.key"},
		{"garbage token secret", func(dir string) { write(t, dir, TokenSecretName, "xyz") }, "token.secret in "},
		{"short token secret", func(dir string) { write(t, dir, TokenSecretName, "abcd") }, "token.secret in "},
		{"key without certificate", func(dir string) { remove(t, dir, CACertName) }, "ca.key in "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := LoadOrCreateCA(context.Background(), FileStorage{Dir: dir}); err != nil {
				t.Fatal(err)
			}
			tt.damage(dir)
			ca, _, err := LoadOrCreateCA(context.Background(), FileStorage{Dir: dir})
			if !errorContains(err, tt.want) || !errorContains(err, dir) {
				t.Fatalf("err = %v; want it to name %q in %s", err, tt.want, dir)
			}
			if ca != nil {
				t.Error("a CA was returned along with the error")
			}
		})
	}
}

func TestLoadOrCreateCAAddsTokenSecretToAnImportedCA(t *testing.T) {
	st := FileStorage{Dir: t.TempDir()}
	first, _, err := LoadOrCreateCA(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	remove(t, st.Dir, TokenSecretName) // as if ca.crt and ca.key were copied from a KubeEdge cloudcore
	second, created, err := LoadOrCreateCA(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if created || !bytes.Equal(first.Certificate().Raw, second.Certificate().Raw) {
		t.Error("the imported CA was replaced")
	}
	if _, err := os.Stat(filepath.Join(st.Dir, TokenSecretName)); err != nil {
		t.Errorf("no token secret stored: %v", err)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, dir, name string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, name, string(data[:len(data)/2]))
}

func remove(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}
