package rolloutcontroller

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
)

// selected returns the names, sorted, of the edge nodes ro's selector matches (absent or empty
// selector: every edge node).
func selected(ro *v1alpha1.PluginRollout, nodes []*corev1.Node) ([]string, error) {
	sel := labels.Everything()
	if ro.Spec.NodeSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(ro.Spec.NodeSelector)
		if err != nil {
			return nil, fmt.Errorf("spec.nodeSelector: %w", err)
		}
		sel = s
	}
	var out []string
	for _, n := range nodes {
		if sel.Matches(labels.Set(n.Labels)) {
			out = append(out, n.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// step computes ro's next status from its current one and the selected nodes (sorted), and returns
// the nodes whose turn starts with it (they are to be sent the rollout once the status is written).
//
//   - A new spec generation restarts the rollout: every node not Updated to spec.version is Pending
//     again, the phase Progressing.
//   - Nodes no longer selected leave the status; newly selected ones join as Pending.
//   - A node Failed or RolledBack pauses the rollout (its message becomes the rollout's): no further
//     node starts until the spec changes.
//   - Otherwise Pending nodes start, in name order, while fewer than maxParallel are Installing.
//   - Every node Updated: Complete.
func step(ro *v1alpha1.PluginRollout, names []string, selErr error, now metav1.Time) (v1alpha1.PluginRolloutStatus, []string) {
	cur := ro.Status.DeepCopy()
	restart := cur.ObservedGeneration != ro.Generation
	held := map[string]v1alpha1.NodeRolloutStatus{}
	for _, n := range cur.Nodes {
		held[n.Name] = n
	}
	out := v1alpha1.PluginRolloutStatus{ObservedGeneration: ro.Generation, Desired: int32(len(names))}
	if selErr != nil {
		out.Phase, out.Message = v1alpha1.PhasePaused, selErr.Error()
		out.Desired = 0
		return out, nil
	}
	for _, name := range names {
		n, ok := held[name]
		switch {
		case !ok:
			n = v1alpha1.NodeRolloutStatus{Name: name, State: v1alpha1.NodePending, UpdatedAt: &now}
		case restart && !(n.State == v1alpha1.NodeUpdated && n.Version == ro.Spec.Version):
			if n.State != v1alpha1.NodePending || n.Message != "" {
				n.State, n.Message, n.UpdatedAt = v1alpha1.NodePending, "", &now
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	maxPar := int(ro.Spec.MaxParallel)
	if maxPar < 1 {
		maxPar = 1
	}
	installing := 0
	for _, n := range out.Nodes {
		switch n.State {
		case v1alpha1.NodeUpdated:
			out.Updated++
		case v1alpha1.NodeFailed, v1alpha1.NodeRolledBack:
			out.Failed++
			if out.Message == "" {
				out.Message = fmt.Sprintf("node %s: %s: %s", n.Name, n.State, n.Message)
			}
		case v1alpha1.NodeInstalling:
			installing++
		}
	}
	var start []string
	switch {
	case out.Failed > 0:
		out.Phase = v1alpha1.PhasePaused
	case int(out.Updated) == len(out.Nodes):
		out.Phase = v1alpha1.PhaseComplete
	default:
		out.Phase = v1alpha1.PhaseProgressing
		for i := range out.Nodes {
			if installing >= maxPar {
				break
			}
			if n := &out.Nodes[i]; n.State == v1alpha1.NodePending {
				n.State, n.Message, n.UpdatedAt = v1alpha1.NodeInstalling, "", &now
				installing++
				start = append(start, n.Name)
			}
		}
	}
	return out, start
}

// sameStatus says whether a and b hold the same status.
func sameStatus(a, b v1alpha1.PluginRolloutStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}
