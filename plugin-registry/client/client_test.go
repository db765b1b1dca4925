package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/plugin-registry/registry"
	"github.com/kedge-io/kedge/plugin-registry/server"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// pki is a CA with a server certificate for 127.0.0.1 and a node (client) certificate.
type pki struct {
	pool         *x509.CertPool
	server, node tls.Certificate
}

func newPKI(t *testing.T) pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) tls.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pki{pool: pool,
		server: issue(2, "registry", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}),
		node:   issue(3, "system:node:edge-1", x509.ExtKeyUsageClientAuth, nil)}
}

var (
	wasmOnce sync.Once
	wasmPath string
	wasmErr  error
)

// echoWASM is a real packed WASM module: _bin/wasm/echo.wasm when `make wasm` built it, else the echo
// example built here the way the Makefile's wasm target does (go build for wasip1, manifest embedded).
func echoWASM(t *testing.T) string {
	t.Helper()
	wasmOnce.Do(func() {
		root := "../.."
		if _, err := os.Stat(filepath.Join(root, "_bin/wasm/echo.wasm")); err == nil {
			wasmPath = filepath.Join(root, "_bin/wasm/echo.wasm")
			return
		}
		dir, err := os.MkdirTemp("", "registry-wasm-")
		if err != nil {
			wasmErr = err
			return
		}
		raw := filepath.Join(dir, "echo.raw.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", raw, "./wasm/examples/echo")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if out, err := cmd.CombinedOutput(); err != nil {
			wasmErr = errors.New("building the echo example: " + err.Error() + "\n" + string(out))
			return
		}
		code, _ := os.ReadFile(raw)
		y, _ := os.ReadFile(filepath.Join(root, "wasm/examples/echo/manifest.yaml"))
		m, err := manifest.ParseYAML(y)
		if err != nil {
			wasmErr = err
			return
		}
		packed, err := manifest.Embed(code, m)
		if err != nil {
			wasmErr = err
			return
		}
		wasmPath = filepath.Join(dir, "echo.wasm")
		wasmErr = os.WriteFile(wasmPath, packed, 0o644)
	})
	if wasmErr != nil {
		t.Fatal(wasmErr)
	}
	return wasmPath
}

// rig is a registry folder with modbus-mapper 1.0.0 and 2.0.0 (process, this os/arch) and echo 1.0.0
// (wasm), signed, served over HTTPS with mutual TLS on 127.0.0.1.
type rig struct {
	dir  string
	key  ed25519.PrivateKey
	pki  pki
	url  string
	v1   []byte // the process artifact of 1.0.0
	v2   []byte
	wasm string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{dir: t.TempDir(), pki: newPKI(t), v1: []byte("#!/bin/sh\necho v1\n"), v2: []byte("#!/bin/sh\necho v2\n")}
	keys := t.TempDir()
	if _, err := index.WriteKeyPair(keys); err != nil {
		t.Fatal(err)
	}
	var err error
	if r.key, err = index.ReadPrivateKey(filepath.Join(keys, index.PrivateKeyFile)); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	for v, content := range map[string][]byte{"1.0.0": r.v1, "2.0.0": r.v2} {
		path := filepath.Join(src, "mapper-"+v)
		must(t, os.WriteFile(path, content, 0o755))
		_, err := registry.Publish(r.dir, registry.PublishRequest{Name: "modbus-mapper", Version: v, Kind: index.KindMapper,
			API: sdk.APIVersion, Runtime: index.RuntimeProcess, OS: runtime.GOOS, Arch: runtime.GOARCH, Path: path})
		must(t, err)
	}
	r.wasm = echoWASM(t)
	_, err = registry.Publish(r.dir, registry.PublishRequest{Name: "echo", Version: "1.0.0", Kind: index.KindModule,
		API: sdk.APIVersion, Runtime: index.RuntimeWASM, Path: r.wasm})
	must(t, err)
	r.sign(t, time.Now(), time.Hour)

	srv := httptest.NewUnstartedServer(server.Handler(r.dir, nil))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{r.pki.server}, ClientCAs: r.pki.pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/"
	return r
}

func (r *rig) sign(t *testing.T, now time.Time, validFor time.Duration) []byte {
	t.Helper()
	_, err := registry.Sign(r.dir, r.key, validFor, now)
	must(t, err)
	data, err := os.ReadFile(filepath.Join(r.dir, registry.SignedFile))
	must(t, err)
	return data
}

func (r *rig) client(t *testing.T, state string, trusted ...ed25519.PublicKey) *Client {
	t.Helper()
	if trusted == nil {
		trusted = []ed25519.PublicKey{r.key.Public().(ed25519.PublicKey)}
	}
	c, err := New(r.url, trusted, sdk.APIVersion, &tls.Config{RootCAs: r.pki.pool, Certificates: []tls.Certificate{r.pki.node}})
	must(t, err)
	if state != "" {
		c.State = &index.StateFile{Path: state}
	}
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestPublishSignServeFetchAndInstallOverMutualTLS(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	state := filepath.Join(t.TempDir(), "registry.state")
	c := r.client(t, state)
	idx, err := c.Index(ctx)
	must(t, err)
	if idx.Version != 1 || len(idx.Plugins) != 3 {
		t.Fatalf("index version %d with %d plugin versions, want 1 and 3", idx.Version, len(idx.Plugins))
	}
	latest, err := idx.Find("modbus-mapper", "")
	must(t, err)
	if latest.Version != "2.0.0" || latest.Kind != index.KindMapper || latest.API != sdk.APIVersion {
		t.Fatalf("latest = %+v", latest)
	}
	dst := filepath.Join(t.TempDir(), "modbus-mapper")
	_, err = c.Download(ctx, latest, index.RuntimeProcess, runtime.GOOS, runtime.GOARCH, dst)
	must(t, err)
	got, _ := os.ReadFile(dst)
	if fi, _ := os.Stat(dst); !bytes.Equal(got, r.v2) || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed %q mode %s, want v2 executable", got, fi.Mode().Perm())
	}

	echo, err := idx.Find("echo", "1.0.0")
	must(t, err)
	if echo.Capabilities == nil || len(echo.Capabilities.Send.Resources) != 1 || echo.Capabilities.Send.Resources[0] != "*" {
		t.Fatalf("echo capabilities from its manifest: %+v", echo.Capabilities)
	}
	wdst := filepath.Join(t.TempDir(), "echo.wasm")
	_, err = c.Download(ctx, echo, index.RuntimeWASM, "", "", wdst)
	must(t, err)
	want, _ := os.ReadFile(r.wasm)
	gotW, _ := os.ReadFile(wdst)
	if !bytes.Equal(want, gotW) {
		t.Fatal("downloaded wasm differs from the published one")
	}
	if m, err := manifest.Read(gotW); err != nil || m.Version != "1.0.0" {
		t.Fatalf("downloaded wasm manifest: %+v, %v", m, err)
	}

	// A re-signed index is a higher version and is accepted; the state file records it.
	r.sign(t, time.Now(), time.Hour)
	idx, err = r.client(t, state).Index(ctx)
	must(t, err)
	st, _ := (&index.StateFile{Path: state}).Load()
	if idx.Version != 2 || st.Version != 2 {
		t.Fatalf("after re-signing: index %d, state %d; want 2, 2", idx.Version, st.Version)
	}
}

func TestClientRefusesEveryAttackWithItsOwnError(t *testing.T) {
	ctx := context.Background()
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		// attack changes the registry (or the client) after a first good fetch recorded in state.
		attack func(t *testing.T, r *rig, c *Client)
		// download: the refusal comes when downloading modbus-mapper 2.0.0, not when fetching the index.
		download bool
		want     error
		msg      string
	}{
		{name: "index signed by another key", want: index.ErrUntrustedKey, msg: "signed by key",
			attack: func(t *testing.T, r *rig, c *Client) { c.Trusted = []ed25519.PublicKey{other} }},
		{name: "index payload altered on the server", want: index.ErrBadSignature, msg: "fails",
			attack: func(t *testing.T, r *rig, c *Client) {
				path := filepath.Join(r.dir, registry.SignedFile)
				data, _ := os.ReadFile(path)
				env, payload, err := index.DecodeEnvelope(data)
				must(t, err)
				payload = bytes.Replace(payload, []byte(`"2.0.0"`), []byte(`"2.0.1"`), 1)
				forged, _ := index.SignPayload(payload, r.key)
				fenv, _, _ := index.DecodeEnvelope(forged)
				env.Payload = fenv.Payload // new payload, old signature
				out, _ := index.EncodeJSON(env)
				must(t, os.WriteFile(path, out, 0o644))
			}},
		{name: "older index served again after a newer one was seen", want: index.ErrRollback, msg: "version 1 is older than version 2",
			attack: func(t *testing.T, r *rig, c *Client) {
				old, _ := os.ReadFile(filepath.Join(r.dir, registry.SignedFile))
				r.sign(t, time.Now(), time.Hour)
				_, err := r.client(t, c.State.Path).Index(ctx) // a node sees version 2 (and restarts)
				must(t, err)
				must(t, os.WriteFile(filepath.Join(r.dir, registry.SignedFile), old, 0o644))
			}},
		{name: "expired index", want: index.ErrExpired, msg: "expired at",
			attack: func(t *testing.T, r *rig, c *Client) { r.sign(t, time.Now().Add(-2*time.Hour), time.Hour) }},
		{name: "index that is not JSON", want: index.ErrMalformed, msg: "envelope: line 1 column",
			attack: func(t *testing.T, r *rig, c *Client) {
				must(t, os.WriteFile(filepath.Join(r.dir, registry.SignedFile), []byte(`{"payloadType": nope}`), 0o644))
			}},
		{name: "artifact replaced on the server", download: true, want: index.ErrArtifactMismatch, msg: "has sha256",
			attack: func(t *testing.T, r *rig, c *Client) {
				sum := sha256hex(r.v2)
				must(t, os.WriteFile(filepath.Join(r.dir, registry.ArtifactsDir, sum), bytes.ToUpper(r.v2), 0o644))
			}},
		{name: "artifact truncated on the server", download: true, want: index.ErrArtifactMismatch, msg: "the index says",
			attack: func(t *testing.T, r *rig, c *Client) {
				sum := sha256hex(r.v2)
				must(t, os.WriteFile(filepath.Join(r.dir, registry.ArtifactsDir, sum), r.v2[:5], 0o644))
			}},
		{name: "plugin built for a module API the host does not speak", download: true, want: index.ErrAPIVersion, msg: `this host speaks "99"`,
			attack: func(t *testing.T, r *rig, c *Client) { c.API = "99" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			c := r.client(t, filepath.Join(t.TempDir(), "registry.state"))
			idx, err := c.Index(ctx) // a first good fetch
			must(t, err)
			tt.attack(t, r, c)
			dst := filepath.Join(t.TempDir(), "installed")
			if tt.download {
				p, ferr := idx.Find("modbus-mapper", "2.0.0")
				must(t, ferr)
				_, err = c.Download(ctx, p, index.RuntimeProcess, runtime.GOOS, runtime.GOARCH, dst)
			} else {
				_, err = r.client(t, c.State.Path, c.Trusted...).Index(ctx)
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
			if _, serr := os.Stat(dst); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("refused artifact left at %s", dst)
			}
			entries, _ := os.ReadDir(filepath.Dir(dst))
			if len(entries) != 0 {
				t.Errorf("refused download left files: %v", entries)
			}
		})
	}
}

func TestServerRequiresANodeCertificateFromItsCA(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	stranger := newPKI(t) // same shape, another CA
	tests := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"node certificate from the cluster CA", []tls.Certificate{r.pki.node}, true},
		{"no client certificate", nil, false},
		{"certificate from another CA", []tls.Certificate{stranger.node}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(r.url, []ed25519.PublicKey{r.key.Public().(ed25519.PublicKey)}, sdk.APIVersion,
				&tls.Config{RootCAs: r.pki.pool, Certificates: tt.certs})
			must(t, err)
			_, err = c.Index(ctx)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	// The server names artifacts by sha256 only.
	c := r.client(t, "")
	if _, err := c.Fetch(ctx, "artifacts/..%2f"+registry.DraftFile, 1<<20); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("non-sha256 artifact name: %v", err)
	}
	if _, err := c.Fetch(ctx, "artifacts/"+strings.Repeat("a", 64), 1<<20); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown artifact: %v", err)
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
