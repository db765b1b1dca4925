package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Any replica answers for any node, with the real API server, kubectl and a busybox pod in
// containerd: the edge's stream tunnel is held by replica a, but the node's kubelet endpoint (what a
// load balancer would have sent the API server to) is replica b's stream port. kubectl logs and exec
// reach b, which forwards them over mTLS to a, which serves them from its tunnel; so does kubectl
// port-forward (an SPDY upgrade, then several streams) to a busybox httpd.
func TestKubectlLogsExecAndPortForwardThroughAReplicaThatDoesNotHoldTheNodesTunnel(t *testing.T) {
	e := newEdgedCluster(t)
	fwdA, fwdB, streamB := freePort(t), freePort(t), freePort(t)
	e.cloudEnv = append(e.cloudEnv,
		"KEDGE_INSTANCE__NAME=replica-a",
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG="+e.k8s.Kubeconfig,
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDADDRESS=127.0.0.1:"+strconv.Itoa(fwdA),
		"KEDGE_MODULES__CLOUDSTREAM__FORWARD__ENABLE=true", "KEDGE_MODULES__CLOUDSTREAM__FORWARD__ADDRESS=127.0.0.1:"+strconv.Itoa(fwdA))
	e.withStreams()

	// Replica b: the same CA (pkiDir), its own ports, no edge connected to it.
	b := start(t, "cloudcore", []string{
		"KEDGE_INSTANCE__NAME=replica-b",
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + e.pkiDir,
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG=" + e.k8s.Kubeconfig,
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDADDRESS=127.0.0.1:" + strconv.Itoa(fwdB),
		"KEDGE_MODULES__CLOUDSTREAM__ENABLE=true",
		"KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS=127.0.0.1:" + strconv.Itoa(streamB),
		"KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__CLOUDSTREAM__ADVERTISEADDRESS=127.0.0.1",
		"KEDGE_MODULES__CLOUDSTREAM__PKIDIR=" + e.pkiDir,
		"KEDGE_MODULES__CLOUDSTREAM__KUBECONFIG=" + e.k8s.Kubeconfig,
		"KEDGE_MODULES__CLOUDSTREAM__CLIENTCAFILE=" + e.kubeletClient.CAFile,
		"KEDGE_MODULES__CLOUDSTREAM__CLIENTALLOWEDNAMES=" + e.kubeletClient.CommonName,
		"KEDGE_MODULES__CLOUDSTREAM__FORWARD__ENABLE=true", "KEDGE_MODULES__CLOUDSTREAM__FORWARD__ADDRESS=127.0.0.1:" + strconv.Itoa(fwdB),
	})
	b.waitReady()

	// The node's kubelet endpoint becomes b's stream port (as if the load balancer chose b).
	e.cloudEnv = append(e.cloudEnv, "KEDGE_MODULES__CLOUDSTREAM__ADVERTISEPORT="+strconv.Itoa(streamB))
	if code, _ := e.cloud.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("cloudcore exit %d\n%s", code, e.cloud.stderr)
	}
	e.startCloud()
	waitFor(t, "the node's kubelet endpoint is replica b", 60*time.Second, func() (bool, string) {
		n, err := e.k8s.Client.CoreV1().Nodes().Get(context.Background(), e.node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return n.Status.DaemonEndpoints.KubeletEndpoint.Port == int32(streamB), fmt.Sprint(n.Status.DaemonEndpoints.KubeletEndpoint.Port)
	})
	waitFor(t, "the tunnel on replica a", 30*time.Second, func() (bool, string) {
		return e.cloud.metric("kedge_cloudstream_tunnels") == 1 && b.metric("kedge_cloudstream_tunnels") == 0, ""
	})

	e.runShell("talker", "echo hello-from-edge; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done")
	waitFor(t, "kubectl logs through replica b", 60*time.Second, func() (bool, string) {
		out, code := e.kubectlCode("logs", "-n", e.ns, "talker")
		return code == 0 && strings.HasPrefix(out, "hello-from-edge\ntick-1\n"), out
	})
	out, code := e.kubectlCode("exec", "-n", e.ns, "talker", "--", "sh", "-c", "echo hi; exit 3")
	if code != 3 || !strings.HasPrefix(out, "hi\n") {
		t.Fatalf("kubectl exec through replica b: exit %d, output %q", code, out)
	}

	// kubectl port-forward through replica b: the SPDY upgrade forwarded to a, then each GET a new
	// stream on the same forwarded connection to the pod's httpd.
	e.runShell("web", "mkdir -p /www && echo served-through-replica-b > /www/index.html && exec httpd -f -p 80 -h /www")
	pfCtx, pfCancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer pfCancel()
	local := freePort(t)
	pf := exec.CommandContext(pfCtx, filepath.Join(e.k8s.BinDir, "kubectl"), "--kubeconfig", e.k8s.Kubeconfig,
		"port-forward", "-n", e.ns, "pod/web", strconv.Itoa(local)+":80")
	pfOut := &syncBuffer{}
	pf.Stdout, pf.Stderr = pfOut, pfOut
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pfCancel(); _ = pf.Wait() }()
	waitFor(t, "kubectl port-forward listening", 60*time.Second, func() (bool, string) {
		return strings.Contains(pfOut.String(), "Forwarding from 127.0.0.1:"+strconv.Itoa(local)), pfOut.String()
	})
	client := &http.Client{Timeout: 20 * time.Second}
	for i := range 3 {
		resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(local) + "/index.html")
		if err != nil {
			t.Fatalf("GET %d through the port forwarded by replica b: %v\n%s", i, err, pfOut.String())
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "served-through-replica-b\n" {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
		}
	}

	if v := b.metric("kedge_cloudstream_forwards_total", `result="ok"`); v < 3 {
		t.Fatalf("replica b forwarded %v requests, want at least 3 (logs, exec, port-forward)", v)
	}
	if v := e.cloud.metric("kedge_cloudstream_forwarded_served_total"); v < 3 {
		t.Fatalf("replica a served %v forwarded requests, want at least 3", v)
	}
	// The holder was found from the node's ownership Lease (a holds both the hub connection and the tunnel).
	if v := b.metric("kedge_cloudstream_forward_lookups_total", `via="lease"`); v < 3 {
		t.Fatalf("replica b found the holder from the Lease %v times, want at least 3", v)
	}
}
