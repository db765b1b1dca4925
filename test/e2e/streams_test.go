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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	e.apply(`apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  nodeName: ` + e.node + `
  containers:
  - name: c
    image: localhost/busybox:local
    command: ["sh", "-c", "echo hello-from-edge; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done"]
`)
	waitFor(t, "talker running", 90*time.Second, func() (bool, string) {
		ready, status, _, raw := e.kubectlRow("talker")
		return status == "Running", ready + " " + raw
	})

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
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
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
