package kubebench

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
)

// TestEveryPodCreatedReachesItsEdgeNodeStore creates pods spread over several connected edge nodes
// and checks that each one is stored on exactly the node it is bound to: its consumer there was told
// once, no other node's consumer was, and each node's SQLite holds exactly its own pods (the full
// object, as created).
func TestEveryPodCreatedReachesItsEdgeNodeStore(t *testing.T) {
	const nodes, pods = 10, 100
	r := newRig(t, "check", nodes, options{})
	made := r.createPods("p", pods, 4)
	r.waitProgress("pods stored on their edge nodes", r.all.count, pods)

	want := map[string][]string{} // node -> its pods, as "<ns>/<name>"
	for _, c := range made {
		key := r.ns + "/" + c.name
		want[c.node] = append(want[c.node], key)
		got := r.all.of(key)
		if len(got) != 1 || got[0].node != c.node {
			t.Errorf("pod %s bound to %s: told to %v, want exactly once on %s", key, c.node, got, c.node)
		}
	}
	if len(want) != nodes {
		t.Fatalf("pods were spread over %d nodes, want %d", len(want), nodes)
	}
	for i, node := range r.nodes {
		objs, err := r.edges[i].db.Objects(metamanager.Name).List(context.Background(), store.Query{Type: edgecontroller.TypePod})
		if err != nil {
			t.Fatalf("node %s: listing stored pods: %v", node, err)
		}
		var held []string
		for _, o := range objs {
			var p corev1.Pod
			if err := json.Unmarshal(o.Value, &p); err != nil {
				t.Fatalf("node %s: stored pod %s does not decode: %v", node, o.Key, err)
			}
			if p.Spec.NodeName != node || p.Namespace != o.Namespace || p.Name != o.Name || o.ResourceVersion == 0 {
				t.Errorf("node %s holds pod %s as %s/%s bound to %q at version %d", node, o.Key, p.Namespace, p.Name, p.Spec.NodeName, o.ResourceVersion)
			}
			held = append(held, o.Namespace+"/"+o.Name)
		}
		slices.Sort(held)
		slices.Sort(want[node])
		if !slices.Equal(held, want[node]) {
			t.Errorf("node %s stores pods %v, want %v", node, held, want[node])
		}
	}
}
