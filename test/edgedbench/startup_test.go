package edgedbench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/edged"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/test/crienv"
)

// Pods per round, as the issue asks: 20 host-network busybox pods.
const podsPerRound = 20

// Labels edged puts on its sandboxes and containers (plugins/builtin/edged/cri.go).
const (
	labelManaged   = "kedge.io/managed"
	labelNamespace = "io.kubernetes.pod.namespace"
	labelPodName   = "io.kubernetes.pod.name"
)

// edge is edged and metamanager (real SQLite) in one host, with a mailbox in the hub group standing
// in for edgehub: it timestamps every Running status that goes upstream.
type edge struct {
	b   *testing.B
	h   *sdktest.Harness
	cri *crienv.Client

	mu      sync.Mutex
	running map[string]time.Time // "<ns>/<name>" -> when its first Running status reached the hub
	changed chan struct{}
}

func newEdge(b *testing.B) *edge {
	b.Helper()
	ep, cri := crienv.Start(b)
	mm, _ := sdk.Lookup(metamanager.Name)
	ed, _ := sdk.Lookup(edged.Name)
	// edged with its shipped defaults (statusPeriod 2s, backoff 10s...), only its runtime and folders set.
	h := sdktest.Run(b, ed, map[string]any{"criEndpoint": ep, "rootDir": b.TempDir(), "podSandboxImage": crienv.Pause},
		sdktest.Beside(mm, map[string]any{"metaServer": map[string]any{"enable": false}}),
		sdktest.Logger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	hub, err := h.Router.Register("edgehub", "hub", router.Options{Capacity: 8192, Policy: router.Block})
	if err != nil {
		b.Fatal(err)
	}
	e := &edge{b: b, h: h, cri: cri, running: map[string]time.Time{}, changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := hub.Receive(ctx)
			if err != nil {
				return
			}
			e.seen(m, time.Now())
		}
	}()
	b.Cleanup(func() { cancel(); <-done })
	return e
}

// seen records the first Running status of each pod.
func (e *edge) seen(m sdk.Message, at time.Time) {
	if m.Route.Operation != message.OpUpdate {
		return
	}
	res, err := message.ParseEdge(m.Route.Resource)
	if err != nil || res.Type != "podstatus" {
		return
	}
	var st struct {
		Status corev1.PodStatus `json:"status"`
	}
	if json.Unmarshal(m.Content, &st) != nil || st.Status.Phase != corev1.PodRunning {
		return
	}
	key := res.Namespace + "/" + res.Name
	e.mu.Lock()
	if _, ok := e.running[key]; !ok {
		e.running[key] = at
	}
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

func (e *edge) runningAt(key string) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.running[key]
	return t, ok
}

// give hands a pod to the edge as the cloud would: metamanager stores it, then tells edged (insert).
func (e *edge) give(op string, pod *corev1.Pod) {
	m, err := message.New("edgehub", "resource", op, pod.Namespace+"/pod/"+pod.Name).WithContent(pod)
	if err != nil {
		e.b.Fatal(err)
	}
	reply, err := e.h.Router.SendSync(context.Background(), metamanager.Name, m, 30*time.Second)
	if err != nil {
		e.b.Fatal(err)
	}
	if reply.Route.Operation == message.OpError {
		e.b.Fatalf("metamanager refused %s: %s", pod.Name, reply.Content)
	}
}

// busybox is a host-network pod that sleeps.
func busybox(ns, name string) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(fmt.Sprintf("%s-%s-%d", ns, name, time.Now().UnixNano()))},
		Spec: corev1.PodSpec{
			NodeName: sdktest.NodeName, HostNetwork: true, RestartPolicy: corev1.RestartPolicyAlways, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "main", Image: crienv.Busybox, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sleep", "3600"}}},
		},
	}
}

// runningInCRI returns the pods of ns whose container CRI lists as RUNNING.
func runningInCRI(cri *crienv.Client, ns string) (map[string]bool, error) {
	resp, err := cri.Runtime.ListContainers(context.Background(), &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{
		State:         &criv1.ContainerStateValue{State: criv1.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{labelManaged: "edged", labelNamespace: ns}}})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, c := range resp.Containers {
		out[c.Labels[labelPodName]] = true
	}
	return out, nil
}

// sandboxes counts the sandboxes of ns.
func sandboxes(b testing.TB, cri *crienv.Client, ns string) int {
	resp, err := cri.Runtime.ListPodSandbox(context.Background(), &criv1.ListPodSandboxRequest{Filter: &criv1.PodSandboxFilter{
		LabelSelector: map[string]string{labelManaged: "edged", labelNamespace: ns}}})
	if err != nil {
		b.Fatal(err)
	}
	return len(resp.Items)
}

// removeAll deletes the pods through metamanager (edged removes their sandboxes) and makes sure
// containerd holds nothing of ns afterwards.
func (e *edge) removeAll(ns string, pods []*corev1.Pod) {
	for _, p := range pods {
		e.give(message.OpDelete, p)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for sandboxes(e.b, e.cri, ns) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if err := e.cri.RemoveSandboxes(context.Background(), map[string]string{labelManaged: "edged", labelNamespace: ns}); err != nil {
		e.b.Errorf("cleanup of %s: %v", ns, err)
	}
}

// poller notes when each pod's container is first seen RUNNING in CRI (polled every 20 ms).
type poller struct {
	e      *edge
	ns     string
	mu     sync.Mutex
	at     map[string]time.Time
	cancel context.CancelFunc
	done   chan struct{}
}

func (e *edge) pollCRI(ns string) *poller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &poller{e: e, ns: ns, at: map[string]time.Time{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			p.look()
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *poller) look() {
	now := time.Now()
	running, err := runningInCRI(p.e.cri, p.ns)
	if err != nil {
		return // the next look counts it, one period late
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range running {
		if _, ok := p.at[name]; !ok {
			p.at[name] = now
		}
	}
}

// stop ends the polling after one last look (a Running status upstream means CRI had said RUNNING,
// so a container first seen here was missed by at most one period) and returns what it saw.
func (p *poller) stop() map[string]time.Time {
	p.cancel()
	<-p.done
	p.look()
	return p.at
}

// latencies of one pod: to its container RUNNING in CRI, and to its Running status at the hub.
type latency struct{ cri, upstream time.Duration }

// round gives pods to the edge (all at once, or each after the previous one is Running upstream) and
// measures each one from the moment it is handed to metamanager.
func (e *edge) round(ns string, sequential bool) []latency {
	pods := make([]*corev1.Pod, podsPerRound)
	for i := range pods {
		pods[i] = busybox(ns, fmt.Sprintf("p%02d", i))
	}
	defer e.removeAll(ns, pods)
	start := make(map[string]time.Time, len(pods))
	poll := e.pollCRI(ns)
	defer poll.cancel()
	waitRunning := func(names ...string) {
		deadline := time.Now().Add(3 * time.Minute)
		for {
			missing := 0
			for _, n := range names {
				if _, ok := e.runningAt(ns + "/" + n); !ok {
					missing++
				}
			}
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				e.b.Fatalf("%d of %d pods of %s not Running upstream within 3m", missing, len(names), ns)
			}
			select {
			case <-e.changed:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if sequential {
		for _, p := range pods {
			start[p.Name] = time.Now()
			e.give(message.OpInsert, p)
			waitRunning(p.Name)
		}
	} else {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mu.Lock()
				start[p.Name] = time.Now()
				mu.Unlock()
				e.give(message.OpInsert, p)
			}()
		}
		wg.Wait()
		names := make([]string, len(pods))
		for i, p := range pods {
			names[i] = p.Name
		}
		waitRunning(names...)
	}
	criAt := poll.stop()
	out := make([]latency, 0, len(pods))
	for _, p := range pods {
		up, _ := e.runningAt(ns + "/" + p.Name)
		c, ok := criAt[p.Name]
		if !ok {
			c = up // only possible if the container had already stopped again; count it at the status
		}
		out = append(out, latency{cri: c.Sub(start[p.Name]), upstream: up.Sub(start[p.Name])})
	}
	return out
}

// BenchmarkPodStartup is the time from a pod handed to edged (an insert of <ns>/pod/<name> through
// metamanager) to its container RUNNING in containerd (cri-*) and to its Running status reaching the
// hub (p50/p99-ms), over rounds of 20 host-network busybox pods.
func BenchmarkPodStartup(b *testing.B) {
	if testing.Short() {
		b.Skip("needs containerd (not with -short)")
	}
	for _, tc := range []struct {
		name       string
		sequential bool
	}{{"pods=20,together", false}, {"pods=20,sequential", true}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEdge(b)
			var all []latency
			round := 0
			for b.Loop() {
				round++
				all = append(all, e.round(fmt.Sprintf("edgedbench-%d-%d", time.Now().UnixNano()%1e6, round), tc.sequential)...)
			}
			report(b, all)
		})
	}
}

func report(b *testing.B, all []latency) {
	cri := make([]time.Duration, len(all))
	up := make([]time.Duration, len(all))
	for i, l := range all {
		cri[i], up[i] = l.cri, l.upstream
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(percentile(up, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(up, 99)), "p99-ms")
	b.ReportMetric(ms(percentile(cri, 50)), "cri-p50-ms")
	b.ReportMetric(ms(percentile(cri, 99)), "cri-p99-ms")
	b.ReportMetric(0, "ns/op") // one op is a whole round; the percentiles are the result
}

// percentile is the nearest-rank percentile.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}
