package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/test/k8senv"
)

// tryStream sends one raw HTTP request to addr — over TLS with certs when tlsConf is set, else in
// plain text — and returns the response status, or the error that ended the attempt (a refused
// handshake). TLS 1.3 clients learn that their certificate was refused on the first read.
func tryStream(addr string, tlsConf *tls.Config, request string) (int, error) {
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: 30 * time.Second}
	if tlsConf != nil {
		conn, err = tls.DialWithDialer(d, "tcp", addr, tlsConf)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte(request)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Issue 17 item 1: the stream server (the kubelet API of edge nodes) serves only the API server's
// kubelet client certificate. Logs and a websocket exec without a certificate, with a certificate of
// another CA, or in plain text get no 200 and no 101 — and no session reaches the edge — while
// kubectl logs and exec through the real API server keep working. Every TLS refusal is counted, on
// the stream, tunnel and hub ports.
func TestStreamServerServesOnlyTheAPIServersKubeletClientAndCountsTLSRefusals(t *testing.T) {
	e := newEdgedCluster(t)
	streamAddr := e.withStreams()
	e.runShell("secretive", "echo secretive-start; while true; do sleep 1; done")

	t.Run("kubectl logs and exec work through the API server's kubelet client certificate", func(t *testing.T) {
		waitFor(t, "logs", 30*time.Second, func() (bool, string) {
			out, code := e.kubectlCode("logs", "-n", e.ns, "secretive")
			return code == 0 && strings.HasPrefix(out, "secretive-start\n"), out
		})
		out, code := e.kubectlCode("exec", "-n", e.ns, "secretive", "--", "sh", "-c", "echo exec-ok")
		if code != 0 || out != "exec-ok\n" {
			t.Fatalf("kubectl exec: %d %q", code, out)
		}
	})

	other, err := k8senv.NewKubeletClient(t.TempDir()) // same names, another CA
	if err != nil {
		t.Fatal(err)
	}
	logs := fmt.Sprintf("GET /containerLogs/%s/secretive/c HTTP/1.1\r\nHost: %s\r\n\r\n", e.ns, streamAddr)
	wsExec := fmt.Sprintf("GET /exec/%s/secretive/c?command=cat&command=/proc/1/environ&output=1 HTTP/1.1\r\nHost: %s\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+
		"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n", e.ns, streamAddr)
	noCert := &tls.Config{InsecureSkipVerify: true} // an attacker does not care who the server is
	otherCA := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{other.Cert}}
	sessions := e.cloud.metric("kedge_cloudstream_sessions_total")
	for _, tc := range []struct {
		name     string
		tls      *tls.Config
		request  string
		reason   string // kedge_cloudstream_stream_refused_total label
		wantCode int    // 0: the handshake fails
	}{
		{"logs without a client certificate", noCert, logs, "tls_no_cert", 0},
		{"websocket exec without a client certificate", noCert, wsExec, "tls_no_cert", 0},
		{"logs with a certificate of another CA", otherCA, logs, "tls_bad_cert", 0},
		{"websocket exec with a certificate of another CA", otherCA, wsExec, "tls_bad_cert", 0},
		{"logs in plain HTTP", nil, logs, "tls_plain_http", http.StatusBadRequest},
	} {
		t.Run(tc.name+" is refused and counted", func(t *testing.T) {
			before := e.cloud.metric("kedge_cloudstream_stream_refused_total", `reason="`+tc.reason+`"`)
			code, err := tryStream(streamAddr, tc.tls, tc.request)
			if code != tc.wantCode {
				t.Fatalf("got status %d (err %v), want %d", code, err, tc.wantCode)
			}
			if tc.wantCode == 0 && (err == nil || !strings.Contains(err.Error(), "certificate")) {
				t.Fatalf("got %v, want a handshake failure about the certificate", err)
			}
			waitFor(t, "the refusal counted", 30*time.Second, func() (bool, string) {
				v := e.cloud.metric("kedge_cloudstream_stream_refused_total", `reason="`+tc.reason+`"`)
				return v == before+1, fmt.Sprintf("%v, %v before", v, before)
			})
		})
	}
	if n := e.cloud.metric("kedge_cloudstream_sessions_total"); n != sessions {
		t.Fatalf("sessions_total went from %v to %v: a refused client reached the stream server's handler", sessions, n)
	}

	t.Run("TLS refusals on the hub and tunnel ports are counted with their reason", func(t *testing.T) {
		tunnelAddr := ""
		for _, kv := range e.cloudEnv {
			if v, ok := strings.CutPrefix(kv, "KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS="); ok {
				tunnelAddr = v
			}
		}
		for _, p := range []struct{ addr, metric string }{
			{"127.0.0.1:" + strconv.Itoa(e.hubPort), "kedge_cloudhub_rejected_total"},
			{tunnelAddr, "kedge_cloudstream_tunnel_refused_total"},
		} {
			before := e.cloud.metric(p.metric, `reason="tls_no_cert"`)
			if code, err := tryStream(p.addr, noCert, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err == nil {
				t.Fatalf("%s served a client without a certificate: %d", p.addr, code)
			}
			waitFor(t, p.metric+`{reason="tls_no_cert"} to move`, 30*time.Second, func() (bool, string) {
				v := e.cloud.metric(p.metric, `reason="tls_no_cert"`)
				return v == before+1, fmt.Sprintf("%v, %v before", v, before)
			})
		}
	})
}

// cloudcore with cloudstream and no client authentication does not start, and says what to set; the
// development-only insecureAllowUnauthenticated starts, says so at ERROR level and in a gauge, and
// serves a client without any certificate.
func TestCloudcoreRefusesAStreamServerWithoutClientAuthenticationUnlessInsecureIsNamed(t *testing.T) {
	needBinaries(t)
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	pkiDir := t.TempDir()
	streamAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	base := []string{"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + pkiDir,
		"KEDGE_MODULES__CLOUDSTREAM__ENABLE=true", "KEDGE_MODULES__CLOUDSTREAM__PKIDIR=" + pkiDir,
		"KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS=" + streamAddr, "KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS=127.0.0.1:0",
		"KEDGE_MODULES__CLOUDSTREAM__KUBECONFIG=" + env.Kubeconfig}

	t.Run("no clientCAFile: cloudcore exits naming the settings", func(t *testing.T) {
		d := start(t, "cloudcore", base)
		select {
		case <-d.exited:
		case <-time.After(60 * time.Second):
			t.Fatalf("cloudcore still runs\n%s", d.stderr)
		}
		if code := d.cmd.ProcessState.ExitCode(); code == 0 {
			t.Fatalf("exit code 0\n%s", d.stderr)
		}
		for _, want := range []string{"modules.cloudstream.clientCAFile", "insecureAllowUnauthenticated: true"} {
			if !strings.Contains(d.stderr.String(), want) {
				t.Fatalf("stderr does not say %q:\n%s", want, d.stderr)
			}
		}
		if _, err := tryStream(streamAddr, &tls.Config{InsecureSkipVerify: true}, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err == nil {
			t.Fatal("something serves the stream address")
		}
	})

	t.Run("insecureAllowUnauthenticated serves anyone, logged at ERROR and in a gauge", func(t *testing.T) {
		d := start(t, "cloudcore", append(base, "KEDGE_MODULES__CLOUDSTREAM__INSECUREALLOWUNAUTHENTICATED=true"))
		d.waitReady()
		var line string
		for _, l := range strings.Split(d.stderr.String(), "\n") {
			if strings.Contains(l, "INSECURE") {
				line = l
			}
		}
		if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "insecureAllowUnauthenticated") {
			t.Fatalf("no ERROR line naming insecureAllowUnauthenticated:\n%s", d.stderr)
		}
		if v := d.metric("kedge_cloudstream_insecure_unauthenticated"); v != 1 {
			t.Fatalf("kedge_cloudstream_insecure_unauthenticated = %v", v)
		}
		code, err := tryStream(streamAddr, &tls.Config{InsecureSkipVerify: true}, "GET /containerLogs/default/nope/c HTTP/1.1\r\nHost: x\r\n\r\n")
		if err != nil || code != http.StatusNotFound {
			t.Fatalf("a client without a certificate got %d %v; want 404 (served: the pod does not exist)", code, err)
		}
	})
}
