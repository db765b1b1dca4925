package rolloutcontroller_test

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/kedge-io/kedge/plugins/builtin/rolloutcontroller"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// waitOp waits until the controller queued operation op of rollout for node, removes it from what
// was seen and returns it.
func (r *rig) waitOp(op, node, rollout string) sdk.Message {
	r.T.Helper()
	return r.WaitSent(op, res(node, r.NS, rolloutcontroller.TypePluginRollout, rollout))
}

// noUpdates fails if anything of this test queued so far (and not claimed) is an update.
func (r *rig) noUpdates() {
	r.T.Helper()
	for _, s := range r.SentList() {
		if strings.HasPrefix(s, message.OpUpdate+" ") && strings.Contains(s, "/"+r.NS+"/") {
			r.T.Fatalf("unexpected rollout message: %s", s)
		}
	}
}

func (r *rig) deleteRollout(name string) {
	r.T.Helper()
	if err := api.Delete().Namespace(r.NS).Resource(v1alpha1.ResourcePluginRollouts).Name(name).Do(context.Background()).Error(); err != nil {
		r.T.Fatal(err)
	}
}

func TestCRDAcceptsPausedAndRefusesANonBooleanWith422(t *testing.T) {
	r := newRig(t)
	const head = "apiVersion: kedge.io/v1alpha1\nkind: PluginRollout\n"
	if err := create(r.NS, head+"metadata: {name: p1}\nspec: {plugin: modbus, version: 1.0.0, runtime: wasm, module: modbus, paused: true}\n"); err != nil {
		t.Fatalf("paused: true refused: %v", err)
	}
	if got := r.get("p1"); !got.Spec.Paused {
		t.Fatalf("spec.paused not stored: %+v", got.Spec)
	}
	if err := create(r.NS, head+"metadata: {name: p2}\nspec: {plugin: modbus, version: 1.0.0, runtime: wasm, module: modbus}\n"); err != nil {
		t.Fatal(err)
	}
	if got := r.get("p2"); got.Spec.Paused {
		t.Fatalf("spec.paused defaults to true")
	}
	err := create(r.NS, head+"metadata: {name: p3}\nspec: {plugin: modbus, version: 1.0.0, runtime: wasm, module: modbus, paused: \"yes\"}\n")
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.paused") {
		t.Fatalf("paused: \"yes\" answered %v, want 422 naming spec.paused", err)
	}
}

func TestPausedBySpecLetsInstallingNodesFinishSendsNothingNewAndResumesWhereItStopped(t *testing.T) {
	r := newRig(t)
	a, b, c := r.Node("a"), r.Node("b"), r.Node("c")
	for _, n := range []string{a, b, c} {
		r.edgeNode(n, nil)
	}
	r.rollout("mb", "2.0.0", 1, nil)
	_, first := r.waitSent(a, "mb")
	gen1 := first.Generation

	r.patchSpec("mb", map[string]any{"paused": true})
	ro := r.waitStatus("mb", "Paused by spec", func(s v1alpha1.PluginRolloutStatus) bool {
		return s.Phase == v1alpha1.PhasePaused && s.PauseReason == v1alpha1.PausedBySpec
	})
	if nodeState(ro.Status, a) != v1alpha1.NodeInstalling || !strings.Contains(ro.Status.Message, "paused by spec.paused") {
		t.Fatalf("paused status %+v: want a still Installing and a message saying it was paused by spec", ro.Status)
	}
	if ro.Status.RolloutGeneration != gen1 || ro.Generation == gen1 {
		t.Fatalf("generation %d, rolloutGeneration %d: pausing must keep the generation the nodes have (%d)", ro.Generation, ro.Status.RolloutGeneration, gen1)
	}

	// a, installing when paused, finishes and reports about the generation it was sent.
	r.ok(a, "mb", gen1, "2.0.0", v1alpha1.NodeUpdated, "")
	ro = r.waitStatus("mb", "a Updated while paused", func(s v1alpha1.PluginRolloutStatus) bool { return nodeState(s, a) == v1alpha1.NodeUpdated })
	if ro.Status.Phase != v1alpha1.PhasePaused || ro.Status.PauseReason != v1alpha1.PausedBySpec || nodeState(ro.Status, b) != v1alpha1.NodePending || ro.Status.Updated != 1 {
		t.Fatalf("status %+v: want still Paused (Spec), b Pending, 1 updated", ro.Status)
	}
	r.noneSentTo(b) // the status with a Updated and b Pending is written: b's turn did not start
	r.noneSentTo(c)

	r.patchSpec("mb", map[string]any{"paused": false})
	_, got := r.waitSent(b, "mb")
	if got.Generation != gen1 {
		t.Fatalf("b sent generation %d, want the rollout's %d (resuming is no new rollout)", got.Generation, gen1)
	}
	ro = r.waitStatus("mb", "Progressing again", func(s v1alpha1.PluginRolloutStatus) bool {
		return s.Phase == v1alpha1.PhaseProgressing && s.PauseReason == "" && s.Message == ""
	})
	if nodeState(ro.Status, a) != v1alpha1.NodeUpdated {
		t.Fatalf("a is %s after resume, want Updated", nodeState(ro.Status, a))
	}
	r.ok(b, "mb", gen1, "2.0.0", v1alpha1.NodeUpdated, "")
	r.waitSent(c, "mb")
	r.ok(c, "mb", gen1, "2.0.0", v1alpha1.NodeUpdated, "")
	r.waitStatus("mb", "Complete", func(s v1alpha1.PluginRolloutStatus) bool { return s.Phase == v1alpha1.PhaseComplete && s.Updated == 3 })
	r.noneSentTo(a) // a, already Updated, was never sent the rollout again

	out, err := ctrlrig.Env.Kubectl("get", "pluginrollouts", "-n", r.NS)
	if err != nil {
		t.Fatalf("kubectl: %v: %s", err, out)
	}
	if head := strings.Fields(strings.Split(out, "\n")[0]); strings.Join(head, " ") != "NAME DESIRED UPDATED FAILED PHASE AGE" {
		t.Errorf("printer columns %v, want NAME DESIRED UPDATED FAILED PHASE AGE", head)
	}
}

func TestPauseAfterAFailureIsShownApartFromPausedBySpecAndOnlyASpecChangeRetriesTheFailedNode(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.edgeNode(a, nil)
	r.edgeNode(b, nil)
	r.rollout("mb", "3.0.0", 1, nil)
	_, first := r.waitSent(a, "mb")
	r.ok(a, "mb", first.Generation, "2.0.0", v1alpha1.NodeRolledBack, "health check failed")
	ro := r.waitStatus("mb", "Paused on the failure", func(s v1alpha1.PluginRolloutStatus) bool { return s.Phase == v1alpha1.PhasePaused })
	if ro.Status.PauseReason != v1alpha1.PausedByFailure || strings.Contains(ro.Status.Message, "spec.paused") || !strings.Contains(ro.Status.Message, "health check failed") {
		t.Fatalf("status %+v: want pauseReason NodeFailed and the node's message only", ro.Status)
	}

	r.patchSpec("mb", map[string]any{"paused": true})
	ro = r.waitStatus("mb", "Paused by spec", func(s v1alpha1.PluginRolloutStatus) bool { return s.PauseReason == v1alpha1.PausedBySpec })
	if !strings.Contains(ro.Status.Message, "paused by spec.paused") || !strings.Contains(ro.Status.Message, "health check failed") {
		t.Fatalf("message %q: want both the spec pause and the failure", ro.Status.Message)
	}

	// paused: false alone does not retry a: the rollout stays paused on its failure.
	r.patchSpec("mb", map[string]any{"paused": false})
	ro = r.waitStatus("mb", "back to the failure", func(s v1alpha1.PluginRolloutStatus) bool { return s.PauseReason == v1alpha1.PausedByFailure })
	if ro.Status.Phase != v1alpha1.PhasePaused || nodeState(ro.Status, a) != v1alpha1.NodeRolledBack || nodeState(ro.Status, b) != v1alpha1.NodePending ||
		ro.Status.RolloutGeneration != first.Generation {
		t.Fatalf("status %+v: want Paused, a RolledBack, b Pending, rolloutGeneration %d", ro.Status, first.Generation)
	}
	r.noneSentTo(a)
	r.noneSentTo(b)

	// A spec change (a fixed version) restarts: a is sent the new generation.
	r.patchSpec("mb", map[string]any{"version": "3.0.1"})
	_, got := r.waitSent(a, "mb")
	ro = r.waitStatus("mb", "restarted", func(s v1alpha1.PluginRolloutStatus) bool {
		return s.Phase == v1alpha1.PhaseProgressing && nodeState(s, a) == v1alpha1.NodeInstalling
	})
	if got.Version != "3.0.1" || got.Generation != ro.Generation || ro.Status.RolloutGeneration != ro.Generation || ro.Status.PauseReason != "" {
		t.Fatalf("a got %+v; status %+v: want 3.0.1 at generation %d", got, ro.Status, ro.Generation)
	}
}

func TestDeletingARolloutTellsItsNodesToDropItSendsNothingMoreAndTheModuleCanBeRolledOutAgain(t *testing.T) {
	r := newRig(t)
	a, b, c := r.Node("a"), r.Node("b"), r.Node("c")
	for _, n := range []string{a, b, c} {
		r.edgeNode(n, nil)
	}
	r.rollout("mb", "2.0.0", 1, nil)
	_, first := r.waitSent(a, "mb")
	r.ok(a, "mb", first.Generation, "2.0.0", v1alpha1.NodeUpdated, "")
	r.waitSent(b, "mb")
	r.waitStatus("mb", "b installing", func(s v1alpha1.PluginRolloutStatus) bool { return nodeState(s, b) == v1alpha1.NodeInstalling })

	r.deleteRollout("mb")
	for _, n := range []string{a, b} { // the nodes that were sent it drop their copy
		if d := r.waitOp(message.OpDelete, n, "mb"); d.Route.Group != "resource" {
			t.Fatalf("delete for %s in group %q, want resource", n, d.Route.Group)
		}
	}
	// b finishes and reports: answered with an error (acknowledged), nothing sent to c.
	resp := r.report(b, "mb", rolloutcontroller.StatusReport{Rollout: r.NS + "/mb", Generation: first.Generation, Version: "2.0.0", State: v1alpha1.NodeUpdated})
	if resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), "no pluginrollout") {
		t.Fatalf("report about a deleted rollout answered %s %s", resp.Route.Operation, resp.Content)
	}
	r.noneSentTo(c)
	if n := r.Counter("kedge_rolloutcontroller_deletes_total", map[string]string{"reason": "deleted"}); n != 2 {
		t.Errorf("deletes_total{deleted} %v, want 2 (a and b; c was never sent it)", n)
	}

	// A new rollout of the same module (same name) starts from scratch.
	r.rollout("mb", "2.1.0", 1, nil)
	_, got := r.waitSent(a, "mb")
	if got.Version != "2.1.0" {
		t.Fatalf("a got %+v, want 2.1.0", got)
	}
	r.noUpdates() // nothing else: c never got the deleted rollout, b nothing new yet
	ro := r.waitStatus("mb", "a installing", func(s v1alpha1.PluginRolloutStatus) bool { return nodeState(s, a) == v1alpha1.NodeInstalling })
	r.ok(a, "mb", ro.Status.RolloutGeneration, "2.1.0", v1alpha1.NodeUpdated, "")
	r.waitSent(b, "mb")
}

func TestConnectingNodeHoldingADeletedRolloutIsToldToDropIt(t *testing.T) {
	r := newRig(t)
	a := r.Node("a")
	r.edgeNode(a, nil)
	r.rollout("live", "2.0.0", 1, nil)
	r.waitSent(a, "live")
	edge := func(typ, name string) string {
		return message.Resource{Namespace: r.NS, Type: typ, Name: name}.Edge()
	}
	inv := []rolloutcontroller.InventoryItem{
		{Resource: edge(rolloutcontroller.TypePluginRollout, "live"), ResourceVersion: 10},
		{Resource: edge("configmap", "gone"), ResourceVersion: 8},
		{Resource: edge(rolloutcontroller.TypePluginRollout, "gone"), ResourceVersion: 9}, // last: handled in order
	}
	m := message.New("cloudhub", "hub", message.OpInventory, message.Resource{Node: a, Namespace: "-", Type: "connection", Name: a}.Cloud())
	m, err := m.WithContent(inv)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.H.Send(m); err != nil {
		t.Fatal(err)
	}
	r.waitOp(message.OpDelete, a, "gone") // the items before it were handled first
	for _, s := range r.SentList() {
		if strings.HasPrefix(s, message.OpDelete+" ") {
			t.Fatalf("delete sent for something that exists or is no rollout: %s", s)
		}
	}
	if n := r.Counter("kedge_rolloutcontroller_deletes_total", map[string]string{"reason": "inventory"}); n != 1 {
		t.Errorf("deletes_total{inventory} %v, want 1", n)
	}
}
