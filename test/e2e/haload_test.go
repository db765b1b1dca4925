package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// twinWriter reports a device's temperature on one edge's broker every 100 ms, in order: value n is
// published (QoS 1) only after the edge's devicetwin acknowledged n-1 on the result topic.
type twinWriter struct {
	node, ns, device string
	client           mqtt.Client
	results          chan string // event IDs acknowledged without an error code
	refused          chan string
	mu               sync.Mutex
	acked            int // the last value acknowledged
}

func newTwinWriter(t *testing.T, node, ns, device string, port int) *twinWriter {
	t.Helper()
	w := &twinWriter{node: node, ns: ns, device: device, results: make(chan string, 1024), refused: make(chan string, 16)}
	opts := mqtt.NewClientOptions().AddBroker("tcp://127.0.0.1:" + strconv.Itoa(port)).SetClientID("e2e-twins-" + node).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond)
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(w.topic()+"/result", 1, func(_ mqtt.Client, m mqtt.Message) {
			var p map[string]any
			if json.Unmarshal(m.Payload(), &p) != nil {
				return
			}
			id, _ := p["event_id"].(string)
			if _, failed := p["code"]; failed {
				select {
				case w.refused <- string(m.Payload()):
				default:
				}
				return
			}
			w.results <- id
		})
	})
	w.client = mqtt.NewClient(opts)
	if tok := w.client.Connect(); !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: MQTT connect: %v", node, tok.Error())
	}
	t.Cleanup(func() { w.client.Disconnect(100) })
	return w
}

func (w *twinWriter) topic() string { return "$hw/events/device/" + w.device + "/twin/update" }

// write publishes value n and waits for its acknowledgement (false: none within limit).
func (w *twinWriter) write(n int, limit time.Duration) (bool, error) {
	id := fmt.Sprintf("tw-%s-%d", w.node, n)
	ts := time.Now().UnixMilli()
	payload := fmt.Sprintf(`{"event_id":%q,"timestamp":%d,"twin":{"temperature":{"actual":{"value":"%d","metadata":{"timestamp":%d}}}}}`, id, ts, n, ts)
	if tok := w.client.Publish(w.topic(), 1, false, payload); !tok.WaitTimeout(limit) || tok.Error() != nil {
		return false, tok.Error()
	}
	deadline := time.After(limit)
	for {
		select {
		case got := <-w.results:
			if got == id {
				w.mu.Lock()
				w.acked = n
				w.mu.Unlock()
				return true, nil
			}
		case p := <-w.refused:
			return false, fmt.Errorf("refused: %s", p)
		case <-deadline:
			return false, nil
		}
	}
}

func (w *twinWriter) last() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

// The kill acceptance under load: three cloudcores behind HAProxy, three real edgecores each with a
// device whose temperature is reported every 100 ms in order (each report acknowledged by the edge
// before the next), and 51 pods being created across the nodes (one node runs edged on the test's
// containerd, the others noruntime). kill -9 of the replica holding the most nodes in the middle:
// every node is held by a survivor and Ready, every pod reached its node (Running in kubectl on
// edged's node; NoContainerRuntime, reported by the edge, on the others), and each
// Device's reported temperature ends at the last value written, never going backwards on the way
// (sampled) — nothing acknowledged was lost, none applied out of order or again after a newer one.
func TestAReplicaKilledWhilePodsAreCreatedAndTwinsReportedLosesNothing(t *testing.T) {
	needBinaries(t)
	criEP, cri := crienv.Start(t)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	podNS := "ld-pods-" + hex.EncodeToString(suffix)
	// Registered first, so it runs last: after edgecore is gone, nothing of this test stays in containerd.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cri.RemoveSandboxes(ctx, map[string]string{edgedManaged: "edged", edgedPodNamespace: podNS}); err != nil {
			t.Errorf("removing the test's sandboxes: %v", err)
		}
	})
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	api, err := devicecontroller.NewRESTClient(k8s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ns = "kedge-ha-load"
	for _, n := range []string{ns, podNS} {
		if _, err := k8s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	var rs []*haReplica
	for i := range 3 {
		rs = append(rs, &haReplica{name: fmt.Sprintf("ld-cc-%d", i), hub: freePort(t), certs: freePort(t)})
	}
	lbHub, lbCerts := freePort(t), freePort(t)
	for _, r := range rs {
		r.d = start(t, "cloudcore", []string{
			"KEDGE_INSTANCE__NAME=" + r.name, "KEDGE_SHUTDOWNTIMEOUT=15s",
			"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(r.hub),
			"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(r.certs),
			"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + filepath.Join(dir, r.name, "pki"),
			"KEDGE_MODULES__CLOUDHUB__HEARTBEAT=1s", "KEDGE_MODULES__CLOUDHUB__ACKTIMEOUT=2s",
			"KEDGE_MODULES__CLOUDHUB__CASECRET__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__CASECRET__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__CASECRET__NAMESPACE=" + ns,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__NAMESPACE=" + ns, "KEDGE_MODULES__CLOUDHUB__OWNERSHIP__REPLICALEASEDURATION=6s",
			"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true", "KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__EDGECONTROLLER__NODEGRACEPERIOD=20s", "KEDGE_MODULES__EDGECONTROLLER__INVENTORYWAIT=2s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__NAMESPACE=" + ns,
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__LEASEDURATION=4s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__RENEWDEADLINE=3s",
			"KEDGE_MODULES__EDGECONTROLLER__LEADERELECTION__RETRYPERIOD=500ms",
			"KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true", "KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__DEVICECONTROLLER__INVENTORYWAIT=2s",
		})
		r.d.waitReady()
	}
	startHAProxy(t, lbHub, lbCerts, rs)
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--ca-secret", ns+"/"+kubestore.DefaultCASecretName,
		"--kubeconfig", k8s.Kubeconfig, "--uses", "3")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	type edge struct {
		node string
		port int
		d    *daemon
		w    *twinWriter
		rig  *deviceRig
	}
	var edges []*edge
	for i := range 3 {
		e := &edge{node: fmt.Sprintf("ld-edge-%d", i), port: freePort(t)}
		edir := filepath.Join(dir, e.node)
		conf := filepath.Join(edir, "edgecore.yaml")
		waitFor(t, "join of "+e.node+" through haproxy", 60*time.Second, func() (bool, string) {
			code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
				"--node-name", e.node, "--data-dir", filepath.Join(edir, "data"), "--config-out", conf,
				"--cert-port", strconv.Itoa(lbCerts), "--hub-port", strconv.Itoa(lbHub))
			return code == 0, out + stderr
		})
		runtime := []string{ // the others run no containers: noruntime reports their pods
			"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime", "KEDGE_MODULES__NORUNTIME__ENABLE=true", "KEDGE_MODULES__EDGED__ENABLE=false"}
		if i == 0 { // edged on the test's containerd
			runtime = []string{"KEDGE_MODULES__NORUNTIME__ENABLE=false", "KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=edged",
				"KEDGE_MODULES__EDGED__ENABLE=true", "KEDGE_MODULES__EDGED__CRIENDPOINT=" + criEP,
				"KEDGE_MODULES__EDGED__ROOTDIR=" + filepath.Join(edir, "edged"), "KEDGE_MODULES__EDGED__PODSANDBOXIMAGE=" + crienv.Pause,
				"KEDGE_MODULES__EDGED__STATUSPERIOD=500ms", "KEDGE_MODULES__EDGED__BACKOFF__BASE=500ms", "KEDGE_MODULES__EDGED__BACKOFF__MAX=10s"}
		}
		e.d = start(t, "edgecore", append([]string{
			"KEDGE_STORE__PATH=" + filepath.Join(edir, "edge.db"),
			"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
			"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
			"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
			"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal", "KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(e.port),
		}, runtime...), "--config", conf)
		e.d.waitReadyOffline()
		e.rig = &deviceRig{t: t, api: api, ns: fmt.Sprintf("ld-dev-%d", i), device: "thermometer-1", c: &cluster{t: t, k8s: k8s, node: e.node}}
		edges = append(edges, e)
	}
	allReady := func() (bool, string) {
		var not []string
		for _, e := range edges {
			if s := nodeReadyStatus(k8s.Client, e.node); s != "True" {
				not = append(not, e.node+"="+s)
			}
		}
		return len(not) == 0, strings.Join(not, " ")
	}
	waitFor(t, "every node Ready", 120*time.Second, allReady)
	for _, e := range edges {
		e.rig.applyExamples()
		e.w = newTwinWriter(t, e.node, e.rig.ns, e.rig.device, e.port)
		// The edge takes reports for the device once its membership arrived.
		waitFor(t, e.node+": a first twin report acknowledged", 90*time.Second, func() (bool, string) {
			ok, err := e.w.write(1, 3*time.Second)
			return ok, fmt.Sprint(err)
		})
	}

	// Sample every Device's reported temperature; it must never go backwards.
	var mu sync.Mutex
	seen := map[string][]int{}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for sampleCtx.Err() == nil {
			for _, e := range edges {
				c, cancel := context.WithTimeout(sampleCtx, 5*time.Second)
				dev := &v1beta1.Device{}
				err := api.Get().Namespace(e.rig.ns).Resource(v1beta1.ResourceDevices).Name(e.rig.device).Do(c).Into(dev)
				cancel()
				if err != nil {
					continue
				}
				if tw, ok := findTwin(dev.Status, "temperature"); ok {
					if v, err := strconv.Atoi(tw.Reported.Value); err == nil {
						mu.Lock()
						if s := seen[e.node]; len(s) == 0 || s[len(s)-1] != v {
							seen[e.node] = append(s, v)
						}
						mu.Unlock()
					}
				}
			}
			select {
			case <-sampleCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	defer func() { stopSampling(); wg.Wait() }()

	// The writers: value n+1 every 100 ms after n was acknowledged, until told to stop.
	stopWriting := make(chan struct{})
	var writers sync.WaitGroup
	writeErr := make(chan error, len(edges))
	for _, e := range edges {
		writers.Go(func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for n := 2; ; n++ {
				select {
				case <-stopWriting:
					return
				case <-tick.C:
				}
				for {
					ok, err := e.w.write(n, 30*time.Second)
					if err != nil {
						writeErr <- fmt.Errorf("%s: twin report %d: %w", e.node, n, err)
						return
					}
					if ok {
						break
					}
					// Not acknowledged within 30 s (the broker or the edge was slow): the same value again.
				}
			}
		})
	}
	// The pods: 51 across the nodes, created while the writers run and while the replica dies.
	var podsWG sync.WaitGroup
	var pods []*corev1.Pod
	var created atomic.Int32
	for i := range 51 {
		e := edges[i%len(edges)]
		pods = append(pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("load-%02d", i), Namespace: podNS},
			Spec: corev1.PodSpec{NodeName: e.node, Containers: []corev1.Container{{Name: "c", Image: crienv.Busybox, Command: []string{"sleep", "3600"}}}}})
	}
	podErr := make(chan error, 1)
	podsWG.Go(func() {
		for _, p := range pods {
			if _, err := k8s.Client.CoreV1().Pods(podNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				podErr <- err
				return
			}
			created.Add(1)
			time.Sleep(150 * time.Millisecond)
		}
	})
	waitFor(t, "twin reports flowing on every node, pods being created", 60*time.Second, func() (bool, string) {
		s := []string{fmt.Sprint("pods ", created.Load())}
		if created.Load() >= 10 {
			s = nil
		}
		for _, e := range edges {
			if e.w.last() < 20 {
				s = append(s, fmt.Sprint(e.node, "=", e.w.last()))
			}
		}
		return len(s) == 0, strings.Join(s, " ")
	})

	holders := func() map[string]string {
		out := map[string]string{}
		for _, e := range edges {
			l, err := k8s.Client.CoordinationV1().Leases(ns).Get(ctx, cloudhub.NodeLeaseName(e.node), metav1.GetOptions{})
			if err == nil && l.Spec.HolderIdentity != nil {
				out[e.node] = *l.Spec.HolderIdentity
			}
		}
		return out
	}
	var victim *haReplica
	most := -1.0
	for _, r := range rs {
		if n := r.d.metric("kedge_cloudhub_connected_nodes"); n > most {
			victim, most = r, n
		}
	}
	ackedAtKill := map[string]int{}
	for _, e := range edges {
		ackedAtKill[e.node] = e.w.last()
	}
	t.Logf("kill -9 of %s holding %v nodes (%v); twin values acknowledged: %v; pods created: %d of %d", victim.name, most, holders(), ackedAtKill, created.Load(), len(pods))
	_ = victim.d.cmd.Process.Kill()
	<-victim.d.exited
	alive := map[string]bool{}
	for _, r := range rs {
		alive[r.name] = r != victim
	}
	waitFor(t, "every node held by a survivor", 120*time.Second, func() (bool, string) {
		h := holders()
		for _, e := range edges {
			if !alive[h[e.node]] {
				return false, fmt.Sprint(h)
			}
		}
		return true, ""
	})
	// Keep writing until every node got 20 more acknowledged reports after the kill.
	waitFor(t, "twin reports acknowledged after the kill", 120*time.Second, func() (bool, string) {
		var s []string
		for _, e := range edges {
			if e.w.last() < ackedAtKill[e.node]+20 {
				s = append(s, fmt.Sprint(e.node, "=", e.w.last()))
			}
		}
		return len(s) == 0, strings.Join(s, " ")
	})
	close(stopWriting)
	writers.Wait()
	podsWG.Wait()
	select {
	case err := <-writeErr:
		t.Fatal(err)
	case err := <-podErr:
		t.Fatal(err)
	default:
	}
	final := map[string]int{}
	for _, e := range edges {
		final[e.node] = e.w.last()
	}
	waitFor(t, "every Device shows the last value written", 120*time.Second, func() (bool, string) {
		var s []string
		for _, e := range edges {
			if tw := e.rig.twin("temperature"); tw.Reported.Value != strconv.Itoa(final[e.node]) {
				s = append(s, fmt.Sprintf("%s: %q want %d", e.node, tw.Reported.Value, final[e.node]))
			}
		}
		return len(s) == 0, strings.Join(s, "; ")
	})
	waitFor(t, "every pod on its node: Running on edged's node, reported by noruntime on the others", 180*time.Second, func() (bool, string) {
		var s []string
		for _, p := range pods {
			got, err := k8s.Client.CoreV1().Pods(podNS).Get(ctx, p.Name, metav1.GetOptions{})
			switch {
			case err != nil:
				s = append(s, p.Name+": "+err.Error())
			case p.Spec.NodeName == edges[0].node && got.Status.Phase != corev1.PodRunning:
				s = append(s, p.Name+"="+string(got.Status.Phase))
			case p.Spec.NodeName != edges[0].node && got.Status.Reason != "NoContainerRuntime":
				s = append(s, p.Name+"="+got.Status.Reason)
			}
		}
		return len(s) == 0, strings.Join(s, " ")
	})
	out, err := k8s.Kubectl("get", "pods", "-n", podNS, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, " Running "); n != 17 {
		t.Fatalf("kubectl get pods shows %d Running, want the 17 on %s:\n%s", n, edges[0].node, out)
	}
	waitFor(t, "every node Ready after the kill", 60*time.Second, allReady)
	stopSampling()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, e := range edges {
		s := seen[e.node]
		for i := 1; i < len(s); i++ {
			if s[i] < s[i-1] {
				t.Fatalf("%s: the Device's reported temperature went back from %d to %d (samples %v)", e.node, s[i-1], s[i], s)
			}
		}
		if len(s) < 3 {
			t.Fatalf("%s: only %d distinct values sampled: %v", e.node, len(s), s)
		}
		t.Logf("%s: %d values written (%d before the kill), %d distinct values sampled in the Device status, last %d", e.node, final[e.node], ackedAtKill[e.node], len(s), s[len(s)-1])
	}
}
