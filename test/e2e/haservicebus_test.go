package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// ServiceBus calls reach a node through any replica: the edge is connected to replica a, the call is
// made on replica b's cloudbus. b's cloudhub finds a in the node's ownership Lease and forwards the
// request (mTLS, replica certificates, a's forward server), a queues it for its node, and the edge
// service's answer comes back through b. A node that no replica holds is refused at once.
func TestServiceBusCallOnAReplicaThatDoesNotHoldTheNodeIsForwardedToTheOneThatDoes(t *testing.T) {
	edgeSvc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Edge-Seen", r.Method+" "+r.URL.RequestURI())
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(append([]byte("edge got: "), body...))
	}))
	defer edgeSvc.Close()
	_, svcPort, _ := net.SplitHostPort(edgeSvc.Listener.Addr().String())

	c := newClusterWith(t, []string{"KEDGE_MODULES__SERVICEBUS__ALLOWEDPORTS=" + svcPort, "KEDGE_MODULES__SERVICEBUS__TIMEOUT=5s"})
	const token = "e2e-ha-servicebus-token-0123456789"
	fwdA, fwdB, busB := freePort(t), freePort(t), freePort(t)
	replicaEnv := func(name string, fwd int) []string {
		return []string{
			"KEDGE_INSTANCE__NAME=" + name,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG=" + c.k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDADDRESS=127.0.0.1:" + strconv.Itoa(fwd),
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDTIMEOUT=20s",
			"KEDGE_MODULES__CLOUDSTREAM__ENABLE=true",
			"KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
			"KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
			"KEDGE_MODULES__CLOUDSTREAM__ADVERTISEADDRESS=127.0.0.1",
			"KEDGE_MODULES__CLOUDSTREAM__PKIDIR=" + c.pkiDir,
			"KEDGE_MODULES__CLOUDSTREAM__KUBECONFIG=" + c.k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDSTREAM__CLIENTCAFILE=" + c.kubeletClient.CAFile,
			"KEDGE_MODULES__CLOUDSTREAM__CLIENTALLOWEDNAMES=" + c.kubeletClient.CommonName,
			"KEDGE_MODULES__CLOUDSTREAM__FORWARD__ENABLE=true", "KEDGE_MODULES__CLOUDSTREAM__FORWARD__ADDRESS=127.0.0.1:" + strconv.Itoa(fwd),
		}
	}
	// Replica a: the cluster's cloudcore, which the edge is joined to.
	c.cloudEnv = append(c.cloudEnv, replicaEnv("replica-a", fwdA)...)
	if code, _ := c.cloud.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("cloudcore exit %d\n%s", code, c.cloud.stderr)
	}
	c.startCloud()
	// Replica b: the same CA (pkiDir), its own hub ports (no edge dials them), and the cloudbus the
	// call is made on.
	b := start(t, "cloudcore", append(replicaEnv("replica-b", fwdB),
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:"+strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:"+strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR="+c.pkiDir,
		"KEDGE_MODULES__CLOUDBUS__ENABLE=true", "KEDGE_MODULES__CLOUDBUS__ADDRESS=127.0.0.1:"+strconv.Itoa(busB),
		"KEDGE_MODULES__CLOUDBUS__TOKEN="+token, "KEDGE_MODULES__CLOUDBUS__TIMEOUT=30s"))
	b.waitReady()
	waitFor(t, "the node connected to replica a only", 60*time.Second, func() (bool, string) {
		va, vb := c.cloud.metric("kedge_cloudhub_connected_nodes"), b.metric("kedge_cloudhub_connected_nodes")
		return va == 1 && vb == 0, fmt.Sprint("a ", va, " b ", vb)
	})

	call := func(method, path string, body []byte) (int, string, http.Header) {
		t.Helper()
		req, err := http.NewRequest(method, "http://127.0.0.1:"+strconv.Itoa(busB)+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	node := "/nodes/" + c.node + "/ports/" + svcPort

	// b learns from the ownership Lease (its informer) that a holds the node; until then it answers
	// node_offline.
	waitFor(t, "a call on replica b reaches the edge service", 60*time.Second, func() (bool, string) {
		code, body, _ := call("GET", node+"/ping", nil)
		return code == http.StatusCreated, fmt.Sprint(code, " ", body)
	})
	code, body, h := call("POST", node+"/upload?x=1", []byte{0, 1, 2, 0xff, 'z'})
	if code != http.StatusCreated || body != "edge got: \x00\x01\x02\xffz" || h.Get("X-Edge-Seen") != "POST /upload?x=1" {
		t.Fatalf("POST through replica b: %d %q (seen %q)", code, body, h.Get("X-Edge-Seen"))
	}
	if v := b.metric("kedge_cloudhub_forwards_total", `result="ok"`); v < 2 {
		t.Fatalf("replica b forwarded %v requests to a, want at least 2", v)
	}
	if v := c.cloud.metric("kedge_cloudstream_hub_relayed_total", `result="ok"`); v < 2 {
		t.Fatalf("replica a relayed %v forwarded requests to its node, want at least 2", v)
	}

	// A node nobody holds: refused at once, not queued.
	code, body, h = call("GET", "/nodes/ghost/ports/"+svcPort+"/", nil)
	if code != http.StatusServiceUnavailable || h.Get("X-Kedge-Servicebus-Reason") != "node_offline" {
		t.Fatalf("a node no replica holds: %d %q (reason %q), want 503 node_offline", code, body, h.Get("X-Kedge-Servicebus-Reason"))
	}

	// The edge stops: a releases the node's Lease and b refuses calls for it at once.
	if code, _ := c.edge.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("edgecore exit %d", code)
	}
	waitFor(t, "replica b refuses the stopped node", 60*time.Second, func() (bool, string) {
		code, body, h := call("GET", node+"/", nil)
		return code == http.StatusServiceUnavailable && h.Get("X-Kedge-Servicebus-Reason") == "node_offline", fmt.Sprint(code, " ", body)
	})
}
