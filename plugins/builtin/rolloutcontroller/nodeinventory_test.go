package rolloutcontroller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/inventory"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// twelveModules is a node's inventory with 12 modules, as a full-class edgecore with a process and a
// WASM plugin reports it.
func twelveModules(node string, at time.Time) inventory.Report {
	rep := inventory.Report{V: inventory.V, Node: node, Version: "v0.9.0-12-gabcdef0", Class: "full", Outbox: 3, At: at.UTC().Truncate(time.Second)}
	for i, name := range []string{"edgehub", "metamanager", "nodestatus", "noruntime", "edged", "edgestream", "eventbus", "servicebus", "devicetwin", "dmi", "pluginmanager", "modbus"} {
		m := inventory.Module{Name: name, Runtime: "builtin", Release: rep.Version, Handled: int64(1000 * (i + 1)), Failed: int64(i), Queued: i % 3}
		switch name {
		case "modbus":
			m.Runtime, m.Release, m.SHA256 = "process", "2.0.0", strings.Repeat("ab", 32)
		case "edgehub", "edgestream":
			m.Link = "up"
		}
		rep.Modules = append(rep.Modules, m)
	}
	return rep
}

// inventoryFrom sends content as node's inventory about name (as cloudhub hands it over: group plugin,
// sync, the node from the connection's certificate) and returns the answer.
func (r *rig) inventoryFrom(node, name string, content []byte) sdk.Message {
	r.T.Helper()
	m := message.New("cloudhub", inventory.Group, message.OpUpdate, message.Resource{Node: node, Namespace: inventory.Namespace, Type: inventory.Type, Name: name}.Cloud())
	m.Content = content
	resp, err := r.H.SendSync(m, 20*time.Second)
	if err != nil {
		r.T.Fatal(err)
	}
	return resp
}

func (r *rig) annotation(node string) (string, string) {
	r.T.Helper()
	n, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		r.T.Fatal(err)
	}
	return n.Annotations[inventory.Annotation], n.ResourceVersion
}

// waitAnnotation waits until the controller's informer has seen node's annotation (so its next
// comparison is against it).
func (r *rig) waitAnnotation(node, want string) {
	r.T.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for got, _ := r.annotation(node); got != want; got, _ = r.annotation(node) {
		if time.Now().After(deadline) {
			r.T.Fatalf("annotation of %s is %q, want %q", node, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNodeInventoryIsKeptAsTheNodeAnnotationAndWrittenOnlyWhenItChanges(t *testing.T) {
	r := newRig(t)
	node := r.Node("inv")
	r.edgeNode(node, nil)
	rep := twelveModules(node, time.Now())
	raw, _ := json.Marshal(rep)
	t.Logf("inventory of 12 modules: %d bytes of JSON", len(raw))
	if resp := r.inventoryFrom(node, node, raw); resp.Route.Operation == message.OpError {
		t.Fatalf("inventory refused: %s", resp.Content)
	}
	got, rv := r.annotation(node)
	back, err := inventory.Parse(got)
	if err != nil || len(back.Modules) != 12 || back.Modules[11].SHA256 != rep.Modules[11].SHA256 || back.Outbox != 3 || back.Class != "full" {
		t.Fatalf("annotation %s = %q (%v), want the report", inventory.Annotation, got, err)
	}
	if n := r.Counter("kedge_rolloutcontroller_inventory_total", map[string]string{"result": "written"}); n != 1 {
		t.Fatalf("written = %v, want 1", n)
	}

	// The same content a minute later: nothing is written (a later time alone is no change).
	deadline := time.Now().Add(20 * time.Second)
	for {
		rep.At = rep.At.Add(time.Minute)
		raw, _ = json.Marshal(rep)
		if resp := r.inventoryFrom(node, node, raw); resp.Route.Operation == message.OpError {
			t.Fatalf("inventory refused: %s", resp.Content)
		}
		if r.Counter("kedge_rolloutcontroller_inventory_total", map[string]string{"result": "unchanged"}) >= 1 {
			break
		}
		// The controller's informer had not seen its own write yet: it wrote again (same content).
		if time.Now().After(deadline) {
			t.Fatal("an unchanged inventory was never recognised as unchanged")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, rv2 := r.annotation(node)
	writes := r.Counter("kedge_rolloutcontroller_inventory_total", map[string]string{"result": "written"})
	if unchanged, _ := r.annotation(node); unchanged == "" || (writes == 1 && rv2 != rv) {
		t.Fatalf("unchanged inventory rewrote the Node: resourceVersion %s → %s", rv, rv2)
	}

	// The outbox grows: written.
	rep.Outbox, rep.At = 250, rep.At.Add(time.Minute)
	raw, _ = json.Marshal(rep)
	if resp := r.inventoryFrom(node, node, raw); resp.Route.Operation == message.OpError {
		t.Fatalf("inventory refused: %s", resp.Content)
	}
	got, _ = r.annotation(node)
	if back, _ := inventory.Parse(got); back.Outbox != 250 {
		t.Fatalf("annotation after the outbox grew: %s", got)
	}
}

func TestBadNodeInventoryIsRefusedCountedAndLeavesTheAnnotation(t *testing.T) {
	r := newRig(t)
	node, other := r.Node("inv"), r.Node("other")
	r.edgeNode(node, nil)
	r.edgeNode(other, nil)
	good, _ := json.Marshal(twelveModules(node, time.Now()))
	if resp := r.inventoryFrom(node, node, good); resp.Route.Operation == message.OpError {
		t.Fatalf("inventory refused: %s", resp.Content)
	}
	r.waitAnnotation(node, string(mustReencode(t, good)))
	before, rv := r.annotation(node)
	otherBefore, otherRV := r.annotation(other)

	mutate := func(f func(*inventory.Report)) []byte {
		rep := twelveModules(node, time.Now().Add(time.Hour))
		rep.Outbox = 99 // differs from the annotation: a write if it were accepted
		f(&rep)
		b, _ := json.Marshal(rep)
		return b
	}
	many := mutate(func(r *inventory.Report) {
		for i := range 60 {
			r.Modules = append(r.Modules, inventory.Module{Name: fmt.Sprintf("m%d", i), Runtime: "builtin"})
		}
	})
	huge := mutate(func(r *inventory.Report) { r.Modules[0].Health = strings.Repeat("x", 40<<10) })
	for _, tt := range []struct {
		name, about string
		content     []byte
		result      string
		reason      string
	}{
		{"not JSON", node, []byte("{modules: edgehub"), "invalid", "invalid character"},
		{"empty", node, nil, "invalid", "empty content"},
		{"unknown field", node, []byte(strings.Replace(string(mutate(func(*inventory.Report) {})), `"v":1`, `"v":1,"evil":true`, 1)), "invalid", "unknown field"},
		{"another version", node, mutate(func(r *inventory.Report) { r.V = 2 }), "invalid", "v: version 2"},
		{"oversized", node, huge, "invalid", "more than the 32768"},
		{"too many modules", node, many, "invalid", "modules: 72, at most 64"},
		{"bad runtime", node, mutate(func(r *inventory.Report) { r.Modules[3].Runtime = "docker" }), "invalid", "modules[3].runtime"},
		{"bad sha256", node, mutate(func(r *inventory.Report) { r.Modules[11].SHA256 = "abc" }), "invalid", "modules[11].sha256"},
		{"negative counter", node, mutate(func(r *inventory.Report) { r.Modules[0].Handled = -1 }), "invalid", "negative counter"},
		{"twice the same module", node, mutate(func(r *inventory.Report) { r.Modules[1].Name = "edgehub" }), "invalid", "listed twice"},
		{"about another node (path)", other, mutate(func(*inventory.Report) {}), "forbidden", "reports only its own"},
		{"naming another node (content)", node, mutate(func(r *inventory.Report) { r.Node = other }), "forbidden", "reports only its own"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := r.Counter("kedge_rolloutcontroller_inventory_total", map[string]string{"result": tt.result})
			resp := r.inventoryFrom(node, tt.about, tt.content)
			if resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), tt.reason) {
				t.Fatalf("answer %s %s, want an error naming %q", resp.Route.Operation, resp.Content, tt.reason)
			}
			if got := r.Counter("kedge_rolloutcontroller_inventory_total", map[string]string{"result": tt.result}); got != n+1 {
				t.Fatalf("%s count %v → %v, want one more", tt.result, n, got)
			}
		})
	}
	if after, rv2 := r.annotation(node); after != before || rv2 != rv {
		t.Fatalf("refused reports changed node %s: %q (rv %s) → %q (rv %s)", node, before, rv, after, rv2)
	}
	if after, rv2 := r.annotation(other); after != otherBefore || rv2 != otherRV {
		t.Fatalf("a report about %s from %s changed it: rv %s → %s", other, node, otherRV, rv2)
	}
}

// mustReencode is raw as the controller writes it (decoded and encoded again).
func mustReencode(t *testing.T, raw []byte) []byte {
	t.Helper()
	rep, err := inventory.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rep)
	return b
}
