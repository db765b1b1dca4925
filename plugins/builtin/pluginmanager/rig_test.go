package pluginmanager

import (
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
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
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
	"github.com/kedge-io/kedge/sdk/control"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// certs are a CA, a server certificate for 127.0.0.1 and a node certificate, as PEM files.
type certs struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
	server                    tls.Certificate
}

func newCerts(t *testing.T) certs {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	pemFile := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := certs{pool: x509.NewCertPool()}
	c.pool.AddCert(ca)
	c.caFile = pemFile("ca.crt", "CERTIFICATE", caDER)
	nodeDER, nodeKey := issue(2, "system:node:edge-1", x509.ExtKeyUsageClientAuth)
	c.certFile = pemFile("node.crt", "CERTIFICATE", nodeDER)
	keyDER, _ := x509.MarshalECPrivateKey(nodeKey)
	c.keyFile = pemFile("node.key", "EC PRIVATE KEY", keyDER)
	srvDER, srvKey := issue(3, "registry", x509.ExtKeyUsageServerAuth)
	c.server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	return c
}

// testRegistry is a real registry folder served over mutual TLS by server.Handler.
type testRegistry struct {
	dir, pubFile, url string
	key               ed25519.PrivateKey
	certs             certs

	mu      sync.Mutex
	stalls  map[string]chan struct{} // artifact sha256 -> closed to release its downloads
	stalled chan string              // the sha256 of each download that began stalling
}

// stall makes downloads of plugin@version's artifact wait until the returned release is called (or
// the client goes away); r.stalled receives the sha256 as each one begins waiting.
func (r *testRegistry) stall(t *testing.T, name, version string) (release func()) {
	t.Helper()
	sum := filepath.Base(r.artifactOf(t, name, version))
	ch := make(chan struct{})
	r.mu.Lock()
	r.stalls[sum] = ch
	r.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release) // before the server's Close, which waits for its handlers
	return release
}

func (r *testRegistry) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		ch := r.stalls[filepath.Base(req.URL.Path)]
		r.mu.Unlock()
		if ch != nil {
			r.stalled <- filepath.Base(req.URL.Path)
			select {
			case <-ch:
			case <-req.Context().Done():
				return
			}
		}
		next.ServeHTTP(w, req)
	})
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{dir: t.TempDir(), certs: newCerts(t), stalls: map[string]chan struct{}{}, stalled: make(chan string, 16)}
	keys := t.TempDir()
	if _, err := index.WriteKeyPair(keys); err != nil {
		t.Fatal(err)
	}
	r.pubFile = filepath.Join(keys, index.PublicKeyFile)
	k, err := index.ReadPrivateKey(filepath.Join(keys, index.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	r.key = k
	srv := httptest.NewUnstartedServer(http.StripPrefix("/registry", r.gate(server.Handler(r.dir, nil))))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{r.certs.server}, ClientCAs: r.certs.pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/registry"
	return r
}

// publish adds a process plugin version whose file holds body, and signs the index.
func (r *testRegistry) publish(t *testing.T, name, version, body string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Publish(r.dir, registry.PublishRequest{Name: name, Version: version, Kind: "module", API: sdk.APIVersion,
		Runtime: index.RuntimeProcess, OS: runtime.GOOS, Arch: runtime.GOARCH, Path: f}); err != nil {
		t.Fatal(err)
	}
	r.sign(t, r.key)
}

// publishWASM adds a WASM plugin version asking for caps (written into the working index the way
// publish records a manifest's capabilities), and signs.
func (r *testRegistry) publishWASM(t *testing.T, name, version string, caps manifest.Capabilities) {
	t.Helper()
	body := []byte("\x00asm wasm " + name + version)
	sum := sha256.Sum256(body)
	hexSum := hex.EncodeToString(sum[:])
	if err := os.MkdirAll(filepath.Join(r.dir, registry.ArtifactsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, registry.ArtifactsDir, hexSum), body, 0o644); err != nil {
		t.Fatal(err)
	}
	idx, err := registry.LoadDraft(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	idx.Plugins = append(idx.Plugins, index.Plugin{Name: name, Version: version, Kind: "module", API: sdk.APIVersion, Capabilities: &caps,
		Artifacts: []index.Artifact{{Runtime: index.RuntimeWASM, URL: registry.ArtifactsDir + "/" + hexSum, Size: int64(len(body)), SHA256: hexSum}}})
	data, err := index.EncodeJSON(registry.Draft{LastSigned: idx.Version, Plugins: idx.Plugins})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, registry.DraftFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	r.sign(t, r.key)
}

func (r *testRegistry) sign(t *testing.T, k ed25519.PrivateKey) {
	t.Helper()
	if _, err := registry.Sign(r.dir, k, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// artifactOf returns the path of plugin@version's process artifact in the registry folder.
func (r *testRegistry) artifactOf(t *testing.T, name, version string) string {
	t.Helper()
	idx, err := registry.LoadDraft(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := idx.Find(name, version)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(r.dir, registry.ArtifactsDir, p.Artifacts[0].SHA256)
}

// fakeControl is a control-socket peer for unit tests: it answers module ls and swap like edgecore
// for one module, refusing a swap to a file holding "BROKEN" (the new instance does not start) and
// reporting a file holding "UNHEALTHY" as unhealthy once swapped in.
type fakeControl struct {
	mu     sync.Mutex
	socket string
	st     control.Status
	others map[string]*control.Status // further modules (addModule)
	swaps  []string                   // paths swapped to, in order
}

// addModule makes the peer run one more builtin module.
func (f *fakeControl) addModule(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.others[name] = &control.Status{Name: name, Group: name, Runtime: control.Builtin, Version: "dev"}
}

// module returns a copy of a module's status.
func (f *fakeControl) module(name string) control.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == f.st.Name {
		return f.st
	}
	if st := f.others[name]; st != nil {
		return *st
	}
	return control.Status{}
}

func newFakeControl(t *testing.T, module string) *fakeControl {
	t.Helper()
	f := &fakeControl{socket: filepath.Join(t.TempDir(), "edgecore.sock"), st: control.Status{Name: module, Group: module, Runtime: control.Builtin, Version: "dev"},
		others: map[string]*control.Status{}}
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/modules", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		all := []control.Status{f.st}
		for _, st := range f.others {
			all = append(all, *st)
		}
		_ = json.NewEncoder(w).Encode(all)
	})
	mux.HandleFunc("POST /v1/modules/{name}/swap", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Runtime, Path, SHA256 string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		fail := func(msg string) {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		st := &f.st
		if r.PathValue("name") != f.st.Name {
			if st = f.others[r.PathValue("name")]; st == nil {
				fail("module " + r.PathValue("name") + " is not running")
				return
			}
		}
		body, err := os.ReadFile(req.Path)
		sum := sha256.Sum256(body)
		switch {
		case err != nil:
			fail(err.Error())
			return
		case hex.EncodeToString(sum[:]) != req.SHA256:
			fail("sha256 mismatch")
			return
		case strings.Contains(string(body), "BROKEN"):
			fail("swap " + st.Name + ": swap rolled back: the old instance keeps running: new instance did not start: plugin exited")
			return
		}
		f.swaps = append(f.swaps, req.Path)
		st.Runtime, st.Path, st.Version, st.Health = control.Runtime(req.Runtime), req.Path, "sha256:"+req.SHA256[:12], ""
		if strings.Contains(string(body), "UNHEALTHY") {
			st.Health = "plugin exited: restarting"
		}
		_ = json.NewEncoder(w).Encode(control.SwapReport{Module: st.Name, To: st.Runtime})
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return f
}

func (f *fakeControl) state() (control.Status, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, append([]string(nil), f.swaps...)
}
