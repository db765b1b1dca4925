package edgestream

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudstream"
)

// replicaPair is two cloudstream replicas sharing the cluster CA (one pkiDir) and the API (pods and
// the replicas' Leases, as cloudhub's ownership writes them); edge-a's edgestream is connected to
// replica b only.
type replicaPair struct {
	a, b       *cloudstream.Module
	regA, regB *prometheus.Registry
	api        *http.Client // the kube-apiserver's kubelet client
	rt         *fileRuntime
	dir        string
	ca         *pki.CA
}

func startReplica(t *testing.T, dir, id string, kube *fake.Clientset) (*cloudstream.Module, *prometheus.Registry) {
	t.Helper()
	c := cloudstream.New()
	c.StreamAddress, c.TunnelAddress, c.PKIDir, c.AdvertiseAddress = "127.0.0.1:0", "127.0.0.1:0", dir, "127.0.0.1"
	c.ClientCAFile = filepath.Join(dir, "cacert.pem")
	c.SessionTimeout, c.Heartbeat = 5*time.Second, time.Second
	c.Forward = cloudstream.ForwardSettings{Enable: true, Address: "127.0.0.1:0", Identity: id, Namespace: "kedge", DialTimeout: 3 * time.Second}
	cloudstream.SetClient(c, kube)
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	if err := c.Start(ctx, &testHost{name: "cloudstream", node: id, reg: reg}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = c.Stop(context.Background()) })
	// What cloudhub's ownership writes for this replica: its Lease with its forward address.
	holder := id
	if _, err := kube.CoordinationV1().Leases("kedge").Create(ctx, &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "kedge-replica-" + id, Labels: map[string]string{"kedge.io/ownership": "replica"},
			Annotations: map[string]string{"kedge.io/forward-address": c.Forward.Address}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return c, reg
}

func newReplicaPair(t *testing.T) *replicaPair {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	ca, _, err := pki.LoadOrCreateCA(ctx, pki.FileStorage{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	writeNodeCert(t, ca, dir, "edge-a")
	kube := fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: corev1.PodSpec{NodeName: "edge-a"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "nowhere"}, Spec: corev1.PodSpec{NodeName: "edge-z"}},
	)
	p := &replicaPair{dir: dir, ca: ca}
	p.a, p.regA = startReplica(t, dir, "replica-a", kube)
	p.b, p.regB = startReplica(t, dir, "replica-b", kube)
	eventually(t, "replica a knows replica b from its Lease", func() bool { return len(cloudstream.ForwardPeers(p.a)) == 1 })

	p.rt = &fileRuntime{logs: map[string]string{}, running: true, execSrv: newEchoUpgradeServer(t)}
	edge := New()
	edge.Server, edge.CAFile = p.b.TunnelAddress, filepath.Join(dir, "cacert.pem") // the load balancer sent the tunnel to b
	edge.CertFile, edge.KeyFile = filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	edge.Heartbeat, edge.BackoffMin, edge.BackoffMax, edge.LogPoll = time.Second, 10*time.Millisecond, 100*time.Millisecond, 20*time.Millisecond
	edge.rt = p.rt
	ectx, ecancel := context.WithCancel(ctx)
	if err := edge.Start(ectx, &testHost{name: Name, node: "edge-a", reg: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ecancel(); _ = edge.Stop(context.Background()) })
	eventually(t, "tunnel up", func() bool { return edge.LinkUp(ctx) == nil })

	apiKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	apiCert, err := ca.IssueNodeCert(&apiKey.PublicKey, "kube-apiserver", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p.api = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(),
		Certificates: []tls.Certificate{{Certificate: [][]byte{apiCert.Raw}, PrivateKey: apiKey}}}, DisableKeepAlives: true}}
	return p
}

func writeNodeCert(t *testing.T, ca *pki.CA, dir, node string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := ca.IssueNodeCert(&key.PublicKey, node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, filepath.Join(dir, "node.crt"), "CERTIFICATE", cert.Raw)
	writePEM(t, filepath.Join(dir, "node.key"), "EC PRIVATE KEY", kder)
	writePEM(t, filepath.Join(dir, "cacert.pem"), "CERTIFICATE", ca.Certificate().Raw)
}

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		total := 0.0
	metric:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() != value {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
		return total
	}
	return 0
}

func TestAReplicaWithoutTheNodesTunnelForwardsLogsFollowAndExecToTheReplicaHoldingIt(t *testing.T) {
	p := newReplicaPair(t)
	logFile := filepath.Join(p.dir, "c.log")
	p.rt.mu.Lock()
	p.rt.logs["ns/p/c"] = logFile
	p.rt.mu.Unlock()
	appendLog := func(line string) {
		t.Helper()
		f, err := openAppend(logFile)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, line)
		f.Close()
	}
	appendLog("2024-05-01T10:00:00Z stdout F before")

	// kubectl logs -f through replica a: the first line, then a line written after the request
	// started arrives while the stream stays open (nothing buffered on the way).
	resp, err := p.api.Get("https://" + p.a.StreamAddress + "/containerLogs/ns/p/c?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("logs through replica a: %d %s", resp.StatusCode, b)
	}
	rd := bufio.NewReader(resp.Body)
	if l, err := rd.ReadString('\n'); err != nil || l != "before\n" {
		t.Fatalf("first line %q %v", l, err)
	}
	appendLog("2024-05-01T10:00:05Z stdout F after")
	got := make(chan string, 1)
	go func() { l, _ := rd.ReadString('\n'); got <- l }()
	select {
	case l := <-got:
		if l != "after\n" {
			t.Fatalf("followed line %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a followed line did not come through the forward within 10s")
	}

	// kubectl exec through replica a: the SPDY upgrade, then bytes both ways.
	conn, err := tls.Dial("tcp", p.a.StreamAddress, p.api.Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /exec/ns/p/c?command=sh&output=1&input=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
	crd := bufio.NewReader(conn)
	up, err := http.ReadResponse(crd, nil)
	if err != nil || up.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("exec upgrade through replica a: %v %v", up, err)
	}
	if l, _ := crd.ReadString('\n'); l != "ran sh\n" {
		t.Fatalf("runtime saw %q", l)
	}
	fmt.Fprintf(conn, "ping\n")
	if l, _ := crd.ReadString('\n'); l != "echo ping\n" {
		t.Fatalf("echo %q", l)
	}

	if got := counter(t, p.regA, "kedge_cloudstream_forwards_total", "result", "ok"); got != 2 {
		t.Fatalf("replica a forwarded %v requests, want 2", got)
	}
	if got := counter(t, p.regB, "kedge_cloudstream_forwarded_served_total", "", ""); got != 2 {
		t.Fatalf("replica b served %v forwarded requests, want 2", got)
	}
	if got := counter(t, p.regB, "kedge_cloudstream_forwards_total", "", ""); got != 0 {
		t.Fatalf("replica b forwarded %v requests; it holds the tunnel", got)
	}

	// A node no replica holds: answered as before (503), counted, not looped.
	code, body := getStatus(t, p.api, "https://"+p.a.StreamAddress+"/containerLogs/ns/nowhere/c")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "edge-z") {
		t.Fatalf("a node nobody holds: %d %q", code, body)
	}
	if got := counter(t, p.regA, "kedge_cloudstream_forwards_total", "result", "no_owner"); got != 1 {
		t.Fatalf("no_owner %v, want 1", got)
	}
}

func TestTheForwardServerRefusesAndCountsCallersThatAreNotReplicas(t *testing.T) {
	p := newReplicaPair(t)
	// A node certificate of the cluster CA: the TLS handshake passes, the forward server refuses it.
	pair, err := tls.LoadX509KeyPair(filepath.Join(p.dir, "node.crt"), filepath.Join(p.dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	node := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ca.Pool(), Certificates: []tls.Certificate{pair}}, DisableKeepAlives: true}}
	for _, path := range []string{"/tunnels/edge-a", "/containerLogs/ns/p/c", "/exec/ns/p/c?command=sh", "/hub/messages"} {
		code, body := getStatus(t, node, "https://"+p.b.Forward.Address+path)
		if code != http.StatusForbidden || !strings.Contains(body, "not a cloudcore replica") {
			t.Fatalf("a node certificate at %s: %d %q", path, code, body)
		}
	}
	if got := counter(t, p.regB, "kedge_cloudstream_forward_refused_total", "reason", "not_a_replica"); got != 4 {
		t.Fatalf("not_a_replica refusals %v, want 4", got)
	}
	// A certificate of another CA, and none at all: refused in the TLS handshake, counted.
	other, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged, err := other.IssueReplicaCert(&key.PublicKey, "replica-a", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, certs := range [][]tls.Certificate{{{Certificate: [][]byte{forged.Raw}, PrivateKey: key}}, nil} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ca.Pool(), Certificates: certs}, DisableKeepAlives: true}}
		if resp, err := c.Get("https://" + p.b.Forward.Address + "/tunnels/edge-a"); err == nil {
			resp.Body.Close()
			t.Fatalf("a caller without a replica certificate of the cluster CA got %d", resp.StatusCode)
		}
	}
	eventually(t, "TLS refusals counted", func() bool {
		return counter(t, p.regB, "kedge_cloudstream_forward_refused_total", "reason", "tls_bad_cert")+
			counter(t, p.regB, "kedge_cloudstream_forward_refused_total", "reason", "tls_no_cert") >= 2
	})
	if got := testutil.CollectAndCount(p.regB, "kedge_cloudstream_forwarded_served_total"); got != 1 {
		t.Fatalf("served metric series %d", got)
	}
	if got := counter(t, p.regB, "kedge_cloudstream_forwarded_served_total", "", ""); got != 0 {
		t.Fatalf("a refused caller was served %v times", got)
	}
}

func getStatus(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
}

// A replica may forward only a sync request for a node to /hub/messages; anything else is refused
// with 400 (405 for another method), named, counted, and never reaches the hub module.
func TestTheForwardServerRefusesHubMessagesThatAreNotSyncRequestsForANode(t *testing.T) {
	p := newReplicaPair(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := p.ca.IssueReplicaCert(&key.PublicKey, "replica-c", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	replica := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ca.Pool(),
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}, DisableKeepAlives: true}}
	sync := `{"header":{"msg_id":"m1","timestamp":1,"sync":true},"route":{"operation":"request","group":"func","resource":"node/edge-a/-/servicebus/80"},"content":{}}`
	for _, tc := range []struct {
		name, method, body, timeout string
		code                        int
		says                        string
	}{
		{"not a message", http.MethodPost, "not json", "", http.StatusBadRequest, "decode message"},
		{"a message without an ID", http.MethodPost, `{"header":{},"route":{"operation":"request","resource":"node/edge-a/-/servicebus/80"}}`, "", http.StatusBadRequest, "msg_id"},
		{"a message not for a node", http.MethodPost, `{"header":{"msg_id":"m2","sync":true},"route":{"operation":"request","resource":"default/pod/x"}}`, "", http.StatusBadRequest, "not for a node"},
		{"a message that is not a sync request", http.MethodPost, `{"header":{"msg_id":"m3"},"route":{"operation":"update","resource":"node/edge-a/default/pod/x"}}`, "", http.StatusBadRequest, "not a sync request"},
		{"a bad timeout", http.MethodPost, sync, "-5", http.StatusBadRequest, "X-Kedge-Forward-Timeout-Ms"},
		{"another method", http.MethodGet, "", "", http.StatusMethodNotAllowed, "only POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "https://"+p.b.Forward.Address+"/hub/messages", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.timeout != "" {
				req.Header.Set("X-Kedge-Forward-Timeout-Ms", tc.timeout)
			}
			resp, err := replica.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.says) {
				t.Fatalf("got %d %q, want %d naming %q", resp.StatusCode, b, tc.code, tc.says)
			}
		})
	}
	if got := counter(t, p.regB, "kedge_cloudstream_hub_relayed_total", "result", "invalid"); got != 6 {
		t.Fatalf("invalid hub messages counted %v, want 6", got)
	}
	if got := counter(t, p.regB, "kedge_cloudstream_hub_relayed_total", "result", "ok"); got != 0 {
		t.Fatalf("%v refused messages were relayed", got)
	}
}
