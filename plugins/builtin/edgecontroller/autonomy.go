package edgecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	"github.com/prometheus/client_golang/prometheus"
)

// Node autonomy: an edge node labelled AutonomyLabel=true keeps its pods while it is unreachable.
//
// The node lifecycle controller (kube-controller-manager) taints a node whose kubelet (here: cloudcore
// on its behalf) stopped reporting node.kubernetes.io/unreachable:NoExecute (not-ready when it reports
// NotReady), and the taint-eviction controller deletes every pod on it that does not tolerate the
// taint, after the smallest tolerationSeconds of the matching tolerations. The API server's
// DefaultTolerationSeconds admission gives every pod both tolerations for 300 s at creation. So this
// controller, for each pod bound to an autonomous edge node, raises the tolerationSeconds of every
// toleration matching those two taints to unlimited (or to the node's AutonomyDurationAnnotation),
// adding the tolerations a pod lacks. The API allows exactly this change of a pod (tolerations may be
// added, an existing one's tolerationSeconds may change); a pod is bound before it can be affected,
// and the binding is an update the informers see, so every pod is covered while its node still
// reports. Turning autonomy off restores what the controller changed (recorded in
// AutonomyPodAnnotation).
const (
	// AutonomyLabel on a Node, value "true", opts the edge node into autonomy.
	AutonomyLabel = "kedge.io/autonomy"
	// AutonomyDurationAnnotation on an autonomous Node bounds how long its pods stay while it is
	// unreachable (a Go duration, e.g. "2h"); absent, empty or "0": without limit.
	AutonomyDurationAnnotation = "kedge.io/autonomy-duration"
	// AutonomyPodAnnotation on a pod records the tolerations the controller changed (JSON), so that
	// turning autonomy off restores them.
	AutonomyPodAnnotation = "kedge.io/autonomy-tolerations"
)

// autonomyTaints are the taints the node lifecycle controller puts on a node it cannot reach.
var autonomyTaints = []string{corev1.TaintNodeUnreachable, corev1.TaintNodeNotReady}

// changedToleration is one entry of AutonomyPodAnnotation: a toleration the controller raised (its
// original tolerationSeconds) or added (Added; restoring sets tolerationSeconds 0, which evicts as
// at once as having no toleration did — the API lets no toleration be removed).
type changedToleration struct {
	Key      string                    `json:"key"`
	Operator corev1.TolerationOperator `json:"operator,omitempty"`
	Effect   corev1.TaintEffect        `json:"effect,omitempty"`
	Seconds  *int64                    `json:"seconds,omitempty"`
	Added    bool                      `json:"added,omitempty"`
}

type autonomyMetrics struct {
	pods   *prometheus.CounterVec
	errors prometheus.Counter
}

// autonomy is the part of the controller that keeps pods on autonomous nodes; it has its own queue of
// pods so it holds up nothing of the downstream path.
type autonomy struct {
	m       *Module
	queue   workqueue.TypedRateLimitingInterface[types.NamespacedName]
	metrics autonomyMetrics
}

// startAutonomy registers the handlers (before the informers start) and, once they synced, the
// workers; stop with the module's context and stopAutonomy.
func (m *Module) startAutonomy(reg prometheus.Registerer) error {
	a := &autonomy{m: m, queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "edgecontroller-autonomy"})}
	a.metrics = autonomyMetrics{
		pods: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_autonomy_pods_total",
			Help: "Pods whose eviction tolerations were changed for node autonomy, by action (tolerate: raised for an autonomous node; restore: put back after autonomy was turned off)."}, []string{"action"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edgecontroller_autonomy_errors_total",
			Help: "Failed attempts to change a pod's tolerations for node autonomy (retried with backoff)."}),
	}
	for _, c := range []prometheus.Collector{a.metrics.pods, a.metrics.errors} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	enqueuePod := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			a.queue.Add(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
		}
	}
	if _, err := m.factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueuePod, UpdateFunc: func(_, n any) { enqueuePod(n) },
	}); err != nil {
		return err
	}
	// A Node whose autonomy setting changed: every pod on it.
	nodeChanged := func(o, n any) {
		on, _ := o.(*corev1.Node)
		nn, _ := n.(*corev1.Node)
		if nn == nil || (on != nil && autonomySetting(on) == autonomySetting(nn) && isEdgeNode(on) == isEdgeNode(nn)) {
			return
		}
		objs, _ := m.podIdx.ByIndex(podNodeIndex, nn.Name)
		for _, o := range objs {
			enqueuePod(o)
		}
	}
	if _, err := m.factory.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(n any) { nodeChanged(nil, n) }, UpdateFunc: nodeChanged,
	}); err != nil {
		return err
	}
	m.autonomy = a
	return nil
}

// runAutonomy starts the workers; call after the informers synced.
func (m *Module) runAutonomy(ctx context.Context) {
	a := m.autonomy
	for range 2 {
		m.wg.Go(func() {
			for a.next(ctx) {
			}
		})
	}
}

// enqueueAll queues every bound pod (a new leader catches up).
func (a *autonomy) enqueueAll() {
	for _, o := range a.m.podIdx.List() {
		if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			a.queue.Add(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
		}
	}
}

func (m *Module) stopAutonomy() {
	if m.autonomy != nil {
		m.autonomy.queue.ShutDown()
	}
}

func isEdgeNode(n *corev1.Node) bool {
	_, ok := n.Labels[EdgeLabel]
	return ok
}

// autonomySetting is the node's autonomy as a string ("" = off, "forever", or a duration); an
// unparsable duration annotation is reported by nodeAutonomy.
func autonomySetting(n *corev1.Node) string {
	if n.Labels[AutonomyLabel] != "true" {
		return ""
	}
	return "on:" + n.Annotations[AutonomyDurationAnnotation]
}

// nodeAutonomy says whether the node is an autonomous edge node and for how long its pods may stay
// unreachable (nil: without limit).
func nodeAutonomy(n *corev1.Node) (on bool, seconds *int64, err error) {
	if !isEdgeNode(n) || n.Labels[AutonomyLabel] != "true" {
		return false, nil, nil
	}
	s := n.Annotations[AutonomyDurationAnnotation]
	if s == "" || s == "0" {
		return true, nil, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return true, nil, fmt.Errorf("node %s: annotation %s=%q is not a duration like \"2h\" (pods keep their tolerations until it is fixed)", n.Name, AutonomyDurationAnnotation, s)
	}
	if d == 0 {
		return true, nil, nil
	}
	secs := int64((d + time.Second - 1) / time.Second)
	return true, &secs, nil
}

func (a *autonomy) next(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if !a.m.elector.Leading() {
		a.queue.Forget(key) // the leader changes tolerations; a new leader goes over every pod
		return true
	}
	if err := a.sync(ctx, key); err != nil {
		a.metrics.errors.Inc()
		a.m.host.Logger().Warn("pod tolerations for node autonomy not changed; retrying", "pod", key.String(), "err", err)
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}

// sync brings one pod's eviction tolerations in line with its node's autonomy.
func (a *autonomy) sync(ctx context.Context, key types.NamespacedName) error {
	pod, err := a.m.pods.Pods(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil {
		return nil
	}
	node, err := a.m.nodes.Get(pod.Spec.NodeName)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	on, seconds, err := nodeAutonomy(node)
	if err != nil {
		a.m.host.Logger().Warn("node autonomy setting ignored", "err", err)
		return nil // the node's next change enqueues its pods again
	}
	_, changed := pod.Annotations[AutonomyPodAnnotation]
	if !on && !changed {
		return nil
	}
	if on {
		if _, _, need := tolerate(pod, seconds); !need {
			return nil
		}
	}
	action := "restore"
	if on {
		action = "tolerate"
	}
	done := false
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := a.m.client.CoreV1().Pods(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID || cur.DeletionTimestamp != nil {
			return nil
		}
		var next *corev1.Pod
		if on {
			n, _, need := tolerate(cur, seconds)
			if !need {
				return nil
			}
			next = n
		} else {
			if next, err = restore(cur); err != nil || next == nil {
				return err
			}
		}
		if _, err := a.m.client.CoreV1().Pods(key.Namespace).Update(ctx, next, metav1.UpdateOptions{FieldManager: "kedge-edgecontroller"}); err != nil {
			return err
		}
		done = true
		return nil
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s tolerations of pod %s on node %s: %w", action, key, pod.Spec.NodeName, err)
	}
	if done {
		a.metrics.pods.WithLabelValues(action).Inc()
		limit := "without limit"
		if seconds != nil {
			limit = "for " + strconv.FormatInt(*seconds, 10) + "s"
		}
		if on {
			a.m.recorder.Eventf(pod, corev1.EventTypeNormal, "NodeAutonomy", "node %s is autonomous: the pod stays while its node is unreachable or not ready (%s)", pod.Spec.NodeName, limit)
			a.m.host.Logger().Info("pod tolerates its autonomous node being unreachable", "pod", key.String(), "node", pod.Spec.NodeName, "limit", limit)
		} else {
			a.m.recorder.Eventf(pod, corev1.EventTypeNormal, "NodeAutonomyOff", "node %s is no longer autonomous: eviction tolerations restored", pod.Spec.NodeName)
			a.m.host.Logger().Info("pod's eviction tolerations restored", "pod", key.String(), "node", pod.Spec.NodeName)
		}
	}
	return nil
}

// matches says whether t applies to the NoExecute taint key (no value) the node lifecycle controller sets.
func matches(t corev1.Toleration, key string) bool {
	if t.Effect != "" && t.Effect != corev1.TaintEffectNoExecute {
		return false
	}
	switch t.Operator {
	case corev1.TolerationOpExists:
		return t.Key == "" || t.Key == key
	case corev1.TolerationOpEqual, "":
		return t.Key == key && t.Value == ""
	}
	return false
}

// longer reports whether want (nil: without limit) is longer than have.
func longer(want, have *int64) bool {
	if have == nil {
		return false
	}
	return want == nil || *want > *have
}

// tolerate returns a copy of pod whose tolerations of the unreachable and not-ready taints last at
// least seconds (nil: without limit), and whether that changed anything. Only tolerations shorter
// than that are raised (never shortened); what is changed is recorded in AutonomyPodAnnotation
// (the first original value of each toleration stays recorded).
func tolerate(pod *corev1.Pod, seconds *int64) (*corev1.Pod, []changedToleration, bool) {
	out := pod.DeepCopy()
	rec := recorded(pod)
	need := false
	for _, key := range autonomyTaints {
		found := false
		for i := range out.Spec.Tolerations {
			t := &out.Spec.Tolerations[i]
			if !matches(*t, key) {
				continue
			}
			found = true
			if !longer(seconds, t.TolerationSeconds) {
				continue
			}
			if !hasRecord(rec, *t) {
				rec = append(rec, changedToleration{Key: t.Key, Operator: t.Operator, Effect: t.Effect, Seconds: t.TolerationSeconds})
			}
			t.TolerationSeconds = copyInt(seconds)
			need = true
		}
		if !found {
			t := corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: copyInt(seconds)}
			out.Spec.Tolerations = append(out.Spec.Tolerations, t)
			rec = append(rec, changedToleration{Key: t.Key, Operator: t.Operator, Effect: t.Effect, Added: true})
			need = true
		}
	}
	if need {
		raw, _ := json.Marshal(rec)
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		out.Annotations[AutonomyPodAnnotation] = string(raw)
	}
	return out, rec, need
}

// restore returns a copy of pod with the tolerations recorded in AutonomyPodAnnotation put back and
// the annotation removed; nil when there is nothing to restore.
func restore(pod *corev1.Pod) (*corev1.Pod, error) {
	raw, ok := pod.Annotations[AutonomyPodAnnotation]
	if !ok {
		return nil, nil
	}
	var rec []changedToleration
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		// Not ours to guess: drop the unreadable record, leave the tolerations as they are.
		rec = nil
	}
	out := pod.DeepCopy()
	for _, r := range rec {
		for i := range out.Spec.Tolerations {
			t := &out.Spec.Tolerations[i]
			if t.Key != r.Key || t.Operator != r.Operator || t.Effect != r.Effect {
				continue
			}
			if r.Added {
				zero := int64(0) // as if it had no toleration: evicted at once
				t.TolerationSeconds = &zero
			} else {
				t.TolerationSeconds = copyInt(r.Seconds)
			}
		}
	}
	delete(out.Annotations, AutonomyPodAnnotation)
	return out, nil
}

func recorded(pod *corev1.Pod) []changedToleration {
	var rec []changedToleration
	if raw, ok := pod.Annotations[AutonomyPodAnnotation]; ok {
		_ = json.Unmarshal([]byte(raw), &rec)
	}
	return rec
}

func hasRecord(rec []changedToleration, t corev1.Toleration) bool {
	for _, r := range rec {
		if r.Key == t.Key && r.Operator == t.Operator && r.Effect == t.Effect {
			return true
		}
	}
	return false
}

func copyInt(p *int64) *int64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
