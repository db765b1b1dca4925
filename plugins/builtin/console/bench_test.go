package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/sdk/inventory"
)

// BenchmarkFleetPush is the work one open page costs cloudcore per pushed change (the SSE fan-out is
// this times the open pages): the fleet view of 1,000 nodes built and rendered, one page of 100
// rows, and every row on one page.
func BenchmarkFleetPush(b *testing.B) {
	for _, inv := range []bool{false, true} {
		benchFleetPush(b, inv)
	}
}

// benchFleetPush runs BenchmarkFleetPush; with inv every node carries a 12-module inventory annotation.
func benchFleetPush(b *testing.B, inv bool) {
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{"node": func(o any) ([]string, error) {
		return []string{o.(*corev1.Pod).Spec.NodeName}, nil
	}})
	leases := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for i := range 1000 {
		name := fmt.Sprintf("edge-%04d", i)
		ann := map[string]string{}
		if inv {
			ann[inventory.Annotation] = benchInventory(name)
		}
		_ = nodes.Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{EdgeLabel: "", "site": "berlin"}, Annotations: ann},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
				LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}, NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.31.0-kedge"}}})
		for j := range 3 {
			_ = pods.Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("%s-%d", name, j)},
				Spec: corev1.PodSpec{NodeName: name}, Status: corev1.PodStatus{Phase: corev1.PodRunning}})
		}
	}
	for _, size := range []int{100, 5000} {
		b.Run(fmt.Sprintf("nodes=1000/pageSize=%d/inventory=%v", size, inv), func(b *testing.B) {
			f := newFleet(nil, nil, nil, 0, "default", size)
			f.nodes, f.pods, f.leases = nodes, pods, leases
			u := &user{Nodes: true, Pods: true, Leases: true}
			var n int
			for b.Loop() {
				var buf bytes.Buffer
				if err := tmpl.ExecuteTemplate(&buf, "fleet", f.view(labels.Everything(), u, 1, "")); err != nil {
					b.Fatal(err)
				}
				n = buf.Len()
			}
			b.ReportMetric(float64(n), "bytes/push")
		})
	}
}

// benchInventory is a 12-module inventory of node, as rolloutcontroller writes it.
func benchInventory(node string) string {
	rep := inventory.Report{V: inventory.V, Node: node, Version: "v0.9.0", Class: "full", Outbox: 2, At: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	for i := range 12 {
		rep.Modules = append(rep.Modules, inventory.Module{Name: fmt.Sprintf("module-%d", i), Runtime: "builtin", Release: "v0.9.0", Handled: 123456, Failed: 3, Queued: 1})
	}
	raw, _ := json.Marshal(rep)
	return string(raw)
}
