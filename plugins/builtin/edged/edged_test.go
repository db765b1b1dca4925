package edged_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/process"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/plugins/builtin/edged"
	_ "github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/slow"
)

const ns = "edged-test"

// rig runs metamanager (real SQLite) and edged through the real module manager and router, on the
// test containerd. A mailbox in the hub group sees what goes to the cloud.
type rig struct {
	t      *testing.T
	rt     *router.Router
	db     *store.DB
	cri    *crienv.Client
	config map[string]any
	mgr    *modules.Manager

	plugin, pluginSum string // set: edged runs as this plugin executable

	mu   sync.Mutex
	sent []sdk.Message // upstream, in order
	cond *sync.Cond
}

func newRig(t *testing.T, settings map[string]any) *rig {
	t.Helper()
	return newRigWith(t, settings, "")
}

// newRigWith runs edged as the plugin executable at plugin (runtime: process) when it is set.
func newRigWith(t *testing.T, settings map[string]any, plugin string) *rig {
	t.Helper()
	ep, cri := crienv.Start(t)
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"criEndpoint": ep, "rootDir": t.TempDir(), "statusPeriod": "100ms", "syncPeriod": "5s",
		"probeTimeUnit": "100ms", "backoff": map[string]any{"base": "1s", "max": "1m", "resetAfter": "10m"}}
	for k, v := range settings {
		cfg[k] = v
	}
	r := &rig{t: t, rt: router.New(nil), db: db, cri: cri, config: cfg, plugin: plugin}
	if plugin != "" {
		sum, err := os.ReadFile(plugin)
		if err != nil {
			t.Fatal(err)
		}
		r.pluginSum = fmt.Sprintf("%x", sha256.Sum256(sum))
	}
	r.cond = sync.NewCond(&r.mu)
	hub, err := r.rt.Register("edgehub", "hub", router.Options{Capacity: 4096, Policy: router.Block})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := hub.Receive(ctx)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.sent = append(r.sent, m)
			r.cond.Broadcast()
			r.mu.Unlock()
		}
	}()
	r.start()
	t.Cleanup(func() {
		r.stop()
		cancel()
		<-done
		db.Close()
	})
	return r
}

func (r *rig) start() {
	r.t.Helper()
	mm, _ := sdk.Lookup("metamanager")
	ed, _ := sdk.Lookup(edged.Name)
	tree := map[string]any{"modules": map[string]any{
		"metamanager": map[string]any{"metaServer": map[string]any{"enable": false}},
		edged.Name:    withEnable(r.config),
	}}
	var loaders modules.Loaders
	if r.plugin != "" { // edged as a plugin process (runtime: process), built from the same source
		block := tree["modules"].(map[string]any)[edged.Name].(map[string]any)
		block["runtime"], block["path"], block["sha256"] = "process", r.plugin, r.pluginSum
		loader := process.NewLoader(process.Options{})
		r.t.Cleanup(func() { _ = loader.Close() })
		loaders = modules.Loaders{modules.Process: loader}
	}
	plan, err := modules.Plan("test", tree, nil, []sdk.Info{mm, ed}, loaders)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mgr = modules.NewManager(modules.Deps{NodeName: nodeName, Router: r.rt, Store: r.db,
		Logger: slog.New(slog.NewTextHandler(testWriter{r.t}, &slog.HandlerOptions{Level: slog.LevelInfo})), StopTimeout: 30 * time.Second})
	if err := r.mgr.Start(context.Background(), plan); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) stop() {
	if r.mgr != nil {
		if err := r.mgr.Stop(context.Background()); err != nil {
			r.t.Errorf("stop: %v", err)
		}
		r.mgr = nil
	}
}

func withEnable(c map[string]any) map[string]any {
	out := map[string]any{"enable": true}
	for k, v := range c {
		out[k] = v
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// cloud delivers an object from the cloud: stored by metamanager, then given to edged.
func (r *rig) cloud(op, resource string, obj any) {
	r.t.Helper()
	m, err := message.New("edgehub", "resource", op, resource).WithContent(obj)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.rt.SendSync(context.Background(), "metamanager", m, 10*time.Second); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) apply(pod *corev1.Pod) { r.cloud(message.OpUpdate, ns+"/pod/"+pod.Name, pod) }

// run applies the pod and makes the test remove it (and check containerd holds nothing of it) at the end.
func (r *rig) run(pod *corev1.Pod) {
	r.t.Helper()
	r.apply(pod)
	r.t.Cleanup(func() {
		if r.mgr != nil {
			r.cloud(message.OpDelete, ns+"/pod/"+pod.Name, pod)
			r.eventually("sandboxes of "+pod.Name+" removed", 60*time.Second, func() bool { return len(r.sandboxes(pod.UID)) == 0 })
		}
		_ = r.cri.RemoveSandboxes(context.Background(), map[string]string{"io.kubernetes.pod.uid": string(pod.UID)})
	})
}

func (r *rig) sandboxes(uid types.UID) []*criv1.PodSandbox {
	resp, err := r.cri.Runtime.ListPodSandbox(context.Background(), &criv1.ListPodSandboxRequest{Filter: &criv1.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.uid": string(uid)}}})
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.Items
}

func (r *rig) containers(uid types.UID) []*criv1.Container {
	resp, err := r.cri.Runtime.ListContainers(context.Background(), &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.uid": string(uid)}}})
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.Containers
}

// eventually polls ok until it holds, giving up after timeout scaled by KEDGE_TEST_TIMEOUT_SCALE.
func (r *rig) eventually(what string, timeout time.Duration, ok func() bool) {
	r.t.Helper()
	timeout = slow.Scale(timeout)
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			r.t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type statusReport struct {
	UID    types.UID        `json:"uid"`
	Name   string           `json:"name"`
	Status corev1.PodStatus `json:"status"`
}

// statuses returns the statuses sent for pod name, in order, from index `from` of what was sent.
func (r *rig) statuses(name string) []statusReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []statusReport
	for _, m := range r.sent {
		if m.Route.Operation == message.OpUpdate && m.Route.Resource == ns+"/podstatus/"+name {
			var s statusReport
			if err := json.Unmarshal(m.Content, &s); err != nil {
				r.t.Fatalf("status content %s: %v", m.Content, err)
			}
			out = append(out, s)
		}
	}
	return out
}

// waitStatus waits for a status of pod name that satisfies ok and returns it.
func (r *rig) waitStatus(name, what string, timeout time.Duration, ok func(corev1.PodStatus) bool) corev1.PodStatus {
	r.t.Helper()
	var got corev1.PodStatus
	r.eventually(what+" (pod "+name+")", timeout, func() bool {
		for _, s := range r.statuses(name) {
			if ok(s.Status) {
				got = s.Status
				return true
			}
		}
		return false
	})
	return got
}

func (r *rig) lastStatus(name string) corev1.PodStatus {
	s := r.statuses(name)
	if len(s) == 0 {
		return corev1.PodStatus{}
	}
	return s[len(s)-1].Status
}

func (r *rig) deletionDone(name string, uid types.UID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.sent {
		if m.Route.Operation == message.OpDelete && m.Route.Resource == ns+"/pod/"+name && strings.Contains(string(m.Content), string(uid)) {
			return true
		}
	}
	return false
}

var podSeq int

// nodeName is this test process's edge node. It is unique per process because the containerd is
// shared (by parallel test packages, by other checkouts on the machine): edged removes the sandboxes
// labelled with its node name whose pods it does not know, so two rigs with one name would kill each
// other's pods (seen under load as containers restarted with restartCount 0 and sandboxes vanishing).
var nodeName = "edge-" + strconv.Itoa(os.Getpid())

func newPod(t *testing.T, restart corev1.RestartPolicy, script string) *corev1.Pod {
	podSeq++
	name := fmt.Sprintf("%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), podSeq)
	if len(name) > 50 {
		name = name[len(name)-50:]
		name = strings.TrimLeft(name, "-_")
	}
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(fmt.Sprintf("uid-%d-%d", time.Now().UnixNano(), podSeq))},
		Spec: corev1.PodSpec{
			NodeName: nodeName, HostNetwork: true, RestartPolicy: restart, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "main", Image: crienv.Busybox, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sh", "-c", script}}},
		},
	}
}

func containerStatus(st corev1.PodStatus, name string) corev1.ContainerStatus {
	for _, cs := range st.ContainerStatuses {
		if cs.Name == name {
			return cs
		}
	}
	return corev1.ContainerStatus{}
}

func condition(st corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}
