package cloudhub

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugin-registry/client"
	"github.com/kedge-io/kedge/plugin-registry/registry"
	"github.com/kedge-io/kedge/sdk"
)

// signedRegistry makes a registry folder with one signed plugin (a process artifact) and returns
// it with the registry's public key.
func signedRegistry(t *testing.T) (string, ed25519.PublicKey) {
	t.Helper()
	dir := t.TempDir()
	art := filepath.Join(t.TempDir(), "modbus")
	if err := os.WriteFile(art, []byte("#!/bin/sh\necho modbus v2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Publish(dir, registry.PublishRequest{Name: "modbus", Version: "2.0.0", Kind: "mapper", API: sdk.APIVersion,
		Runtime: "process", OS: "linux", Arch: "amd64", Path: art}); err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Sign(dir, key, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir, pub
}

// tlsFor is a client TLS config trusting the cloud's CA, presenting the certificate in certFile
// (none when empty).
func tlsFor(t *testing.T, caFile, certFile, keyFile string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func get(t *testing.T, cfg *tls.Config, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRegistryIsServedOnTheCertServerToNodeCertificatesOnlyAndJoinStillWorks(t *testing.T) {
	dir, pub := signedRegistry(t)
	c := startCloud(t, func(m *Module) { m.RegistryDir = dir })
	edge := c.join(t, "edge-1") // join (token, no client certificate) works with the registry mounted
	other := startCloud(t, nil) // another cloud: its node certificates are not ours
	stranger := other.join(t, "edge-1")
	base := "https://" + c.hub.CertServerAddress
	index, err := os.ReadFile(filepath.Join(dir, registry.SignedFile))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		cfg        *tls.Config
		path       string
		wantStatus int
		wantBody   string
	}{
		{"a node certificate gets index.json", tlsFor(t, edge.CAFile, edge.CertFile, edge.KeyFile), "/registry/index.json", 200, string(index)},
		{"no client certificate is refused", tlsFor(t, edge.CAFile, "", ""), "/registry/index.json", 401, "node certificate"},
		{"no client certificate gets no artifact", tlsFor(t, edge.CAFile, "", ""), "/registry/artifacts/" + strings.Repeat("a", 64), 401, "node certificate"},
		{"another cloud's node certificate is refused", tlsFor(t, edge.CAFile, stranger.CertFile, stranger.KeyFile), "/registry/index.json", 403, "not accepted"},
		{"a node certificate gets 404 for an unknown artifact", tlsFor(t, edge.CAFile, edge.CertFile, edge.KeyFile), "/registry/artifacts/" + strings.Repeat("a", 64), 404, "not found"},
		{"ca.crt still needs no certificate", tlsFor(t, edge.CAFile, "", ""), pki.CAPath, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := get(t, tt.cfg, base+tt.path)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("GET %s: %d %q, want %d containing %q", tt.path, status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}

	// The edge's registry client verifies the index and downloads the artifact through the mount.
	cl, err := client.New(base+"/registry/", []ed25519.PublicKey{pub}, sdk.APIVersion, tlsFor(t, edge.CAFile, edge.CertFile, edge.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := cl.Index(context.Background())
	if err != nil {
		t.Fatalf("index through /registry/: %v", err)
	}
	p, err := idx.Find("modbus", "2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "modbus")
	if _, err := cl.Download(context.Background(), p, "process", "linux", "amd64", dst); err != nil {
		t.Fatalf("download through /registry/: %v", err)
	}
	if b, _ := os.ReadFile(dst); !strings.Contains(string(b), "modbus v2") {
		t.Fatalf("downloaded %q", b)
	}

	// Renewal and a second join still go through the certificate server.
	c.join(t, "edge-2")
}

func TestRegistryDirThatIsNotAFolderFailsTheStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, dir := range map[string]string{"missing": filepath.Join(t.TempDir(), "nope"), "a file": file} {
		t.Run(name, func(t *testing.T) {
			_, err := tryStartCloud(t, func(m *Module) { m.RegistryDir = dir })
			if err == nil || !strings.Contains(err.Error(), "registryDir") {
				t.Fatalf("start with registryDir %s: %v, want an error naming registryDir", dir, err)
			}
		})
	}
}
