package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// wsTap sits between a KubeEdge edgecore and a KubeEdge cloudcore on the websocket lane and records
// every JSON text frame both ways. It serves TLS with cloudcore's own hub certificate (read from
// Secret kubeedge/cloudcoresecret, so the edge's check against the KubeEdge CA passes) and dials
// cloudcore with the node certificate the edge obtained at its join.
type wsTap struct {
	t        *testing.T
	upstream string // cloudcore's hub address
	nodeCert string // the edge's certificate and key files (written by its join)
	nodeKey  string
	mu       sync.Mutex
	frames   []tapFrame
}

// tapFrame is one message seen by the tap: "down" from cloudcore to the edge, "up" the other way.
type tapFrame struct {
	Dir string          `json:"dir"`
	Msg json.RawMessage `json:"msg"`
}

// decodeKubeEdgeSecret reads a certificate or key KubeEdge stored in a Secret (DER, or PEM).
func decodeKubeEdgeSecret(b []byte, pemType string) []byte {
	if p, _ := pem.Decode(b); p != nil {
		return b
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: b})
}

// startWSTap starts the tap on a free loopback port and returns its port.
func startWSTap(t *testing.T, kc kubernetes.Interface, upstream, nodeCert, nodeKey string) (*wsTap, int) {
	t.Helper()
	var sec map[string][]byte
	waitFor(t, "upstream cloudcore's hub certificate in Secret kubeedge/cloudcoresecret", time.Minute, func() (bool, string) {
		s, err := kc.CoreV1().Secrets("kubeedge").Get(context.Background(), "cloudcoresecret", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		sec = s.Data
		return len(sec["cloudcoredata"]) > 0, fmt.Sprintf("keys %v", len(sec))
	})
	certPEM := decodeKubeEdgeSecret(sec["cloudcoredata"], "CERTIFICATE")
	keyPEM := decodeKubeEdgeSecret(sec["cloudcorekeydata"], "EC PRIVATE KEY")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		keyPEM = decodeKubeEdgeSecret(sec["cloudcorekeydata"], "RSA PRIVATE KEY")
		if cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
			t.Fatalf("cloudcore's hub certificate from its Secret: %v", err)
		}
	}
	tap := &wsTap{t: t, upstream: upstream, nodeCert: nodeCert, nodeKey: nodeKey}
	port := freePort(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port), &tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: tap, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return tap, port
}

func (w *wsTap) record(dir string, b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.frames = append(w.frames, tapFrame{Dir: dir, Msg: append(json.RawMessage(nil), b...)})
}

// snapshot returns the frames seen so far.
func (w *wsTap) snapshot() []tapFrame {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]tapFrame(nil), w.frames...)
}

func (w *wsTap) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	cert, err := tls.LoadX509KeyPair(w.nodeCert, w.nodeKey)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusServiceUnavailable)
		return
	}
	d := websocket.Dialer{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}, //nolint:gosec // a test tap in front of a known local cloudcore
		HandshakeTimeout: 10 * time.Second}
	h := http.Header{}
	for k, v := range r.Header { // everything the edge sent but the websocket handshake itself
		switch http.CanonicalHeaderKey(k) {
		case "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Host":
		default:
			h[k] = v
		}
	}
	w.t.Logf("tap: edge handshake headers %v", h)
	up, resp, err := d.Dial("wss://"+w.upstream+r.URL.RequestURI(), h)
	if err != nil {
		status := http.StatusBadGateway
		if resp != nil {
			status = resp.StatusCode
		}
		http.Error(rw, err.Error(), status)
		return
	}
	u := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	down, err := u.Upgrade(rw, r, nil)
	if err != nil {
		_ = up.Close()
		return
	}
	pump := func(dir string, from, to *websocket.Conn) {
		defer func() { _ = from.Close(); _ = to.Close() }()
		for {
			typ, b, err := from.ReadMessage()
			if err != nil {
				return
			}
			if typ == websocket.TextMessage {
				w.record(dir, b)
			}
			if err := to.WriteMessage(typ, b); err != nil {
				return
			}
		}
	}
	go pump("down", up, down)
	pump("up", down, up)
}

// patchYAMLFile rewrites a YAML config file through fn.
func patchYAMLFile(t *testing.T, path string, fn func(cfg map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	fn(cfg)
	if b, err = yaml.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// yamlMap walks nested maps of a YAML document, creating none.
func yamlMap(t *testing.T, m map[string]any, keys ...string) map[string]any {
	t.Helper()
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			t.Fatalf("config has no %s", strings.Join(keys, "."))
		}
		m = next
	}
	return m
}

// writeTapGolden writes frames matching keep as indented JSON lines (one message per entry) to file.
func writeTapGolden(t *testing.T, file string, frames []tapFrame) {
	t.Helper()
	var out []map[string]any
	for _, f := range frames {
		var m map[string]any
		if err := json.Unmarshal(f.Msg, &m); err != nil {
			t.Fatalf("tap frame is not JSON: %v", err)
		}
		out = append(out, map[string]any{"dir": f.Dir, "msg": m})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
