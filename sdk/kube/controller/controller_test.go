package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/kube/controller"
	"github.com/kedge-io/kedge/sdk/message"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fromNode is a message as cloudhub hands over one from node.
func fromNode(node, name string) sdk.Message {
	return message.New("cloudhub", "resource", message.OpUpdate, message.Resource{Node: node, Namespace: "ns", Type: "report", Name: name}.Cloud())
}

// TestDispatchKeepsEachNodesMessagesInOrder sends interleaved messages of several nodes through
// three upstream workers and checks each node's messages were handled in the order they came.
func TestDispatchKeepsEachNodesMessagesInOrder(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{}
	var wg sync.WaitGroup
	const nodes, each = 7, 50
	wg.Add(nodes * each)
	r := controller.New(controller.Options[string]{Name: "test", Workers: 3, Logger: quiet,
		Sync: func(context.Context, string) error { return nil },
		Upstream: func(_ context.Context, node string, msg sdk.Message) {
			res, _ := message.ParseCloud(msg.Route.Resource)
			mu.Lock()
			got[node] = append(got[node], res.Name)
			mu.Unlock()
			wg.Done()
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	defer r.Stop()
	for i := range each {
		for n := range nodes {
			if err := r.Dispatch(ctx, fromNode(fmt.Sprintf("node-%d", n), fmt.Sprintf("%03d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	for n := range nodes {
		node := fmt.Sprintf("node-%d", n)
		if len(got[node]) != each || !slices.IsSorted(got[node]) {
			t.Errorf("%s handled %d messages in order %v; want %d in the order sent", node, len(got[node]), got[node], each)
		}
	}
}

// TestDispatchRefusesAMessageNamingNoNode proves a resource that is not node/<node>/... is refused
// with ErrNoNode and handed to no worker.
func TestDispatchRefusesAMessageNamingNoNode(t *testing.T) {
	r := controller.New(controller.Options[string]{Name: "test", Workers: 1, Logger: quiet,
		Sync:     func(context.Context, string) error { return nil },
		Upstream: func(context.Context, string, sdk.Message) { t.Error("a message naming no node reached a worker") }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	defer r.Stop()
	err := r.Dispatch(ctx, message.New("cloudhub", "resource", message.OpUpdate, "not-a-node-path"))
	if !errors.Is(err, controller.ErrNoNode) || !strings.Contains(err.Error(), "cloudhub") {
		t.Fatalf("Dispatch = %v; want ErrNoNode naming the source", err)
	}
}

// TestFailedSyncIsCountedAndRetried proves a key whose Sync fails is reported to SyncFailed and
// synced again (the queue's backoff) until it succeeds.
func TestFailedSyncIsCountedAndRetried(t *testing.T) {
	var mu sync.Mutex
	calls, failed := 0, 0
	done := make(chan struct{})
	r := controller.New(controller.Options[string]{Name: "test", Workers: 2, Logger: quiet,
		Sync: func(_ context.Context, key string) error {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls < 3 {
				return errors.New("API busy")
			}
			close(done)
			return nil
		},
		SyncFailed: func(key string, err error) { mu.Lock(); failed++; mu.Unlock() },
		Upstream:   func(context.Context, string, sdk.Message) {}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	defer r.Stop()
	r.Queue.Add("ns/a")
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the key was not synced again after failing")
	}
	mu.Lock()
	defer mu.Unlock()
	if failed != 2 {
		t.Errorf("SyncFailed told %d times; want 2", failed)
	}
}

// TestWaitForSyncNamesWhatDidNotList proves an informer that never lists fails the wait with an
// error naming what, syncTimeout and the hint, and closes the runner.
func TestWaitForSyncNamesWhatDidNotList(t *testing.T) {
	r := controller.New(controller.Options[string]{Name: "test", SyncTimeout: 50 * time.Millisecond, SyncHint: ", and are the CRDs installed",
		Sync: func(context.Context, string) error { return nil }})
	err := r.WaitForSync(context.Background(), "widgets", func() bool { return false })
	if err == nil {
		t.Fatal("WaitForSync succeeded with an informer that never synced")
	}
	for _, want := range []string{"widgets", "syncTimeout", "are the CRDs installed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	select {
	case <-r.Done():
	default:
		t.Error("the runner is still open after the failed wait")
	}
}

// TestPlan is the inventory reconcile: what a node lacks or holds at an older version is sent, what
// it holds of the caller's types and should not is deleted, others' types and damaged entries stay.
func TestPlan(t *testing.T) {
	mine := func(typ string) bool { return typ == "pod" || typ == "configmap" }
	for _, tc := range []struct {
		name         string
		inv          []controller.InventoryItem
		want         map[string]uint64
		send, remove []string
	}{
		{"nothing held: everything sent", nil, map[string]uint64{"ns/pod/b": 3, "ns/pod/a": 5}, []string{"ns/pod/a", "ns/pod/b"}, nil},
		{"current copies kept", []controller.InventoryItem{{Resource: "ns/pod/a", ResourceVersion: 5}, {Resource: "ns/pod/b", ResourceVersion: 9}},
			map[string]uint64{"ns/pod/a": 5, "ns/pod/b": 3}, nil, nil},
		{"older copy sent again", []controller.InventoryItem{{Resource: "ns/pod/a", ResourceVersion: 4}}, map[string]uint64{"ns/pod/a": 5}, []string{"ns/pod/a"}, nil},
		{"unwanted of mine deleted, others' kept", []controller.InventoryItem{{Resource: "ns/configmap/c", ResourceVersion: 1},
			{Resource: "ns/device/d", ResourceVersion: 1}, {Resource: "ns/pod"}, {Resource: "not a path"}}, nil, nil, []string{"ns/configmap/c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send, remove := controller.Plan(tc.inv, tc.want, mine)
			paths := func(rs []message.Resource) []string {
				var out []string
				for _, r := range rs {
					out = append(out, r.Edge())
				}
				return out
			}
			if got := paths(send); !slices.Equal(got, tc.send) {
				t.Errorf("send %v; want %v", got, tc.send)
			}
			if got := paths(remove); !slices.Equal(got, tc.remove) {
				t.Errorf("remove %v; want %v", got, tc.remove)
			}
		})
	}
}

// TestInventoryWireShape pins the JSON of an inventory entry: edgecore (Kedge's metamanager) sends
// exactly this, and KubeEdge interop depends on it.
func TestInventoryWireShape(t *testing.T) {
	inv, err := controller.DecodeInventory([]byte(`[{"resource":"default/pod/web","resourceVersion":42}]`))
	if err != nil || len(inv) != 1 || inv[0] != (controller.InventoryItem{Resource: "default/pod/web", ResourceVersion: 42}) {
		t.Fatalf("DecodeInventory = %v, %v", inv, err)
	}
	if _, err := controller.DecodeInventory([]byte(`{"resource":"x"}`)); err == nil {
		t.Error("an inventory that is not a list decoded")
	}
}

// TestOutcome sorts failed edge requests by the error they wrap.
func TestOutcome(t *testing.T) {
	msg := fromNode("n1", "a")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{fmt.Errorf("%w: pod x is not bound to node n1", controller.ErrForbidden), "forbidden"},
		{fmt.Errorf("%w: empty content", controller.ErrInvalid), "invalid"},
		{errors.New("API down"), "error"},
	} {
		if got := controller.Outcome(quiet, "n1", msg, tc.err); got != tc.want {
			t.Errorf("Outcome(%v) = %q; want %q", tc.err, got, tc.want)
		}
	}
}

// TestAwaitInventory: a KubeEdge edge is reconciled at once; a Kedge edge after the wait, unless its
// inventory came, it disconnected or connected again meanwhile; an inventoried node not at all.
func TestAwaitInventory(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	ran := make(chan string, 10)
	await := func(name string, kubeedge bool, after func(*controller.Link)) {
		l := &controller.Link{}
		mu.Lock()
		l.Connect(kubeedge)
		mu.Unlock()
		controller.AwaitInventory(ctx, quiet, &mu, l, name, 10*time.Millisecond, func() { ran <- name })
		mu.Lock()
		after(l)
		mu.Unlock()
	}
	await("kubeedge", true, func(*controller.Link) {})
	if got := <-ran; got != "kubeedge" {
		t.Fatalf("reconciled %q first; want the KubeEdge edge at once", got)
	}
	await("inventoried", false, func(l *controller.Link) { l.Inventoried = true })
	await("gone", false, func(l *controller.Link) { l.Connected = false })
	await("again", false, func(l *controller.Link) { l.Connect(false) })
	await("waits", false, func(*controller.Link) {})
	select {
	case got := <-ran:
		if got != "waits" {
			t.Fatalf("reconciled %q, which no longer waited", got)
		}
	case <-time.After(time.Minute):
		t.Fatal("a node that sent no inventory was not reconciled after the wait")
	}
	l := &controller.Link{Inventoried: true}
	l.Connect(false)
	controller.AwaitInventory(ctx, quiet, &mu, l, "done", time.Millisecond, func() { t.Error("an inventoried node was reconciled again") })
}

// TestMetricsNamesAndReportsRegistrationErrors proves the kedge_<module>_ prefix and that a second
// registration of the same name is reported by Err.
func TestMetricsNamesAndReportsRegistrationErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := controller.NewMetrics(reg, "widgetcontroller")
	b.Counter("reconciles_total", "Reconciles.").Inc()
	b.CounterVec("upstream_total", "Reports.", "result").WithLabelValues("ok").Inc()
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if !slices.Equal(names, []string{"kedge_widgetcontroller_reconciles_total", "kedge_widgetcontroller_upstream_total"}) {
		t.Errorf("registered %v", names)
	}
	b.Counter("reconciles_total", "Again.")
	if b.Err() == nil {
		t.Error("a duplicate registration was not reported")
	}
}

// TestHubEventsReachTheirHandlers proves the runner routes cloudhub's events about a node to
// Connected (with the KubeEdge flag), Disconnected and Inventory (a damaged inventory as an error),
// and everything else to Upstream, all in the node's order.
func TestHubEventsReachTheirHandlers(t *testing.T) {
	got := make(chan string, 10)
	r := controller.New(controller.Options[string]{Name: "test", Workers: 2, Logger: quiet,
		Sync: func(context.Context, string) error { return nil },
		Upstream: func(_ context.Context, node string, msg sdk.Message) {
			got <- "upstream " + node + " " + msg.Route.Operation
		},
		Connected: func(_ context.Context, node string, kubeedge bool) {
			got <- fmt.Sprintf("connected %s kubeedge=%v", node, kubeedge)
		},
		Disconnected: func(_ context.Context, node string) { got <- "disconnected " + node },
		Inventory: func(_ context.Context, node string, inv []controller.InventoryItem) {
			got <- fmt.Sprintf("inventory %s %v", node, inv)
		},
		Refused: func(what string, _ error) { got <- "refused " + what }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Start(ctx)
	defer r.Stop()
	event := func(op, content string) sdk.Message {
		m := message.New("cloudhub", "hub", op, message.Resource{Node: "n1", Namespace: "-", Type: "connection", Name: "n1"}.Cloud())
		m.Content = []byte(content)
		return m
	}
	for _, m := range []sdk.Message{
		event(message.OpConnected, `{"kubeedge":true}`),
		event(message.OpInventory, `[{"resource":"ns/pod/a","resourceVersion":3}]`),
		event(message.OpInventory, `"not a list"`),
		fromNode("n1", "a"),
		event(message.OpDisconnected, ""),
		event(message.OpConnected, ""),
	} {
		if err := r.Dispatch(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"connected n1 kubeedge=true", "inventory n1 [{ns/pod/a 3}]", "refused inventory", "inventory n1 []",
		"upstream n1 update", "disconnected n1", "connected n1 kubeedge=false"}
	for _, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Fatalf("handled %q; want %q", g, w)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%q never handled", w)
		}
	}
}

// TestWithObjectSetsKindAndANumericVersionOnACopy proves the content carries the kind the edge
// decodes by, the header the version the edge compares (only a number), and obj is left as it was.
func TestWithObjectSetsKindAndANumericVersionOnACopy(t *testing.T) {
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	for _, tc := range []struct{ rv, header string }{{"42", "42"}, {"", ""}, {"0", ""}, {"opaque", ""}} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", ResourceVersion: tc.rv}}
		msg, err := controller.WithObject(message.New("test", "resource", message.OpUpdate, "node/n1/ns/configmap/c"), cm, gvk)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Header.ResourceVersion != tc.header {
			t.Errorf("resourceVersion %q: header %q; want %q", tc.rv, msg.Header.ResourceVersion, tc.header)
		}
		var got map[string]any
		if err := json.Unmarshal(msg.Content, &got); err != nil || got["kind"] != "ConfigMap" || got["apiVersion"] != "v1" {
			t.Errorf("content %s (%v): want kind ConfigMap, apiVersion v1", msg.Content, err)
		}
		if cm.Kind != "" {
			t.Error("WithObject changed the caller's object")
		}
	}
}

// TestAPICheckNamesEachBadKey proves qps and burst are checked with their keys.
func TestAPICheckNamesEachBadKey(t *testing.T) {
	var c sdk.SettingChecks
	controller.API{QPS: 0, Burst: -1}.Check(&c)
	err := c.Err()
	for _, key := range []string{"qps", "burst"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%v does not name %s", err, key)
		}
	}
	var ok sdk.SettingChecks
	controller.API{QPS: 5, Burst: 10}.Check(&ok)
	if err := ok.Err(); err != nil {
		t.Errorf("good settings refused: %v", err)
	}
}
