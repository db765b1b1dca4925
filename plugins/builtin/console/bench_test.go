package console

import (
	"bytes"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// BenchmarkFleetPush is the work one open page costs cloudcore per pushed change (the SSE fan-out is
// this times the open pages): the fleet view of 1,000 nodes built and rendered, one page of 100
// rows, and every row on one page.
func BenchmarkFleetPush(b *testing.B) {
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{"node": func(o any) ([]string, error) {
		return []string{o.(*corev1.Pod).Spec.NodeName}, nil
	}})
	leases := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for i := range 1000 {
		name := fmt.Sprintf("edge-%04d", i)
		_ = nodes.Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{EdgeLabel: "", "site": "berlin"}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
				LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}, NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.31.0-kedge"}}})
		for j := range 3 {
			_ = pods.Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("%s-%d", name, j)},
				Spec: corev1.PodSpec{NodeName: name}, Status: corev1.PodStatus{Phase: corev1.PodRunning}})
		}
	}
	for _, size := range []int{100, 5000} {
		b.Run(fmt.Sprintf("nodes=1000/pageSize=%d", size), func(b *testing.B) {
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
