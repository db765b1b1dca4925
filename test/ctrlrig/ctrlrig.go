// Package ctrlrig is the test rig of the cloud controllers (edgecontroller, devicecontroller,
// rolloutcontroller, and any module built on sdk/kube/controller): a private kube-apiserver per test
// package (test/k8senv), a namespace per test, the controller run by host/sdktest with cloudhub
// captured, and helpers to play cloudhub — send hub events and edge requests, wait for what the
// controller queued for the edge, read its metrics.
//
//	func TestMain(m *testing.M) { os.Exit(ctrlrig.Main(m, "widgetcontroller", true, nil)) }
//
//	func TestX(t *testing.T) {
//		ns := ctrlrig.Namespace(t, 45)
//		r := ctrlrig.Start(t, widgetcontroller.Name, map[string]any{"inventoryWait": "300ms"}, ns)
//		r.Event(r.Node("n1"), message.OpConnected, nil)
//		r.WaitSent(message.OpUpdate, ctrlrig.Res(r.Node("n1"), ns, "widget", "w1"))
//	}
package ctrlrig

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/k8senv"
)

// Wait is how long the rig waits for the controller (a message queued, an answer): generous, for
// two busy cores.
const Wait = 30 * time.Second

var (
	// Env is the package's API server (nil without the control plane, e.g. with -short).
	Env *k8senv.Env
	// Dynamic is a dynamic client on Env.
	Dynamic dynamic.Interface

	namespaces atomic.Int64
)

// Main runs the package's tests against a private API server (with the CRDs of build/crds when
// crds), then setup, if set (clients of its own). Call it from TestMain: os.Exit(ctrlrig.Main(...)).
func Main(m *testing.M, pkg string, crds bool, setup func(*k8senv.Env) error) int {
	return k8senv.RunTests(m, pkg, func(e *k8senv.Env) (err error) {
		Env = e
		if crds {
			if err = e.InstallCRDs(); err != nil {
				return err
			}
		}
		if Dynamic, err = dynamic.NewForConfig(e.Config); err != nil {
			return err
		}
		if setup != nil {
			return setup(e)
		}
		return nil
	})
}

// Skip skips t without the control plane.
func Skip(t testing.TB) {
	t.Helper()
	if Env == nil {
		t.Skip("needs the control plane (not with -short)")
	}
}

// NamespaceName is a namespace name made of the test's name (at most max characters of it) and a
// number unique in the test binary (so it is new under -count).
func NamespaceName(t testing.TB, max int) string {
	ns := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(ns) > max {
		ns = ns[:max]
	}
	return fmt.Sprintf("%s-%d", strings.Trim(ns, "-"), namespaces.Add(1))
}

// Namespace creates a namespace named by NamespaceName (skipping t without the control plane).
func Namespace(t testing.TB, max int) string {
	t.Helper()
	Skip(t)
	ns := NamespaceName(t, max)
	if _, err := Env.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// Rig is one controller running against Env with cloudhub captured.
type Rig struct {
	T   *testing.T
	H   *sdktest.Harness
	Hub *sdktest.Captured
	NS  string // the test's namespace

	mu   sync.Mutex
	seen []sdk.Message // queued for cloudhub, received and not claimed yet
}

// Start runs module with settings (kubeconfig: Env's unless set) for a test in namespace ns.
func Start(t *testing.T, module string, settings map[string]any, ns string) *Rig {
	t.Helper()
	Skip(t)
	info, ok := sdk.Lookup(module)
	if !ok {
		t.Fatalf("no module %s registered", module)
	}
	cfg := map[string]any{"kubeconfig": Env.Kubeconfig}
	for k, v := range settings {
		cfg[k] = v
	}
	h := sdktest.Run(t, info, cfg, sdktest.Capture("cloudhub"))
	return &Rig{T: t, H: h, Hub: h.Captured("cloudhub"), NS: ns}
}

// Node returns a node name unique to the test.
func (r *Rig) Node(s string) string { return r.NS + "-" + s }

// Res is the cloud resource path node/<node>/<ns>/<typ>/<name>.
func Res(node, ns, typ, name string) string {
	return message.Resource{Node: node, Namespace: ns, Type: typ, Name: name}.Cloud()
}

func withContent(t testing.TB, m sdk.Message, content any) sdk.Message {
	t.Helper()
	switch c := content.(type) {
	case nil:
		return m
	case []byte:
		m.Content = c
		return m
	default:
		m, err := m.WithContent(c)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
}

// Event sends a cloudhub event (connected, disconnected, inventory) for node, with content (nil:
// none; []byte: as it is; else JSON).
func (r *Rig) Event(node, op string, content any) {
	r.T.Helper()
	m := message.New("cloudhub", "hub", op, message.Resource{Node: node, Namespace: "-", Type: "connection", Name: node}.Cloud())
	if err := r.H.Send(withContent(r.T, m, content)); err != nil {
		r.T.Fatal(err)
	}
}

// Request sends what an edge node sends through cloudhub (group group, a sync request) and returns
// the controller's answer.
func (r *Rig) Request(group, node, op, ns, typ, name string, content any) sdk.Message {
	r.T.Helper()
	m := message.New("cloudhub", group, op, Res(node, ns, typ, name))
	resp, err := r.H.SendSync(withContent(r.T, m, content), Wait)
	if err != nil {
		r.T.Fatal(err)
	}
	return resp
}

// Take waits until the controller queued a message for cloudhub that match accepts, removes it from
// what was seen and returns it; what names it in the failure.
func (r *Rig) Take(what string, match func(sdk.Message) bool) sdk.Message {
	r.T.Helper()
	return r.TakeThrough(what, match, nil)
}

// TakeThrough is Take that also removes the messages seen before the one taken that earlier
// accepts (older messages about the same object, done with).
func (r *Rig) TakeThrough(what string, match, earlier func(sdk.Message) bool) sdk.Message {
	r.T.Helper()
	deadline := time.Now().Add(Wait)
	for {
		r.mu.Lock()
		for i, m := range r.seen {
			if match(m) {
				var keep []sdk.Message
				for _, o := range r.seen[:i] {
					if earlier == nil || !earlier(o) {
						keep = append(keep, o)
					}
				}
				r.seen = append(keep, r.seen[i+1:]...)
				r.mu.Unlock()
				return m
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			r.T.Fatalf("no %s queued for the edge; queued: %v", what, r.SentList())
		}
		if m, err := r.Hub.Receive(100 * time.Millisecond); err == nil {
			r.mu.Lock()
			r.seen = append(r.seen, m)
			r.mu.Unlock()
		}
	}
}

// WaitSent is Take of the message (operation, cloud resource).
func (r *Rig) WaitSent(op, resource string) sdk.Message {
	r.T.Helper()
	return r.Take(op+" "+resource, func(m sdk.Message) bool { return m.Route.Operation == op && m.Route.Resource == resource })
}

// Seen drains what is queued and returns every message seen and not yet claimed, in order.
func (r *Rig) Seen() []sdk.Message {
	r.drain()
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sdk.Message(nil), r.seen...)
}

func (r *Rig) drain() {
	for {
		m, err := r.Hub.Receive(50 * time.Millisecond)
		if err != nil {
			break
		}
		r.mu.Lock()
		r.seen = append(r.seen, m)
		r.mu.Unlock()
	}
}

// SentList drains what is queued and lists every message seen and not yet claimed, in order, as
// "<operation> <resource>".
func (r *Rig) SentList() []string {
	var out []string
	for _, m := range r.Seen() {
		out = append(out, m.Route.Operation+" "+m.Route.Resource)
	}
	return out
}

// SentTo is SentList of the messages for node.
func (r *Rig) SentTo(node string) []string {
	var out []string
	for _, s := range r.SentList() {
		if strings.Contains(s, " node/"+node+"/") {
			out = append(out, s)
		}
	}
	return out
}

// Counter sums the counter name of the rig's registry over the series whose labels include labels
// (0 when absent).
func (r *Rig) Counter(name string, labels map[string]string) float64 {
	r.T.Helper()
	fams, err := r.H.Metrics.Gather()
	if err != nil {
		r.T.Fatal(err)
	}
	total := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// Gauge reads the first series of the gauge name (or, for a counter, its value); 0 when absent.
func (r *Rig) Gauge(name string) float64 {
	r.T.Helper()
	fams, err := r.H.Metrics.Gather()
	if err != nil {
		r.T.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			m := f.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// Eventually waits until cond holds; detail (from cond) is shown when it never does.
func Eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, Wait, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
