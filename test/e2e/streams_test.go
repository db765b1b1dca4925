package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/test/k8senv"
)

// withStreams restarts the cluster's cloudcore with cloudstream (the kubelet API for edge nodes on a
// loopback port the API server reaches, advertised as 127.0.0.1) and its edgecore with edgestream
// dialling cloudstream's tunnel with the node certificate join wrote. It returns the stream address.
func (e *edgedCluster) withStreams() string {
	e.t.Helper()
	streamAddr := "127.0.0.1:" + strconv.Itoa(freePort(e.t))
	tunnelAddr := "127.0.0.1:" + strconv.Itoa(freePort(e.t))
	e.cloudEnv = append(e.cloudEnv,
		"KEDGE_MODULES__CLOUDSTREAM__ENABLE=true",
		"KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS="+streamAddr,
		"KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS="+tunnelAddr,
		"KEDGE_MODULES__CLOUDSTREAM__ADVERTISEADDRESS=127.0.0.1",
		"KEDGE_MODULES__CLOUDSTREAM__PKIDIR="+e.pkiDir,
		"KEDGE_MODULES__CLOUDSTREAM__KUBECONFIG="+e.k8s.Kubeconfig,
		// Only the API server's kubelet client certificate passes (as in production).
		"KEDGE_MODULES__CLOUDSTREAM__CLIENTCAFILE="+e.kubeletClient.CAFile,
		"KEDGE_MODULES__CLOUDSTREAM__CLIENTALLOWEDNAMES="+e.kubeletClient.CommonName,
		"KEDGE_MODULES__CLOUDSTREAM__HEARTBEAT=1s")
	criEndpoint := ""
	for _, kv := range e.edgeEnv {
		if v, ok := strings.CutPrefix(kv, "KEDGE_MODULES__EDGED__CRIENDPOINT="); ok {
			criEndpoint = v
		}
	}
	certs := filepath.Join(e.dir, "edge", "certs")
	e.edgeEnv = append(e.edgeEnv,
		"KEDGE_MODULES__EDGESTREAM__ENABLE=true",
		"KEDGE_MODULES__EDGESTREAM__SERVER="+tunnelAddr,
		"KEDGE_MODULES__EDGESTREAM__CAFILE="+filepath.Join(certs, "ca.crt"),
		"KEDGE_MODULES__EDGESTREAM__CERTFILE="+filepath.Join(certs, "node.crt"),
		"KEDGE_MODULES__EDGESTREAM__KEYFILE="+filepath.Join(certs, "node.key"),
		"KEDGE_MODULES__EDGESTREAM__CRIENDPOINT="+criEndpoint,
		"KEDGE_MODULES__EDGESTREAM__HEARTBEAT=1s", "KEDGE_MODULES__EDGESTREAM__BACKOFFMAX=1s")
	if code, _ := e.cloud.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		e.t.Fatalf("cloudcore exit %d\n%s", code, e.cloud.stderr)
	}
	e.startCloud()
	e.restartEdge()
	port := int32(freePortOf(e.t, streamAddr))
	waitFor(e.t, "edge node advertises cloudstream as its kubelet endpoint", 60*time.Second, func() (bool, string) {
		n, err := e.k8s.Client.CoreV1().Nodes().Get(context.Background(), e.node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		hostname := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeHostName {
				hostname = a.Address
			}
		}
		return hostname == "127.0.0.1" && n.Status.DaemonEndpoints.KubeletEndpoint.Port == port,
			fmt.Sprintf("hostname %q port %d", hostname, n.Status.DaemonEndpoints.KubeletEndpoint.Port)
	})
	waitFor(e.t, "edge stream tunnel up", 30*time.Second, func() (bool, string) {
		v := e.cloud.metric("kedge_cloudstream_tunnels")
		return v == 1, fmt.Sprint(v)
	})
	return streamAddr
}

func freePortOf(t *testing.T, addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// kubectlCode runs kubectl and returns its output and exit code.
func (e *edgedCluster) kubectlCode(args ...string) (string, int) {
	out, err := e.k8s.Kubectl(args...)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, ee.ExitCode()
	}
	if err != nil {
		e.t.Fatalf("kubectl %v: %v", args, err)
	}
	return out, 0
}

// The acceptance path of issue 10's stream tunnel, with the real API server, the real kubectl and a
// busybox pod in containerd on the edge: logs, logs -f, exec with an exit code, clear refusals.
func TestKubectlLogsAndExecReachEdgePodsThroughTheStreamTunnel(t *testing.T) {
	e := newEdgedCluster(t)
	streamAddr := e.withStreams()
	e.runShell("talker", "echo hello-from-edge; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done")

	t.Run("kubectl logs shows the container's output", func(t *testing.T) {
		waitFor(t, "logs", 30*time.Second, func() (bool, string) {
			out, code := e.kubectlCode("logs", "-n", e.ns, "talker")
			return code == 0 && strings.HasPrefix(out, "hello-from-edge\ntick-1\n"), out
		})
	})

	t.Run("kubectl logs -f delivers a line printed after the call started", func(t *testing.T) {
		out, _ := e.kubectlCode("logs", "-n", e.ns, "talker", "--tail=1")
		last, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(out), "tick-"))
		if err != nil {
			t.Fatalf("last line %q", out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(e.k8s.BinDir, "kubectl"), "--kubeconfig", e.k8s.Kubeconfig,
			"logs", "-f", "-n", e.ns, "talker", "--tail=1")
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "tick-")); err == nil && n > last+1 {
				return // printed after `kubectl logs -f` started
			}
		}
		t.Fatalf("kubectl logs -f ended without a newer line (err %v, ctx %v)", sc.Err(), ctx.Err())
	})

	t.Run("kubectl exec runs the command and returns its exit code", func(t *testing.T) {
		out, code := e.kubectlCode("exec", "-n", e.ns, "talker", "--", "sh", "-c", "echo hi; exit 3")
		if code != 3 || !strings.Contains(out, "hi\n") {
			t.Fatalf("exit %d, output %q; want 3 and hi", code, out)
		}
		out, code = e.kubectlCode("exec", "-n", e.ns, "talker", "--", "cat", "/proc/1/cmdline")
		if code != 0 || !strings.Contains(out, "hello-from-edge") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})

	t.Run("exec into a missing container is a clear error", func(t *testing.T) {
		out, code := e.kubectlCode("exec", "-n", e.ns, "talker", "-c", "nope", "--", "true")
		if code == 0 || !strings.Contains(out, "nope") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})

	t.Run("a stream for a pod of another node is refused", func(t *testing.T) {
		_, err := e.k8s.Client.CoreV1().Pods(e.ns).Create(context.Background(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"},
			Spec:       corev1.PodSpec{NodeName: "ghost-node", Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		caPEM, err := os.ReadFile(filepath.Join(e.pkiDir, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool,
			Certificates: []tls.Certificate{e.kubeletClient.Cert}}}} // as the API server
		resp, err := client.Get("https://" + streamAddr + "/containerLogs/" + e.ns + "/elsewhere/c")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "node ghost-node has no stream tunnel") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
}

// ptyCommand starts cmd with a new pseudo-terminal as its controlling terminal and stdio (opened
// from /dev/ptmx here, no library) and returns the master side: what is written to it is typed, what
// is read from it is the screen.
func ptyCommand(t *testing.T, cmd *exec.Cmd) *os.File {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	fd := int(master.Fd())
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("TIOCGPTN: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("TIOCSPTLCK: %v", err)
	}
	slave, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}); err != nil {
		t.Fatalf("TIOCSWINSZ: %v", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return master
}

// screen collects what a reader writes, for polling.
func screen(r io.Reader) *syncBuffer {
	b := &syncBuffer{}
	go func() { _, _ = io.Copy(b, r) }()
	return b
}

// Issue 10's remaining streams, with the real API server (its kubelet client certificate enforced by
// cloudstream), kubectl, cloudcore, edgecore and containerd: exec -it under a real terminal, attach,
// port-forward, and a client that never reads holding up nothing and leaving nothing behind.
func TestKubectlExecTTYAttachAndPortForwardReachEdgePodsWithTheKubeletClientCertEnforced(t *testing.T) {
	// Kedge's CA first, so the API server verifies cloudstream's serving certificate with it
	// (--kubelet-certificate-authority), as a production API server should.
	kedgePKI := t.TempDir()
	if _, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: kedgePKI}); err != nil {
		t.Fatal(err)
	}
	e := newEdgedClusterIn(t, kedgePKI, k8senv.APIServerFlag("kubelet-certificate-authority", filepath.Join(kedgePKI, pki.CACertName)))
	streamAddr := e.withStreams() // cloudstream requires the API server's kubelet client certificate
	clientCert := e.kubeletClient.Cert
	line := strings.Repeat("x", 200)
	e.apply(`apiVersion: v1
kind: Pod
metadata:
  name: chatty
spec:
  nodeName: ` + e.node + `
  containers:
  - name: c
    image: localhost/busybox:local
    command: ["sh", "-c", "echo chatty-start; while true; do i=0; while [ $i -lt 100 ]; do echo ` + line + `-$i; i=$((i+1)); done; sleep 0.1; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  nodeName: ` + e.node + `
  containers:
  - name: c
    image: localhost/busybox:local
    stdin: true
    command: ["sh", "-c", "echo reader-start; while read l; do echo got-$l; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: ` + e.node + `
  containers:
  - name: c
    image: localhost/busybox:local
    command: ["sh", "-c", "mkdir -p /www && echo served-through-port-forward > /www/index.html && exec httpd -f -p 80 -h /www"]
`)
	for _, p := range []string{"chatty", "reader", "web"} {
		waitFor(t, p+" running", 90*time.Second, func() (bool, string) {
			ready, status, _, raw := e.kubectlRow(p)
			return status == "Running", ready + " " + raw
		})
	}
	caPEM, err := os.ReadFile(filepath.Join(e.pkiDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	streamCA := x509.NewCertPool()
	streamCA.AppendCertsFromPEM(caPEM)
	kubectlBin := filepath.Join(e.k8s.BinDir, "kubectl")

	t.Run("kubectl logs works with the API server's kubelet client certificate", func(t *testing.T) {
		waitFor(t, "logs", 30*time.Second, func() (bool, string) {
			out, code := e.kubectlCode("logs", "-n", e.ns, "chatty", "--tail=1")
			return code == 0 && strings.HasPrefix(out, line), tail(out, 300)
		})
	})

	t.Run("a client without that certificate is refused in the TLS handshake", func(t *testing.T) {
		conn, err := tls.Dial("tcp", streamAddr, &tls.Config{RootCAs: streamCA})
		if err == nil { // TLS 1.3: the server's verdict on the client certificate arrives with the first read
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			_, _ = fmt.Fprintf(conn, "GET /containerLogs/%s/chatty/c HTTP/1.1\r\nHost: x\r\n\r\n", e.ns)
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("a client without a certificate got %v, want a handshake failure about its certificate", err)
		}
	})

	t.Run("kubectl exec -it runs a shell on a terminal", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", e.k8s.Kubeconfig, "exec", "-it", "-n", e.ns, "chatty", "--", "sh")
		master := ptyCommand(t, cmd)
		defer master.Close()
		scr := screen(master)
		waitFor(t, "a shell prompt", 60*time.Second, func() (bool, string) { return strings.Contains(scr.String(), "# "), scr.String() })
		if _, err := io.WriteString(master, "echo $((6*7))\r"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the typed line echoed by the terminal and the answer", 30*time.Second, func() (bool, string) {
			s := scr.String()
			i := strings.Index(s, "echo $((6*7))")
			return i >= 0 && strings.Contains(s[i:], "\r\n42\r\n"), s
		})
		if _, err := io.WriteString(master, "exit 0\r"); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("kubectl exec -it: %v\n%s", err, scr.String())
		}
	})

	t.Run("kubectl attach sends input to the container and shows its output", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", e.k8s.Kubeconfig, "attach", "-i", "-n", e.ns, "reader", "-c", "c")
		stdin, _ := cmd.StdinPipe()
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		// kubectl attaches after it starts reading stdin: a line typed too early may reach the
		// container before its output is attached, so type until an answer comes back.
		n := 0
		waitFor(t, "the container's answer to typed input", 60*time.Second, func() (bool, string) {
			n++
			_, _ = fmt.Fprintf(stdin, "hello-%d\n", n)
			return strings.Contains(out.String(), "got-hello-"), out.String()
		})
	})

	t.Run("kubectl port-forward reaches the pod's httpd", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		local := freePort(t)
		cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", e.k8s.Kubeconfig, "port-forward", "-n", e.ns, "pod/web", strconv.Itoa(local)+":80")
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		waitFor(t, "kubectl port-forward listening", 60*time.Second, func() (bool, string) {
			return strings.Contains(out.String(), "Forwarding from 127.0.0.1:"+strconv.Itoa(local)), out.String()
		})
		client := &http.Client{Timeout: 20 * time.Second}
		for i := range 3 { // each GET is a new stream on the same forwarded connection
			resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(local) + "/index.html")
			if err != nil {
				t.Fatalf("GET %d through the forwarded port: %v\n%s", i, err, out.String())
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "served-through-port-forward\n" {
				t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
			}
		}
	})

	t.Run("a client that never reads holds up nothing and leaves nothing behind once it goes", func(t *testing.T) {
		waitFor(t, "no stream session active", 30*time.Second, func() (bool, string) {
			v := e.cloud.metric("kedge_cloudstream_sessions_active")
			return v == 0, fmt.Sprint(v)
		})
		baseline := e.edge.metric("go_goroutines")
		conn, err := tls.Dial("tcp", streamAddr, &tls.Config{RootCAs: streamCA, Certificates: []tls.Certificate{clientCert}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, "GET /containerLogs/%s/chatty/c?follow=true HTTP/1.1\r\nHost: x\r\n\r\n", e.ns); err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 12)
		if _, err := io.ReadFull(conn, head); err != nil || string(head) != "HTTP/1.1 200" {
			t.Fatalf("follow: %q %v", head, err)
		}
		// ...and reads nothing more, while the container keeps writing.
		waitFor(t, "the stalled follow counted as active", 30*time.Second, func() (bool, string) {
			v := e.cloud.metric("kedge_cloudstream_sessions_active")
			return v == 1, fmt.Sprint(v)
		})
		out, code := e.kubectlCode("exec", "-n", e.ns, "chatty", "--", "echo", "still-served")
		if code != 0 || out != "still-served\n" {
			t.Fatalf("exec beside a stalled follow: %d %q", code, out)
		}
		out, code = e.kubectlCode("logs", "-n", e.ns, "chatty", "--tail=2")
		if code != 0 || !strings.HasPrefix(out, line) {
			t.Fatalf("logs beside a stalled follow: %d %q", code, tail(out, 300))
		}
		conn.Close()
		waitFor(t, "cloudstream's sessions back to 0", 30*time.Second, func() (bool, string) {
			v := e.cloud.metric("kedge_cloudstream_sessions_active")
			return v == 0, fmt.Sprint(v)
		})
		waitFor(t, "edgecore's goroutines back near their baseline", 30*time.Second, func() (bool, string) {
			v := e.edge.metric("go_goroutines")
			return v <= baseline+5, fmt.Sprintf("%v goroutines, %v before the stalled client", v, baseline)
		})
	})
}

// The API server checks the kubelet endpoint it dials for an edge node: with
// --kubelet-certificate-authority naming a CA that did not sign cloudstream's certificate, kubectl
// logs fails in the handshake and never reaches the node (the positive case, Kedge's CA, is the
// exec/attach/port-forward test above).
func TestAPIServerRefusesAStreamEndpointItsKubeletCADidNotSign(t *testing.T) {
	otherCA := t.TempDir()
	if _, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: otherCA}); err != nil {
		t.Fatal(err)
	}
	c := newClusterWith(t, nil, k8senv.APIServerFlag("kubelet-certificate-authority", filepath.Join(otherCA, pki.CACertName)))
	streamAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	c.cloudEnv = append(c.cloudEnv, "KEDGE_MODULES__CLOUDSTREAM__ENABLE=true",
		"KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS="+streamAddr,
		"KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS=127.0.0.1:"+strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__CLOUDSTREAM__ADVERTISEADDRESS=127.0.0.1",
		"KEDGE_MODULES__CLOUDSTREAM__PKIDIR="+c.pkiDir,
		"KEDGE_MODULES__CLOUDSTREAM__KUBECONFIG="+c.k8s.Kubeconfig,
		"KEDGE_MODULES__CLOUDSTREAM__CLIENTCAFILE="+c.kubeletClient.CAFile)
	if code, _ := c.cloud.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("cloudcore exit %d\n%s", code, c.cloud.stderr)
	}
	c.startCloud()
	port := int32(freePortOf(t, streamAddr))
	waitFor(t, "edge node advertises cloudstream as its kubelet endpoint", 60*time.Second, func() (bool, string) {
		n, err := c.k8s.Client.CoreV1().Nodes().Get(context.Background(), c.node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return n.Status.DaemonEndpoints.KubeletEndpoint.Port == port, fmt.Sprint(n.Status.DaemonEndpoints.KubeletEndpoint.Port)
	})
	if _, err := c.k8s.Client.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unverified"},
		Spec:       corev1.PodSpec{NodeName: c.node, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := c.k8s.Kubectl("logs", "-n", "default", "unverified")
	if err == nil || !strings.Contains(out, "x509") {
		t.Fatalf("kubectl logs through an endpoint the API server cannot verify: err %v, output %q; want an x509 refusal", err, out)
	}
	if n := c.cloud.metric("kedge_cloudstream_sessions_total"); n != 0 {
		t.Fatalf("%v sessions reached cloudstream; the handshake should have failed first", n)
	}
}
