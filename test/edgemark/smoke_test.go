package edgemark_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/test/edgemark"
	"github.com/kedge-io/kedge/test/k8senv"
	"github.com/kedge-io/kedge/test/slow"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	os.Exit(k8senv.RunTests(m, "edgemark", func(e *k8senv.Env) error { env = e; return e.InstallCRDs() }))
}

// smokeNodes is the size of the smoke run in make test.
const smokeNodes = 200

// TestSmoke200HollowNodesGetReadyAndRunTheirPods runs 200 hollow nodes against cloudhub and
// edgecontroller over the real API server: every node must join through the certificate server with
// one multi-use token, connect, and have its Node Ready=True with a Lease; then a pod bound to each
// node must report Running in the API, and deleting them must complete through the nodes'
// confirmations. Nothing the nodes send may be refused.
func TestSmoke200HollowNodesGetReadyAndRunTheirPods(t *testing.T) {
	if env == nil {
		t.Skip("needs the control plane (not with -short)")
	}
	if err := edgemark.CheckFDs(smokeNodes, 2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	cloud, err := edgemark.StartCloud(ctx, edgemark.CloudOptions{Dir: dir, Kubeconfig: env.Kubeconfig,
		Configure: func(h *cloudhub.Module, c *edgecontroller.Module) {
			h.Heartbeat = 5 * time.Second
			c.SendServices = false
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Stop()
	tok, err := cloud.Hub.CreateToken(ctx, pki.TokenOptions{TTL: time.Hour, Uses: smokeNodes})
	if err != nil {
		t.Fatal(err)
	}
	deleteNodesAtEnd(t, "smoke", smokeNodes)
	reg := prometheus.NewRegistry()
	sim, err := edgemark.Start(ctx, edgemark.Options{HubAddress: cloud.Hub.Address, CertServer: cloud.Hub.CertServerAddress,
		Tokens: []string{tok.String()}, CertDir: dir + "/nodes", Nodes: smokeNodes, Prefix: "smoke", Rate: 100,
		StatusPeriod: 10 * time.Second, Heartbeat: 5 * time.Second, AckTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	nodes := sim.Nodes()
	want := map[string]bool{}
	for _, n := range nodes {
		want[n] = true
	}

	// Every Node Ready=True, with a Lease (written just after the status).
	waitFor(t, sim, "every hollow node Ready=True with a Lease in the API", func() (string, bool) {
		list, err := env.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: edgecontroller.EdgeLabel})
		if err != nil {
			return err.Error(), false
		}
		leases, err := env.Client.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error(), false
		}
		ready, held := 0, 0
		for _, n := range list.Items {
			if want[n.Name] && nodeReady(&n) {
				ready++
			}
		}
		for _, l := range leases.Items {
			if want[l.Name] && l.Spec.RenewTime != nil {
				held++
			}
		}
		return fmt.Sprintf("%d/%d Ready, %d Leases", ready, len(nodes), held), ready == len(nodes) && held == len(nodes)
	})

	// A pod bound to each node reports Running.
	ns := fmt.Sprintf("edgemark-smoke-%d", runs.Add(1)) // its own under -count
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%05d", i), Namespace: ns},
			Spec: corev1.PodSpec{NodeName: n, AutomountServiceAccountToken: new(false),
				Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, sim, "every pod Running in the API", func() (string, bool) {
		list, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error(), false
		}
		running := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && podReady(&p) {
				running++
			}
		}
		return fmt.Sprintf("%d/%d Running", running, len(nodes)), running == len(nodes)
	})

	// Deleting them completes once each node confirmed.
	if err := env.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sim, "every pod deleted (the nodes confirmed)", func() (string, bool) {
		list, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error(), false
		}
		return fmt.Sprintf("%d pods left", len(list.Items)), len(list.Items) == 0
	})
	if st := sim.Stats(); st.Refused != 0 || st.Joined != smokeNodes {
		t.Fatalf("want every node joined and nothing refused: %s", st)
	}
	t.Logf("edgemark: %s", sim.Stats())
}

func waitFor(t *testing.T, sim *edgemark.Sim, what string, cond func() (string, bool)) {
	t.Helper()
	deadline := time.Now().Add(slow.Scale(4 * time.Minute))
	last := ""
	for {
		state, ok := cond()
		if ok {
			t.Logf("%s: %s", what, state)
			return
		}
		if state != last {
			t.Logf("waiting for %s: %s (edgemark: %s)", what, state, sim.Stats())
			last = state
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within the deadline: %s (edgemark: %s)", what, state, sim.Stats())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
