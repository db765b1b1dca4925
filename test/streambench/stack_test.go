// Package streambench measures kubectl's stream paths to an edge pod through the real stack: the
// kube-apiserver (k8senv), cloudstream (kubelet API + tunnel), edgestream, edged + metamanager (real
// SQLite) and containerd over CRI (crienv).
package streambench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/cloudstream"
	"github.com/kedge-io/kedge/plugins/builtin/edged"
	"github.com/kedge-io/kedge/plugins/builtin/edgestream"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// miniHost is the part of a host cloudstream and edgestream use (no messages, no store).
type miniHost struct {
	sdk.Host
	name, node string
	log        *slog.Logger
}

func (h *miniHost) Name() string                   { return h.name }
func (h *miniHost) NodeName() string               { return h.node }
func (h *miniHost) Logger() *slog.Logger           { return h.log }
func (h *miniHost) Metrics() prometheus.Registerer { return prometheus.NewRegistry() }

type stack struct {
	b   *testing.B
	env *k8senv.Env
	cri *crienv.Client
	h   *sdktest.Harness // edged + metamanager
	ns  string
}

// newStack starts the whole path once for a benchmark, or skips it saying what is missing.
func newStack(b *testing.B) *stack {
	b.Helper()
	if testing.Short() {
		b.Skip("needs containerd and a kube-apiserver (not with -short)")
	}
	ep, err := crienv.Endpoint()
	if err != nil {
		b.Skipf("no containerd: %v", err)
	}
	cri, err := crienv.Dial(ep)
	if err != nil {
		b.Skipf("no containerd at %s: %v", ep, err)
	}
	b.Cleanup(func() { _ = cri.Close() })
	kc, err := k8senv.NewKubeletClient(b.TempDir()) // the API server's kubelet client certificate, which cloudstream requires
	if err != nil {
		b.Fatal(err)
	}
	env, err := k8senv.Start(k8senv.WithKubeletClient(kc))
	if err != nil {
		b.Skipf("no control plane: %v", err)
	}
	b.Cleanup(func() { _ = env.Stop() })
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := context.Background()
	node := sdktest.NodeName

	// The cluster CA cloudstream loads from its pkiDir, and this node's certificate from it.
	dir := b.TempDir()
	ca, _, err := pki.LoadOrCreateCA(ctx, pki.FileStorage{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := ca.IssueNodeCert(&key.PublicKey, node, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	for f, blk := range map[string]*pem.Block{"node.crt": {Type: "CERTIFICATE", Bytes: cert.Raw}, "node.key": {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(filepath.Join(dir, f), pem.EncodeToMemory(blk), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "edge-ca.crt"), ca.CertPEM(), 0o600); err != nil {
		b.Fatal(err)
	}

	cloud := cloudstream.New()
	cloud.StreamAddress, cloud.TunnelAddress, cloud.PKIDir, cloud.AdvertiseAddress = "127.0.0.1:0", "127.0.0.1:0", dir, "127.0.0.1"
	cloud.ClientCAFile = kc.CAFile
	cloudstream.SetClient(cloud, env.Client)
	cctx, ccancel := context.WithCancel(ctx)
	if err := cloud.Start(cctx, &miniHost{name: cloudstream.Name, node: "cloud", log: logger}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ccancel(); _ = cloud.Stop(context.Background()) })

	// edged with its shipped defaults, beside metamanager, as in test/edgedbench.
	mm, _ := sdk.Lookup(metamanager.Name)
	ed, _ := sdk.Lookup(edged.Name)
	h := sdktest.Run(b, ed, map[string]any{"criEndpoint": ep, "rootDir": b.TempDir(), "podSandboxImage": crienv.Pause},
		sdktest.Beside(mm, map[string]any{"metaServer": map[string]any{"enable": false}}), sdktest.Logger(logger))

	es := edgestream.New()
	es.Server, es.CAFile = cloud.TunnelAddress, filepath.Join(dir, "edge-ca.crt")
	es.CertFile, es.KeyFile, es.CRIEndpoint = filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"), ep
	ectx, ecancel := context.WithCancel(ctx)
	if err := es.Start(ectx, &miniHost{name: edgestream.Name, node: node, log: logger}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ecancel(); _ = es.Stop(context.Background()) })

	// The node as edgecontroller writes it when cloudstream advertises itself: the API server's
	// kubelet calls for it go to cloudstream.
	_, port, _ := cutLast(cloud.StreamAddress, ':')
	n, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "127.0.0.1"}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(atoi(b, port))
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		b.Fatal(err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	s := &stack{b: b, env: env, cri: cri, h: h, ns: "streambench-" + hex.EncodeToString(suffix)}
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cri.RemoveSandboxes(cctx, map[string]string{"kedge.io/managed": "edged", "io.kubernetes.pod.namespace": s.ns}); err != nil {
			b.Errorf("removing the benchmark's sandboxes: %v", err)
		}
	})
	wait(b, "the stream tunnel up", func() bool { return es.Healthy(ctx) == nil })
	return s
}

// run creates a host-network busybox pod bound to the node in the API, hands it to the edge as the
// cloud would (metamanager stores it, edged runs it) and waits for its container to run.
func (s *stack) run(name string, command ...string) {
	s.b.Helper()
	grace := int64(1)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns},
		Spec: corev1.PodSpec{NodeName: sdktest.NodeName, HostNetwork: true, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "main", Image: crienv.Busybox, ImagePullPolicy: corev1.PullIfNotPresent, Command: command}}}}
	created, err := s.env.Client.CoreV1().Pods(s.ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		s.b.Fatal(err)
	}
	m, err := message.New("edgehub", "resource", message.OpInsert, s.ns+"/pod/"+name).WithContent(created)
	if err != nil {
		s.b.Fatal(err)
	}
	reply, err := s.h.Router.SendSync(context.Background(), metamanager.Name, m, 30*time.Second)
	if err != nil || reply.Route.Operation == message.OpError {
		s.b.Fatalf("metamanager refused %s: %v %s", name, err, reply.Content)
	}
	wait(s.b, name+" running in containerd", func() bool {
		resp, err := s.cri.Runtime.ListContainers(context.Background(), &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{
			State:         &criv1.ContainerStateValue{State: criv1.ContainerState_CONTAINER_RUNNING},
			LabelSelector: map[string]string{"kedge.io/managed": "edged", "io.kubernetes.pod.namespace": s.ns, "io.kubernetes.pod.name": name}}})
		return err == nil && len(resp.Containers) > 0
	})
}

// logs reads a pod's whole log through the API server and returns its size.
func (s *stack) logs(name string, opts *corev1.PodLogOptions) (int64, string, error) {
	rc, err := s.env.Client.CoreV1().Pods(s.ns).GetLogs(name, opts).Stream(context.Background())
	if err != nil {
		return 0, "", err
	}
	defer rc.Close()
	if opts.TailLines != nil {
		b, err := io.ReadAll(rc)
		return int64(len(b)), string(b), err
	}
	n, err := io.Copy(io.Discard, rc)
	return n, "", err
}

func wait(b *testing.B, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("%s: not within 2m", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// percentile is the nearest-rank percentile of ds (sorted in place), in milliseconds.
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(p*float64(len(ds))+0.999999) - 1
	i = max(0, min(i, len(ds)-1))
	return float64(ds[i]) / float64(time.Millisecond)
}

func cutLast(s string, sep byte) (string, string, bool) {
	i := strings.LastIndexByte(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

func atoi(b *testing.B, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		b.Fatalf("port %q: %v", s, err)
	}
	return n
}
