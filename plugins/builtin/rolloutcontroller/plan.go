package rolloutcontroller

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

// specHash identifies what ro rolls out, where and how fast: its spec without spec.paused.
func specHash(ro *v1alpha1.PluginRollout) string {
	spec := ro.Spec.DeepCopy()
	spec.Paused = false
	b, err := json.Marshal(spec) // struct fields in order, map keys sorted: stable
	if err != nil {
		return "" // cannot happen for this type; an empty hash restarts, the safe side
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// rolloutGeneration returns the generation ro's nodes are sent and report about once its status
// is up to date, and whether reaching it restarts the rollout: a new generation that changed the
// spec other than spec.paused (or a status that has no record of the spec yet) restarts it at
// metadata.generation; pausing or resuming keeps the generation the nodes already have.
func rolloutGeneration(ro *v1alpha1.PluginRollout) (gen int64, restart bool, hash string) {
	st := &ro.Status
	hash = specHash(ro)
	switch {
	case st.ObservedGeneration == ro.Generation && st.RolloutGeneration > 0:
		return st.RolloutGeneration, false, st.SpecHash
	case st.ObservedGeneration == ro.Generation: // a status written before rolloutGeneration existed
		return ro.Generation, false, hash
	case st.SpecHash != "" && st.SpecHash == hash && st.RolloutGeneration > 0:
		return st.RolloutGeneration, false, hash // only spec.paused changed
	default:
		return ro.Generation, true, hash
	}
}

// pausedBySpecMessage is status.message while spec.paused is true.
const pausedBySpecMessage = "paused by spec.paused: no node is sent anything new; set it to false to resume"

// step computes ro's next status from its current one and the selected nodes (sorted), and returns
// the nodes whose turn starts with it (they are to be sent the rollout once the status is written).
//
//   - A new spec generation that changed more than spec.paused restarts the rollout: every node not
//     Updated to spec.version is Pending again, the phase Progressing, and the nodes are sent the new
//     generation. Pausing or resuming alone keeps every node's state and the generation sent.
//   - Nodes no longer selected leave the status; newly selected ones join as Pending.
//   - A node Failed or RolledBack pauses the rollout (pauseReason NodeFailed, its message becomes the
//     rollout's): no further node starts until the spec changes.
//   - spec.paused pauses it too (pauseReason Spec): no further node starts until it is false again.
//   - Otherwise Pending nodes start, in name order, while fewer than maxParallel are Installing.
//   - Every node Updated: Complete (paused or not: nothing is held back).
func step(ro *v1alpha1.PluginRollout, names []string, selErr error, now metav1.Time) (v1alpha1.PluginRolloutStatus, []string) {
	cur := ro.Status.DeepCopy()
	gen, restart, hash := rolloutGeneration(ro)
	held := map[string]v1alpha1.NodeRolloutStatus{}
	for _, n := range cur.Nodes {
		held[n.Name] = n
	}
	out := v1alpha1.PluginRolloutStatus{ObservedGeneration: ro.Generation, RolloutGeneration: gen, SpecHash: hash, Desired: int32(len(names))}
	if selErr != nil {
		out.Phase, out.PauseReason, out.Message = v1alpha1.PhasePaused, v1alpha1.PausedByInvalidSelector, selErr.Error()
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
	failure := ""
	for _, n := range out.Nodes {
		switch n.State {
		case v1alpha1.NodeUpdated:
			out.Updated++
		case v1alpha1.NodeFailed, v1alpha1.NodeRolledBack:
			out.Failed++
			if failure == "" {
				failure = fmt.Sprintf("node %s: %s: %s", n.Name, n.State, n.Message)
			}
		case v1alpha1.NodeInstalling:
			installing++
		}
	}
	var start []string
	switch {
	case int(out.Updated) == len(out.Nodes):
		out.Phase = v1alpha1.PhaseComplete
	case ro.Spec.Paused:
		out.Phase, out.PauseReason, out.Message = v1alpha1.PhasePaused, v1alpha1.PausedBySpec, pausedBySpecMessage
		if failure != "" {
			out.Message += "; " + failure
		}
	case out.Failed > 0:
		out.Phase, out.PauseReason, out.Message = v1alpha1.PhasePaused, v1alpha1.PausedByFailure, failure
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
