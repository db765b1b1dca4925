package edgestream

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudstream"
	"github.com/kedge-io/kedge/sdk"
)

// testHost is the part of a host these two modules use (no messages, no store).
type testHost struct {
	sdk.Host
	name, node string
	reg        *prometheus.Registry
}

func (h *testHost) Name() string                   { return h.name }
func (h *testHost) NodeName() string               { return h.node }
func (h *testHost) Logger() *slog.Logger           { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func (h *testHost) Metrics() prometheus.Registerer { return h.reg }

// fileRuntime serves containers from files: a CRI log file per container, and an exec streaming
// server that upgrades and echoes, as the runtime's does (only the container lookup is not CRI).
type fileRuntime struct {
	mu      sync.Mutex
	logs    map[string]string // "ns/pod/container" -> log file
	running bool
	execSrv string
}

func (r *fileRuntime) find(_ context.Context, ns, pod, c string, _ bool) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.logs[ns+"/"+pod+"/"+c]; !ok {
		return "", refuse(http.StatusNotFound, "container %q not found in pod %s/%s", c, ns, pod)
	}
	return ns + "/" + pod + "/" + c, nil
}

func (r *fileRuntime) logPath(_ context.Context, id string) (string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs[id], r.running, nil
}

func (r *fileRuntime) execURL(_ context.Context, id string, cmd []string, _, _, _, _ bool) (string, error) {
	return r.execSrv + "/exec/" + url.PathEscape(strings.Join(cmd, " ")), nil
}

func (r *fileRuntime) attachURL(_ context.Context, id string, tty, stdin, stdout, stderr bool) (string, error) {
	return r.execSrv + "/attach/" + url.PathEscape(fmt.Sprintf("%s tty=%v stdin=%v stdout=%v stderr=%v", id, tty, stdin, stdout, stderr)), nil
}

// sandbox: a pod has one when any of its containers has a log file.
func (r *fileRuntime) sandbox(_ context.Context, ns, pod string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.logs {
		if strings.HasPrefix(k, ns+"/"+pod+"/") {
			return "sandbox-of-" + ns + "-" + pod, nil
		}
	}
	return "", refuse(http.StatusNotFound, "pod %s/%s has no running sandbox on node edge-a", ns, pod)
}

func (r *fileRuntime) portForwardURL(_ context.Context, sandboxID string) (string, error) {
	return r.execSrv + "/portforward/" + url.PathEscape(sandboxID), nil
}

type rig struct {
	t      *testing.T
	cloud  *cloudstream.Module
	edge   *Module
	rt     *fileRuntime
	client *http.Client
	base   string
	dir    string
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	ca, _, err := pki.LoadOrCreateCA(ctx, pki.FileStorage{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := ca.IssueNodeCert(&key.PublicKey, "edge-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, filepath.Join(dir, "node.crt"), "CERTIFICATE", cert.Raw)
	writePEM(t, filepath.Join(dir, "node.key"), "EC PRIVATE KEY", kder)
	if err := os.WriteFile(filepath.Join(dir, "cacert.pem"), ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	kube := fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: corev1.PodSpec{NodeName: "edge-a"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "elsewhere"}, Spec: corev1.PodSpec{NodeName: "edge-b"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "nosandbox"}, Spec: corev1.PodSpec{NodeName: "edge-a"}},
	)
	// The API server's kubelet client certificate, here from the cluster CA (cloudstream requires one).
	apiKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	apiCert, err := ca.IssueNodeCert(&apiKey.PublicKey, "kube-apiserver", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cloud := cloudstream.New()
	cloud.StreamAddress, cloud.TunnelAddress, cloud.PKIDir, cloud.AdvertiseAddress = "127.0.0.1:0", "127.0.0.1:0", dir, "127.0.0.1"
	cloud.ClientCAFile = filepath.Join(dir, "cacert.pem")
	cloud.SessionTimeout, cloud.Heartbeat = 5*time.Second, time.Second
	cloudstream.SetClient(cloud, kube)
	cctx, ccancel := context.WithCancel(ctx)
	if err := cloud.Start(cctx, &testHost{name: "cloudstream", node: "cloud", reg: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}

	execSrv := newEchoUpgradeServer(t)
	rt := &fileRuntime{logs: map[string]string{}, running: true, execSrv: execSrv}
	edge := New()
	edge.Server, edge.CAFile = cloud.TunnelAddress, filepath.Join(dir, "cacert.pem")
	edge.CertFile, edge.KeyFile = filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	edge.Heartbeat, edge.BackoffMin, edge.BackoffMax, edge.LogPoll = time.Second, 10*time.Millisecond, 100*time.Millisecond, 20*time.Millisecond
	edge.rt = rt
	ectx, ecancel := context.WithCancel(ctx)
	if err := edge.Start(ectx, &testHost{name: Name, node: "edge-a", reg: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ecancel()
		_ = edge.Stop(context.Background())
		ccancel()
		_ = cloud.Stop(context.Background())
	})
	r := &rig{t: t, cloud: cloud, edge: edge, rt: rt, dir: dir, base: "https://" + cloud.StreamAddress,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(),
			Certificates: []tls.Certificate{{Certificate: [][]byte{apiCert.Raw}, PrivateKey: apiKey}}}, DisableKeepAlives: true}}}
	eventually(t, "tunnel up", func() bool { return edge.LinkUp(ctx) == nil })
	return r
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newEchoUpgradeServer answers an SPDY upgrade with 101, says what it was asked to stream (exec: the
// command from its path, attach: the container and flags, port-forward: the sandbox and the stream
// protocol) and then echoes a line, as a runtime's streaming server would run it.
func newEchoUpgradeServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto := r.Header.Get("X-Stream-Protocol-Version")
		spdy := r.Method == http.MethodPost && r.Header.Get("Upgrade") == "SPDY/3.1" && proto != ""
		if proto = cmpOr(proto, r.Header.Get("Sec-Websocket-Protocol")); !spdy && (r.Method != http.MethodGet ||
			r.Header.Get("Upgrade") != "websocket" || r.Header.Get("Sec-Websocket-Key") == "" || proto == "") {
			http.Error(w, "want the client's upgrade headers (SPDY: POST; websocket: GET)", http.StatusBadRequest)
			return
		}
		kind, arg, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		arg, _ = url.PathUnescape(arg)
		var said string
		switch kind {
		case "exec":
			said = "ran " + arg
		case "attach":
			said = "attached " + arg
		case "portforward":
			said = "forwarding into " + arg + " over " + proto
		}
		conn, rw, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n%s\n", said)
		_ = rw.Flush()
		line, _ := rw.ReadString('\n')
		fmt.Fprintf(rw, "echo %s", line)
		_ = rw.Flush()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (r *rig) writeLog(name string, lines ...string) string {
	r.t.Helper()
	p := filepath.Join(r.dir, strings.ReplaceAll(name, "/", "_")+".log")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l + "\n"); err != nil {
			r.t.Fatal(err)
		}
	}
	r.rt.mu.Lock()
	r.rt.logs[name] = p
	r.rt.mu.Unlock()
	return p
}

func (r *rig) get(path string) (int, string) {
	r.t.Helper()
	resp, err := r.client.Get(r.base + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestLogsAreServedThroughTheTunnelInTheKubeletsFormat(t *testing.T) {
	r := newRig(t)
	r.writeLog("ns/p/c",
		"2024-05-01T10:00:00.000000001Z stdout F one",
		"2024-05-01T10:00:01.000000001Z stderr P tw",
		"2024-05-01T10:00:01.500000001Z stderr F o",
		"2024-05-01T10:00:02.000000001Z stdout F three")
	r.rt.mu.Lock()
	r.rt.running = false
	r.rt.mu.Unlock()
	for _, tc := range []struct {
		name, query, want string
	}{
		{"all lines, partial lines joined", "", "one\ntwo\nthree\n"},
		{"timestamps in front when asked", "?timestamps=true&tailLines=1", "2024-05-01T10:00:02.000000001Z three\n"},
		{"tailLines keeps the last lines", "?tailLines=2", "o\nthree\n"},
		{"limitBytes cuts the output", "?limitBytes=5", "one\nt"},
		{"follow of a stopped container ends at the end of its log", "?follow=true", "one\ntwo\nthree\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := r.get("/containerLogs/ns/p/c" + tc.query)
			if code != http.StatusOK || body != tc.want {
				t.Fatalf("got %d %q, want 200 %q", code, body, tc.want)
			}
		})
	}
}

func TestFollowedLogDeliversALineWrittenAfterTheRequestStarted(t *testing.T) {
	r := newRig(t)
	r.writeLog("ns/p/c", "2024-05-01T10:00:00Z stdout F before")
	resp, err := r.client.Get(r.base + "/containerLogs/ns/p/c?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if l, err := rd.ReadString('\n'); err != nil || l != "before\n" {
		t.Fatalf("first line %q %v", l, err)
	}
	r.writeLog("ns/p/c", "2024-05-01T10:00:05Z stdout F after")
	got := make(chan string, 1)
	go func() { l, _ := rd.ReadString('\n'); got <- l }()
	select {
	case l := <-got:
		if l != "after\n" {
			t.Fatalf("followed line %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the line written after the request started did not arrive within 10s")
	}
}

func TestExecAttachAndPortForwardUpgradesAreRelayedToTheRuntimeStreamingServerByteForByte(t *testing.T) {
	r := newRig(t)
	r.writeLog("ns/p/c")
	for _, tc := range []struct {
		name, path, proto, said string
		websocket               bool
	}{
		{"a websocket exec is replayed as a GET with its websocket headers", "/exec/ns/p/c?command=true&output=1", "v5.channel.k8s.io", "ran true", true},
		{"exec runs the command", "/exec/ns/p/c?command=sh&command=-c&command=echo+hi&output=1", "v4.channel.k8s.io", "ran sh -c echo hi", false},
		{"exec with the pod uid in the path", "/exec/ns/p/uid-1/c?command=true&error=1", "v4.channel.k8s.io", "ran true", false},
		{"attach takes the container and the API server's stream flags", "/attach/ns/p/c?input=1&output=1&tty=1", "v4.channel.k8s.io",
			"attached ns/p/c tty=true stdin=true stdout=true stderr=false", false},
		{"attach with the pod uid in the path", "/attach/ns/p/uid-1/c?output=1&error=1", "v5.channel.k8s.io",
			"attached ns/p/c tty=false stdin=false stdout=true stderr=true", false},
		{"port-forward goes to the pod's sandbox", "/portForward/ns/p", "portforward.k8s.io", "forwarding into sandbox-of-ns-p over portforward.k8s.io", false},
		{"port-forward with the pod uid in the path", "/portForward/ns/p/uid-1", "portforward.k8s.io", "forwarding into sandbox-of-ns-p over portforward.k8s.io", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", r.cloud.StreamAddress, r.client.Transport.(*http.Transport).TLSClientConfig)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if tc.websocket {
				fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
					"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: %s\r\n\r\n", tc.path, tc.proto)
			} else {
				fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: %s\r\n\r\n", tc.path, tc.proto)
			}
			rd := bufio.NewReader(conn)
			resp, err := http.ReadResponse(rd, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			if l, _ := rd.ReadString('\n'); l != tc.said+"\n" {
				t.Fatalf("runtime saw %q, want %q", l, tc.said)
			}
			fmt.Fprintf(conn, "ping\n")
			if l, _ := rd.ReadString('\n'); l != "echo ping\n" {
				t.Fatalf("echo %q", l)
			}
		})
	}
}

func TestBadRequestsGetClearErrors(t *testing.T) {
	r := newRig(t)
	r.writeLog("ns/p/c")
	for _, tc := range []struct {
		name, path string
		code       int
		want       string
	}{
		{"missing container", "/containerLogs/ns/p/nope", 404, `container "nope" not found in pod ns/p`},
		{"exec into a missing container", "/exec/ns/p/nope?command=sh&output=1", 404, `container "nope" not found in pod ns/p`},
		{"pod of a node without a tunnel", "/containerLogs/ns/elsewhere/c", 503, "node edge-b has no stream tunnel"},
		{"missing pod", "/containerLogs/ns/ghost/c", 404, "pod ns/ghost not found"},
		{"exec without a command", "/exec/ns/p/c?output=1", 400, "no command given"},
		{"exec with no stream", "/exec/ns/p/c?command=sh", 400, "one of input, output or error must be set"},
		{"not served yet", "/run/ns/p/c", 404, "/run is not served for edge nodes yet"},
		{"attach to a missing container", "/attach/ns/p/nope?output=1", 404, `container "nope" not found in pod ns/p`},
		{"attach with no stream", "/attach/ns/p/c?tty=1", 400, "attach ns/p/c: one of input, output or error must be set"},
		{"attach to a missing pod", "/attach/ns/ghost/c?output=1", 404, "pod ns/ghost not found"},
		{"port-forward to a pod with no sandbox here", "/portForward/ns/nosandbox", 404, "pod ns/nosandbox has no running sandbox on node edge-a"},
		{"port-forward to a missing pod", "/portForward/ns/ghost", 404, "pod ns/ghost not found"},
		{"port-forward to a pod of a node without a tunnel", "/portForward/ns/elsewhere", 503, "node edge-b has no stream tunnel"},
		{"port-forward with an empty namespace", "/portForward//p", 404, "namespace and pod must not be empty"},
		{"unknown kubelet path", "/nothing/here", 404, "is not a kubelet API path this server knows"},
		{"bad tailLines", "/containerLogs/ns/p/c?tailLines=x", 400, `tailLines="x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := r.get(tc.path)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want %d containing %q", code, body, tc.code, tc.want)
			}
		})
	}
}

func TestAnotherNodeCannotClaimASessionAndUnknownSessionsAreRefused(t *testing.T) {
	r := newRig(t)
	// edge-a's own certificate, for a session that was never announced
	cert, err := tls.LoadX509KeyPair(r.edge.CertFile, r.edge.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	conf, _ := r.edge.tlsConfig()
	conf.Certificates = []tls.Certificate{cert}
	if _, _, err := r.edge.dialSession(context.Background(), conf, "not-a-session"); err == nil || !strings.Contains(err.Error(), "no session") {
		t.Fatalf("unknown session: %v", err)
	}
}

func TestSessionsLeaveNoGoroutinesBehind(t *testing.T) {
	r := newRig(t)
	r.writeLog("ns/p/c", "2024-05-01T10:00:00Z stdout F x")
	baseline := goruntime.NumGoroutine()
	for range 5 {
		resp, err := r.client.Get(r.base + "/containerLogs/ns/p/c?follow=true")
		if err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(resp.Body)
		if l, _ := rd.ReadString('\n'); l != "x\n" {
			t.Fatalf("line %q", l)
		}
		resp.Body.Close() // the client goes away in the middle of a follow
		if code, _ := r.get("/containerLogs/ns/p/c"); code != 200 {
			t.Fatalf("logs: %d", code)
		}
		if code, _ := r.get("/containerLogs/ns/p/nope"); code != 404 {
			t.Fatalf("missing: %d", code)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := goruntime.NumGoroutine()
		if n <= baseline+2 { // the transports' idle bookkeeping may come and go
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the sessions:\n%s", n, baseline, buf[:goruntime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
