package edgecontroller_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// evictionSeconds returns, per taint key the node lifecycle controller sets, what the taint-eviction
// controller would wait before evicting the pod: the smallest tolerationSeconds of the matching
// NoExecute tolerations, "forever" when none sets one, "now" when none matches.
func evictionSeconds(p *corev1.Pod) map[string]string {
	out := map[string]string{}
	for _, key := range []string{corev1.TaintNodeUnreachable, corev1.TaintNodeNotReady} {
		res, matched := "now", false
		var least *int64
		for _, t := range p.Spec.Tolerations {
			if (t.Key != key && !(t.Key == "" && t.Operator == corev1.TolerationOpExists)) || (t.Effect != "" && t.Effect != corev1.TaintEffectNoExecute) {
				continue
			}
			matched = true
			if t.TolerationSeconds != nil && (least == nil || *t.TolerationSeconds < *least) {
				least = t.TolerationSeconds
			}
		}
		if matched {
			res = "forever"
			if least != nil {
				res = fmt.Sprint(*least)
			}
		}
		out[key] = res
	}
	return out
}

func (r *rig) waitEviction(name, unreachable, notReady string) *corev1.Pod {
	r.T.Helper()
	var got *corev1.Pod
	eventually(r.T, "pod "+name+" evicted after unreachable="+unreachable+" not-ready="+notReady, func() (bool, string) {
		p, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got = p
		e := evictionSeconds(p)
		return e[corev1.TaintNodeUnreachable] == unreachable && e[corev1.TaintNodeNotReady] == notReady, fmt.Sprint(e, p.Annotations)
	})
	return got
}

func (r *rig) labelNode(node, patch string) {
	r.T.Helper()
	if _, err := ctrlrig.Env.Client.CoreV1().Nodes().Patch(context.Background(), node, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		r.T.Fatal(err)
	}
}

// The API server's DefaultTolerationSeconds admission gives every pod 300 s tolerations; on an edge
// node labelled kedge.io/autonomy=true the controller makes them unlimited — for pods bound at
// creation and for pods bound later through pods/binding (as the scheduler does) — and the real API
// server accepts that change of a running pod. A pod on a node without the label keeps 300 s.
// Turning autonomy off restores 300 s; a duration annotation raises them only to that duration.
func TestPodsOnAnAutonomousEdgeNodeGetUnlimitedEvictionTolerationsAndLoseThemWhenAutonomyIsOff(t *testing.T) {
	r := newRig(t)
	auto, plain := r.Node("auto"), r.Node("plain")
	r.join(auto)
	r.join(plain)
	r.labelNode(auto, `{"metadata":{"labels":{"`+edgecontroller.AutonomyLabel+`":"true"}}}`)

	created := r.pod("bound-at-create", auto)
	if e := evictionSeconds(created); e[corev1.TaintNodeUnreachable] != "300" {
		t.Fatalf("the API server did not add the default tolerations (DefaultTolerationSeconds admission): %v", e)
	}
	p := r.waitEviction("bound-at-create", "forever", "forever")
	if p.Annotations[edgecontroller.AutonomyPodAnnotation] == "" {
		t.Fatalf("no record of the changed tolerations: %v", p.Annotations)
	}
	r.pod("on-plain", plain)

	// Created unbound, bound later through the binding subresource, as kube-scheduler does.
	unbound := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bound-later", Namespace: r.NS},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}}}}
	if _, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Create(context.Background(), unbound, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Bind(context.Background(), &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "bound-later", Namespace: r.NS},
		Target: corev1.ObjectReference{Kind: "Node", Name: auto}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitEviction("bound-later", "forever", "forever")
	if p, _ := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Get(context.Background(), "on-plain", metav1.GetOptions{}); evictionSeconds(p)[corev1.TaintNodeUnreachable] != "300" || p.Annotations[edgecontroller.AutonomyPodAnnotation] != "" {
		t.Fatalf("pod on the node without autonomy was changed: %v %v", evictionSeconds(p), p.Annotations)
	}

	// Autonomy off: the original 300 s come back and the record goes.
	r.labelNode(auto, `{"metadata":{"labels":{"`+edgecontroller.AutonomyLabel+`":null}}}`)
	for _, name := range []string{"bound-at-create", "bound-later"} {
		p := r.waitEviction(name, "300", "300")
		if _, ok := p.Annotations[edgecontroller.AutonomyPodAnnotation]; ok {
			t.Fatalf("%s keeps the record after restoring: %v", name, p.Annotations)
		}
	}

	// A bounded autonomy: 2h raises the 300 s to 7200 s.
	r.labelNode(auto, `{"metadata":{"labels":{"`+edgecontroller.AutonomyLabel+`":"true"},"annotations":{"`+edgecontroller.AutonomyDurationAnnotation+`":"2h"}}}`)
	r.waitEviction("bound-at-create", "7200", "7200")
}

// A pod whose own toleration of unreachable is 0 s (evicted at once) gets both raised to unlimited and
// put back exactly (0 s, and the admission default 300 s for not-ready) when autonomy is turned off;
// a pod that already tolerates everything forever (a DaemonSet's) is left alone.
func TestAutonomyRaisesAPodsOwnTolerationsRestoresThemExactlyAndLeavesUnlimitedOnesAlone(t *testing.T) {
	r := newRig(t)
	auto := r.Node("auto")
	r.join(auto)
	r.labelNode(auto, `{"metadata":{"labels":{"`+edgecontroller.AutonomyLabel+`":"true"}}}`)
	forever := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "daemon", Namespace: r.NS},
		Spec: corev1.PodSpec{NodeName: auto, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}}
	if _, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Create(context.Background(), forever, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	own := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "zero", Namespace: r.NS},
		Spec: corev1.PodSpec{NodeName: auto, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}},
			Tolerations: []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &zero}}}}
	if _, err := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Create(context.Background(), own, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitEviction("zero", "forever", "forever")
	eventually(t, "the autonomy counter", func() (bool, string) {
		n := counter(r, "kedge_edgecontroller_autonomy_pods_total", "tolerate")
		return n == 1, fmt.Sprint(n)
	})
	if p, _ := ctrlrig.Env.Client.CoreV1().Pods(r.NS).Get(context.Background(), "daemon", metav1.GetOptions{}); p.Annotations[edgecontroller.AutonomyPodAnnotation] != "" || len(p.Spec.Tolerations) != 1 {
		t.Fatalf("a pod tolerating everything forever was changed: %v %v", p.Spec.Tolerations, p.Annotations)
	}
	r.labelNode(auto, `{"metadata":{"labels":{"`+edgecontroller.AutonomyLabel+`":"false"}}}`)
	r.waitEviction("zero", "0", "300")
}

// counter sums a counter's samples that have a label with value.
func counter(r *rig, name, value string) float64 {
	mfs, err := r.H.Metrics.Gather()
	if err != nil {
		r.T.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
