package rolloutcontroller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/plugins/builtin/rolloutcontroller"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
	"github.com/kedge-io/kedge/test/k8senv"
)

var (
	api   *rest.RESTClient // kedge.io/v1alpha1
	repo  = k8senv.Repo()
	roGVR = v1alpha1.GroupVersion.WithResource(v1alpha1.ResourcePluginRollouts)
)

func TestMain(m *testing.M) {
	os.Exit(ctrlrig.Main(m, "rolloutcontroller", true, func(e *k8senv.Env) (err error) {
		api, err = rolloutcontroller.NewRESTClient(e.Config)
		return err
	}))
}

// rig runs the controller against the real API server, with cloudhub captured (test/ctrlrig).
type rig struct{ *ctrlrig.Rig }

func newRig(t *testing.T) *rig {
	t.Helper()
	ns := newNamespace(t)
	// Each rig leads its own Lease (rigs of parallel tests are separate "clusters").
	return newReplica(t, ns, map[string]any{"leaseName": "ro-" + ns})
}

// newNamespace creates a namespace named after the test.
func newNamespace(t *testing.T) string { return ctrlrig.Namespace(t, 40) }

// newReplica runs one more controller for namespace ns with these leaderElection settings (a
// cloudcore replica when several share a leaseName).
func newReplica(t *testing.T, ns string, election map[string]any) *rig {
	t.Helper()
	r := &rig{ctrlrig.Start(t, rolloutcontroller.Name, map[string]any{"leaderElection": election}, ns)}
	// Rollouts without a selector reach every edge node: none outlives its test.
	t.Cleanup(func() {
		_ = api.Delete().Namespace(ns).Resource(v1alpha1.ResourcePluginRollouts).Do(context.Background()).Error()
	})
	return r
}

// edgeNode creates an edge node (label node-role.kubernetes.io/edge) carrying this test's label
// and extra labels.
func (r *rig) edgeNode(name string, extra map[string]string) {
	r.T.Helper()
	l := map[string]string{rolloutcontroller.EdgeRoleLabel: "", "test": r.NS}
	for k, v := range extra {
		l[k] = v
	}
	r.createNode(name, l)
}

func (r *rig) createNode(name string, l map[string]string) {
	r.T.Helper()
	if _, err := ctrlrig.Env.Client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}, metav1.CreateOptions{}); err != nil {
		r.T.Fatal(err)
	}
	r.T.Cleanup(func() {
		_ = ctrlrig.Env.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// rollout creates a rollout selecting this test's nodes with extra matchLabels.
func (r *rig) rollout(name, version string, maxParallel int32, match map[string]string) {
	r.T.Helper()
	sel := map[string]string{"test": r.NS}
	for k, v := range match {
		sel[k] = v
	}
	ro := &v1alpha1.PluginRollout{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.NS},
		Spec: v1alpha1.PluginRolloutSpec{Plugin: "modbus", Version: version, Runtime: v1alpha1.RuntimeProcess, Module: "modbus",
			NodeSelector: &metav1.LabelSelector{MatchLabels: sel}, MaxParallel: maxParallel, GrantedCapabilities: []string{"log"}},
	}
	if err := api.Post().Namespace(r.NS).Resource(v1alpha1.ResourcePluginRollouts).Body(ro).Do(context.Background()).Error(); err != nil {
		r.T.Fatal(err)
	}
}

func (r *rig) get(name string) *v1alpha1.PluginRollout {
	r.T.Helper()
	ro := &v1alpha1.PluginRollout{}
	if err := api.Get().Namespace(r.NS).Resource(v1alpha1.ResourcePluginRollouts).Name(name).Do(context.Background()).Into(ro); err != nil {
		r.T.Fatal(err)
	}
	return ro
}

// patchSpec merge-patches the rollout's spec.
func (r *rig) patchSpec(name string, spec map[string]any) {
	r.T.Helper()
	b, _ := json.Marshal(map[string]any{"spec": spec})
	if err := api.Patch(types.MergePatchType).Namespace(r.NS).Resource(v1alpha1.ResourcePluginRollouts).Name(name).Body(b).Do(context.Background()).Error(); err != nil {
		r.T.Fatal(err)
	}
}

// waitStatus polls the rollout until cond holds for its status.
func (r *rig) waitStatus(name, what string, cond func(v1alpha1.PluginRolloutStatus) bool) *v1alpha1.PluginRollout {
	r.T.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ro := r.get(name)
		if ro.Status.ObservedGeneration == ro.Generation && cond(ro.Status) {
			return ro
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(ro.Status, "", "  ")
			r.T.Fatalf("rollout %s never reached %s; status:\n%s", name, what, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nodeState(st v1alpha1.PluginRolloutStatus, node string) string {
	for _, n := range st.Nodes {
		if n.Name == node {
			return n.State
		}
	}
	return ""
}

// event sends a cloudhub event for node.
// event sends a cloudhub event (connected, disconnected) for node.
func (r *rig) event(node, op string) {
	r.T.Helper()
	r.Event(node, op, nil)
}

// report sends a pluginstatus update as cloudhub hands it over (group plugin, sync) and returns the
// answer.
func (r *rig) report(node, rollout string, content any) sdk.Message {
	r.T.Helper()
	return r.Request("plugin", node, message.OpUpdate, r.NS, rolloutcontroller.TypePluginStatus, rollout, content)
}

// ok sends a report and fails unless it is answered OK.
func (r *rig) ok(node, rollout string, gen int64, version, state, msg string) {
	r.T.Helper()
	resp := r.report(node, rollout, rolloutcontroller.StatusReport{Rollout: r.NS + "/" + rollout, Generation: gen, Version: version, State: state, Message: msg})
	if resp.Route.Operation == message.OpError {
		r.T.Fatalf("report %s %s from %s refused: %s", state, version, node, resp.Content)
	}
}

var res = ctrlrig.Res

// waitSent waits until the controller queued a rollout message for node, removes it from what was
// seen and returns its content.
func (r *rig) waitSent(node, rollout string) (sdk.Message, rolloutcontroller.RolloutMessage) {
	r.T.Helper()
	m := r.WaitSent(message.OpUpdate, res(node, r.NS, rolloutcontroller.TypePluginRollout, rollout))
	var c rolloutcontroller.RolloutMessage
	if err := json.Unmarshal(m.Content, &c); err != nil {
		r.T.Fatalf("rollout message content %s: %v", m.Content, err)
	}
	return m, c
}

// noneSentTo fails if anything of this test queued so far (and not claimed) is for node.
func (r *rig) noneSentTo(node string) {
	r.T.Helper()
	for _, s := range r.SentList() {
		if strings.Contains(s, " node/"+node+"/"+r.NS+"/") {
			r.T.Fatalf("%s got a message before its turn: %s", node, s)
		}
	}
}

func create(ns, manifest string) error {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		return err
	}
	obj.SetNamespace(ns)
	_, err := ctrlrig.Dynamic.Resource(roGVR).Namespace(ns).Create(context.Background(), obj, metav1.CreateOptions{})
	return err
}

func TestCRDRefusesBadRolloutsWith422NamingTheFieldAndAcceptsTheExamples(t *testing.T) {
	r := newRig(t)
	const head = "apiVersion: kedge.io/v1alpha1\nkind: PluginRollout\n"
	tests := []struct {
		name, manifest, wantField string
	}{
		{"an unknown runtime", head + "metadata: {name: r1}\nspec: {plugin: modbus, version: 1.0.0, runtime: docker, module: modbus}\n", "spec.runtime"},
		{"a version that is not semver", head + "metadata: {name: r2}\nspec: {plugin: modbus, version: v1.0, runtime: process, module: modbus}\n", "spec.version"},
		{"maxParallel zero", head + "metadata: {name: r3}\nspec: {plugin: modbus, version: 1.0.0, runtime: wasm, module: modbus, maxParallel: 0}\n", "spec.maxParallel"},
		{"no plugin", head + "metadata: {name: r4}\nspec: {version: 1.0.0, runtime: wasm, module: modbus}\n", "spec.plugin"},
		{"a plugin name with capitals", head + "metadata: {name: r5}\nspec: {plugin: ModBus, version: 1.0.0, runtime: wasm, module: modbus}\n", "spec.plugin"},
		{"no module", head + "metadata: {name: r6}\nspec: {plugin: modbus, version: 1.0.0, runtime: wasm}\n", "spec.module"},
		{"no spec", head + "metadata: {name: r7}\n", "spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := create(r.NS, tt.manifest)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("created or refused otherwise (%v); want 422 Invalid", err)
			}
			if st, ok := err.(apierrors.APIStatus); !ok || st.Status().Code != 422 || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("error %v does not name %s with code 422", err, tt.wantField)
			}
		})
	}
	b, err := os.ReadFile(filepath.Join(repo, "examples", "plugins", "modbus-v2-rollout.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range strings.Split(string(b), "\n---\n") {
		if err := create(r.NS, doc); err != nil {
			t.Fatalf("example document %d refused: %v", i, err)
		}
	}
	if got := r.get("modbus-v2"); got.Spec.MaxParallel != 1 || got.Spec.NodeSelector.MatchLabels["class"] != "gateway" {
		t.Fatalf("example not stored as written: %+v", got.Spec)
	}
	if err := create(r.NS, head+"metadata: {name: defaulted}\nspec: {plugin: modbus, version: 1.0.0, runtime: wasm, module: modbus}\n"); err != nil {
		t.Fatal(err)
	}
	if got := r.get("defaulted"); got.Spec.MaxParallel != 1 {
		t.Fatalf("maxParallel defaults to %d, want 1", got.Spec.MaxParallel)
	}
}

func TestRolloutReachesNodesInNameOrderMaxParallelAtATimeAndCompletes(t *testing.T) {
	r := newRig(t)
	a, b, c, other, plain := r.Node("a"), r.Node("b"), r.Node("c"), r.Node("other"), r.Node("plain")
	for _, n := range []string{c, a, b} { // created out of order: the rollout goes by name
		r.edgeNode(n, map[string]string{"class": "gateway"})
	}
	r.edgeNode(other, map[string]string{"class": "camera"})                  // an edge node the selector does not match
	r.createNode(plain, map[string]string{"test": r.NS, "class": "gateway"}) // not an edge node
	r.rollout("mb", "2.0.0", 2, map[string]string{"class": "gateway"})

	m, got := r.waitSent(a, "mb")
	r.waitSent(b, "mb")
	ro := r.waitStatus("mb", "a and b installing", func(s v1alpha1.PluginRolloutStatus) bool {
		return nodeState(s, a) == v1alpha1.NodeInstalling && nodeState(s, b) == v1alpha1.NodeInstalling
	})
	want := rolloutcontroller.RolloutMessage{Rollout: r.NS + "/mb", Generation: ro.Generation, Plugin: "modbus", Version: "2.0.0",
		Runtime: "process", Module: "modbus", GrantedCapabilities: []string{"log"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("message content %+v, want %+v", got, want)
	}
	if m.Header.ResourceVersion == "" || m.Route.Group != "resource" {
		t.Errorf("message header resourceVersion %q, group %q: want the rollout's RV and group resource", m.Header.ResourceVersion, m.Route.Group)
	}
	if ro.Status.Desired != 3 || ro.Status.Phase != v1alpha1.PhaseProgressing || nodeState(ro.Status, c) != v1alpha1.NodePending {
		t.Fatalf("status %+v: want 3 desired (a, b, c only), progressing, c pending", ro.Status)
	}
	r.noneSentTo(c)
	r.noneSentTo(other)
	r.noneSentTo(plain)

	r.ok(a, "mb", ro.Generation, "", v1alpha1.NodeInstalling, "downloading")
	r.ok(a, "mb", ro.Generation, "2.0.0", v1alpha1.NodeUpdated, "")
	r.waitSent(c, "mb") // a's slot goes to c
	r.ok(b, "mb", ro.Generation, "2.0.0", v1alpha1.NodeUpdated, "")
	r.ok(c, "mb", ro.Generation, "2.0.0", v1alpha1.NodeUpdated, "")
	ro = r.waitStatus("mb", "Complete", func(s v1alpha1.PluginRolloutStatus) bool { return s.Phase == v1alpha1.PhaseComplete })
	if ro.Status.Updated != 3 || ro.Status.Failed != 0 || ro.Status.Desired != 3 {
		t.Fatalf("complete status %+v: want 3 updated of 3", ro.Status)
	}
	for _, n := range ro.Status.Nodes {
		if n.Version != "2.0.0" || n.UpdatedAt == nil {
			t.Errorf("node %s: version %q, updatedAt %v", n.Name, n.Version, n.UpdatedAt)
		}
	}
	r.noneSentTo(other)

	out, err := ctrlrig.Env.Kubectl("get", "pluginrollouts", "-n", r.NS)
	if err != nil {
		t.Fatalf("kubectl get pluginrollouts: %v: %s", err, out)
	}
	for _, col := range []string{"DESIRED", "UPDATED", "FAILED", "PHASE", "AGE", "Complete"} {
		if !strings.Contains(out, col) {
			t.Errorf("kubectl get pluginrollouts does not show %s:\n%s", col, out)
		}
	}
	if fields := strings.Fields(strings.Split(strings.TrimSpace(out), "\n")[1]); len(fields) < 5 || fields[1] != "3" || fields[2] != "3" || fields[3] != "0" {
		t.Errorf("kubectl row %v: want desired 3, updated 3, failed 0", fields)
	}
}

func TestFailedOrRolledBackNodePausesTheRolloutWithItsMessage(t *testing.T) {
	for _, state := range []string{v1alpha1.NodeFailed, v1alpha1.NodeRolledBack} {
		t.Run(state, func(t *testing.T) {
			r := newRig(t)
			a, b := r.Node("a"), r.Node("b")
			r.edgeNode(a, nil)
			r.edgeNode(b, nil)
			r.rollout("mb", "3.0.0", 1, nil)
			r.waitSent(a, "mb")
			gen := r.get("mb").Generation
			r.ok(a, "mb", gen, "2.0.0", state, "health check failed: module modbus not ready within 10s")
			ro := r.waitStatus("mb", "Paused", func(s v1alpha1.PluginRolloutStatus) bool { return s.Phase == v1alpha1.PhasePaused })
			if ro.Status.Failed != 1 || ro.Status.Updated != 0 || !strings.Contains(ro.Status.Message, a) || !strings.Contains(ro.Status.Message, "health check failed") {
				t.Fatalf("paused status %+v: want failed 1 and the node's message", ro.Status)
			}
			if nodeState(ro.Status, b) != v1alpha1.NodePending {
				t.Fatalf("b is %s, want Pending (no node starts while paused)", nodeState(ro.Status, b))
			}
			// A later status write of any kind does not start b.
			r.ok(a, "mb", gen, "2.0.0", state, "still rolled back")
			r.waitStatus("mb", "a's new message", func(s v1alpha1.PluginRolloutStatus) bool { return strings.Contains(s.Message, "still rolled back") })
			r.noneSentTo(b)
		})
	}
}

func TestSpecChangeRestartsTheRolloutForNodesNotAtTheNewVersion(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.edgeNode(a, nil)
	r.edgeNode(b, nil)
	r.rollout("mb", "2.0.0", 2, nil)
	r.waitSent(a, "mb")
	r.waitSent(b, "mb")
	gen1 := r.get("mb").Generation
	r.ok(a, "mb", gen1, "2.0.0", v1alpha1.NodeUpdated, "")
	r.ok(b, "mb", gen1, "1.0.0", v1alpha1.NodeRolledBack, "crashed")
	r.waitStatus("mb", "Paused", func(s v1alpha1.PluginRolloutStatus) bool { return s.Phase == v1alpha1.PhasePaused })

	// maxParallel 1 and the same version: a stays Updated, b (not at 2.0.0) starts again.
	r.patchSpec("mb", map[string]any{"maxParallel": 1})
	_, got := r.waitSent(b, "mb")
	ro := r.waitStatus("mb", "b restarted", func(s v1alpha1.PluginRolloutStatus) bool {
		return s.Phase == v1alpha1.PhaseProgressing && nodeState(s, b) == v1alpha1.NodeInstalling
	})
	if got.Generation != ro.Generation || ro.Generation == gen1 {
		t.Fatalf("resent with generation %d, rollout at %d (was %d)", got.Generation, ro.Generation, gen1)
	}
	if nodeState(ro.Status, a) != v1alpha1.NodeUpdated || ro.Status.Updated != 1 || ro.Status.Failed != 0 || ro.Status.Message != "" {
		t.Fatalf("after the restart %+v: want a still Updated, nothing failed, no message", ro.Status)
	}
	r.noneSentTo(a)

	// A report about the old generation is acknowledged but changes nothing.
	before := r.Counter("kedge_rolloutcontroller_upstream_total", map[string]string{"result": "stale"})
	r.ok(b, "mb", gen1, "1.0.0", v1alpha1.NodeFailed, "old news")
	if got := r.Counter("kedge_rolloutcontroller_upstream_total", map[string]string{"result": "stale"}); got != before+1 {
		t.Errorf("stale reports counted %v, want %v", got, before+1)
	}
	if st := nodeState(r.get("mb").Status, b); st != v1alpha1.NodeInstalling {
		t.Fatalf("b is %s after a stale report, want Installing", st)
	}

	// A new version: every node not at it starts again, one at a time in name order.
	r.patchSpec("mb", map[string]any{"version": "2.1.0"})
	_, got = r.waitSent(a, "mb")
	ro = r.waitStatus("mb", "a installing 2.1.0", func(s v1alpha1.PluginRolloutStatus) bool { return nodeState(s, a) == v1alpha1.NodeInstalling })
	if got.Version != "2.1.0" || got.Generation != ro.Generation {
		t.Fatalf("a got %+v, want version 2.1.0 at generation %d", got, ro.Generation)
	}
	r.ok(a, "mb", ro.Generation, "2.1.0", v1alpha1.NodeUpdated, "")
	r.waitSent(b, "mb")
	r.ok(b, "mb", ro.Generation, "2.1.0", v1alpha1.NodeUpdated, "")
	r.waitStatus("mb", "Complete", func(s v1alpha1.PluginRolloutStatus) bool { return s.Phase == v1alpha1.PhaseComplete && s.Updated == 2 })
}

func TestReportsFromNodesOutsideTheRolloutOrWithBadContentAreRefusedAndNothingWritten(t *testing.T) {
	r := newRig(t)
	a, stranger := r.Node("a"), r.Node("stranger")
	r.edgeNode(a, map[string]string{"class": "gateway"})
	r.edgeNode(stranger, map[string]string{"class": "camera"})
	r.rollout("mb", "2.0.0", 1, map[string]string{"class": "gateway"})
	r.waitSent(a, "mb")
	ro := r.waitStatus("mb", "a installing", func(s v1alpha1.PluginRolloutStatus) bool { return nodeState(s, a) == v1alpha1.NodeInstalling })
	gen, rv := ro.Generation, ro.ResourceVersion
	good := func(mod func(*rolloutcontroller.StatusReport)) rolloutcontroller.StatusReport {
		s := rolloutcontroller.StatusReport{Rollout: r.NS + "/mb", Generation: gen, Version: "2.0.0", State: v1alpha1.NodeUpdated}
		mod(&s)
		return s
	}
	tests := []struct {
		name, node, rollout string
		content             any
		want                string
	}{
		{"a node the selector does not match", stranger, "mb", good(func(*rolloutcontroller.StatusReport) {}), "forbidden"},
		{"content that is not JSON", a, "mb", []byte("{nope"), "invalid"},
		{"empty content", a, "mb", []byte(" "), "invalid"},
		{"an unknown field", a, "mb", []byte(`{"rollout":"` + r.NS + `/mb","generation":1,"state":"Updated","version":"2.0.0","extra":1}`), "unknown field"},
		{"another rollout named in the content", a, "mb", good(func(s *rolloutcontroller.StatusReport) { s.Rollout = r.NS + "/other" }), "the report is about"},
		{"no generation", a, "mb", good(func(s *rolloutcontroller.StatusReport) { s.Generation = 0 }), "generation"},
		{"an unknown state", a, "mb", good(func(s *rolloutcontroller.StatusReport) { s.State = "Done" }), "want Installing, Updated, Failed or RolledBack"},
		{"updated without a version", a, "mb", good(func(s *rolloutcontroller.StatusReport) { s.Version = "" }), "without the version"},
		{"updated to another version", a, "mb", good(func(s *rolloutcontroller.StatusReport) { s.Version = "9.9.9" }), "rollout is of 2.0.0"},
		{"a rollout that does not exist", a, "nope", good(func(s *rolloutcontroller.StatusReport) { s.Rollout = r.NS + "/nope" }), "no pluginrollout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.report(tt.node, tt.rollout, tt.content)
			if resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), tt.want) {
				t.Fatalf("answer %s %s, want an error naming %q", resp.Route.Operation, resp.Content, tt.want)
			}
		})
	}
	if got := r.Counter("kedge_rolloutcontroller_denied_total", nil); got != 1 {
		t.Errorf("denied_total %v, want 1", got)
	}
	if got := r.get("mb"); got.ResourceVersion != rv {
		t.Fatalf("a refused report changed the rollout (resourceVersion %s -> %s): %+v", rv, got.ResourceVersion, got.Status)
	}
}

func TestNodeReconnectingMidRolloutGetsItsRolloutAgain(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.edgeNode(a, nil)
	r.edgeNode(b, nil)
	r.rollout("mb", "2.0.0", 1, nil)
	r.waitSent(a, "mb")
	r.waitStatus("mb", "a installing", func(s v1alpha1.PluginRolloutStatus) bool { return nodeState(s, a) == v1alpha1.NodeInstalling })
	r.event(a, message.OpDisconnected)
	r.event(a, message.OpConnected)
	_, got := r.waitSent(a, "mb")
	if got.Version != "2.0.0" {
		t.Fatalf("resent %+v", got)
	}
	r.event(b, message.OpConnected) // b's turn has not come: nothing for it
	r.ok(a, "mb", got.Generation, "2.0.0", v1alpha1.NodeUpdated, "")
	r.waitSent(b, "mb")
	if n := r.Counter("kedge_rolloutcontroller_reconnect_resends_total", nil); n != 1 {
		t.Errorf("reconnect_resends_total %v, want 1", n)
	}
}

func TestNodeJoiningTheSelectionJoinsTheRollout(t *testing.T) {
	r := newRig(t)
	a, b := r.Node("a"), r.Node("b")
	r.edgeNode(a, map[string]string{"class": "gateway"})
	r.rollout("mb", "2.0.0", 1, map[string]string{"class": "gateway"})
	r.waitSent(a, "mb")
	gen := r.get("mb").Generation
	r.ok(a, "mb", gen, "2.0.0", v1alpha1.NodeUpdated, "")
	r.waitStatus("mb", "Complete with one node", func(s v1alpha1.PluginRolloutStatus) bool { return s.Phase == v1alpha1.PhaseComplete && s.Desired == 1 })
	r.edgeNode(b, map[string]string{"class": "gateway"})
	r.waitSent(b, "mb")
	ro := r.waitStatus("mb", "b installing", func(s v1alpha1.PluginRolloutStatus) bool {
		return s.Desired == 2 && s.Phase == v1alpha1.PhaseProgressing && nodeState(s, b) == v1alpha1.NodeInstalling
	})
	if ro.Status.Updated != 1 {
		t.Fatalf("status %+v", ro.Status)
	}
}
