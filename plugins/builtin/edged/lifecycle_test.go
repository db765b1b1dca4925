package edged_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

// logOf reads a container's log the way edgestream serves `kubectl logs`: the pod's newest instance
// of the container by labels, then its CRI log file from ContainerStatus.
func (r *rig) logOf(pod *corev1.Pod, container string) (string, error) {
	resp, err := r.cri.Runtime.ListContainers(context.Background(), &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{
		LabelSelector: map[string]string{"kedge.io/managed": "edged", "io.kubernetes.pod.namespace": pod.Namespace,
			"io.kubernetes.pod.name": pod.Name, "io.kubernetes.container.name": container}}})
	if err != nil {
		return "", err
	}
	if len(resp.Containers) == 0 {
		return "", os.ErrNotExist
	}
	sort.Slice(resp.Containers, func(i, j int) bool { return resp.Containers[i].CreatedAt > resp.Containers[j].CreatedAt })
	st, err := r.cri.Runtime.ContainerStatus(context.Background(), &criv1.ContainerStatusRequest{ContainerId: resp.Containers[0].Id})
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(st.Status.LogPath)
	return string(b), err
}

func (r *rig) stopSandbox(id string) {
	r.t.Helper()
	if _, err := r.cri.Runtime.StopPodSandbox(context.Background(), &criv1.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		r.t.Fatal(err)
	}
}

func readySandboxes(sbs []*criv1.PodSandbox) (ready []*criv1.PodSandbox) {
	for _, sb := range sbs {
		if sb.State == criv1.PodSandboxState_SANDBOX_READY {
			ready = append(ready, sb)
		}
	}
	return ready
}

func TestFinishedPodStopsItsSandboxButKeepsStatusAndLogsAcrossAnEdgedRestartUntilDeleted(t *testing.T) {
	r := newRig(t, nil)
	cases := []struct {
		name     string
		policy   corev1.RestartPolicy
		exitCode int32
		phase    corev1.PodPhase
		reason   string
	}{
		{"Never/exit 0 is Succeeded", corev1.RestartPolicyNever, 0, corev1.PodSucceeded, "Completed"},
		{"Never/exit 3 is Failed", corev1.RestartPolicyNever, 3, corev1.PodFailed, "Error"},
		{"OnFailure/exit 0 is Succeeded", corev1.RestartPolicyOnFailure, 0, corev1.PodSucceeded, "Completed"},
	}
	pods := make([]*corev1.Pod, len(cases))
	for i, tc := range cases {
		pods[i] = newPod(t, tc.policy, fmt.Sprintf("echo finished-%d; exit %d", i, tc.exitCode))
		r.run(pods[i])
	}
	// check says the pod is finished as the case wants, with its sandbox stopped but present, its one
	// container kept and its log readable; it returns the container and sandbox IDs.
	check := func(t *testing.T, i int, st corev1.PodStatus) (string, string) {
		t.Helper()
		tc, pod := cases[i], pods[i]
		cs := containerStatus(st, "main")
		if st.Phase != tc.phase || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != tc.exitCode ||
			cs.State.Terminated.Reason != tc.reason || cs.RestartCount != 0 {
			t.Fatalf("phase %s, container %+v", st.Phase, cs)
		}
		r.eventually("the sandbox of "+pod.Name+" stopped", 30*time.Second, func() bool {
			sbs := r.sandboxes(pod.UID)
			return len(sbs) == 1 && sbs[0].State == criv1.PodSandboxState_SANDBOX_NOTREADY
		})
		ctrs := r.containers(pod.UID)
		if len(ctrs) != 1 || "containerd://"+ctrs[0].Id != cs.ContainerID || ctrs[0].State != criv1.ContainerState_CONTAINER_EXITED {
			t.Fatalf("CRI holds %v, status says %s", ctrs, cs.ContainerID)
		}
		logs, err := r.logOf(pod, "main")
		if err != nil || !strings.Contains(logs, fmt.Sprintf("finished-%d", i)) {
			t.Fatalf("log of the finished container: %q %v", logs, err)
		}
		return ctrs[0].Id, r.sandboxes(pod.UID)[0].Id
	}
	ids := make([][2]string, len(cases))
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := r.waitStatus(pods[i].Name, "phase "+string(tc.phase), 30*time.Second, func(s corev1.PodStatus) bool { return s.Phase == tc.phase })
			ids[i][0], ids[i][1] = check(t, i, st)
		})
	}
	if t.Failed() {
		return
	}
	before := make([]int, len(pods))
	for i, pod := range pods {
		before[i] = len(r.statuses(pod.Name))
	}
	r.stop()
	r.start()
	for i, tc := range cases {
		t.Run("after an edged restart/"+tc.name, func(t *testing.T) {
			pod := pods[i]
			r.eventually("a status after the restart", 30*time.Second, func() bool { return len(r.statuses(pod.Name)) > before[i] })
			c, sb := check(t, i, r.lastStatus(pod.Name))
			if c != ids[i][0] || sb != ids[i][1] {
				t.Fatalf("container %s sandbox %s, want the same %s %s (a finished pod is not run again)", c, sb, ids[i][0], ids[i][1])
			}
		})
	}
	// Deleting a finished pod through the API removes its stopped sandbox and confirms the deletion.
	pod := pods[0]
	now := metav1.Now()
	pod.DeletionTimestamp = &now
	r.apply(pod)
	r.eventually("deletion of the finished pod confirmed", 30*time.Second, func() bool { return r.deletionDone(pod.Name, pod.UID) })
	if sbs, ctrs := r.sandboxes(pod.UID), r.containers(pod.UID); len(sbs) != 0 || len(ctrs) != 0 {
		t.Fatalf("after deletion: sandboxes %v containers %v", sbs, ctrs)
	}
}

func TestRecreatedSandboxKeepsRestartCountsGrowingAlsoAcrossAnEdgedRestart(t *testing.T) {
	r := newRig(t, nil)
	pod := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
	r.run(pod)
	// running matches a Running status whose container has restarted at least n times. (At least:
	// should the worker see the container killed before it sees its sandbox dead, one more instance
	// may be counted; counts must only never go back.)
	running := func(n int32) func(corev1.PodStatus) bool {
		return func(s corev1.PodStatus) bool {
			cs := containerStatus(s, "main")
			return s.Phase == corev1.PodRunning && cs.State.Running != nil && cs.RestartCount >= n
		}
	}
	st := r.waitStatus(pod.Name, "Running, no restart", 30*time.Second, running(0))
	first := containerStatus(st, "main").ContainerID
	sb0 := readySandboxes(r.sandboxes(pod.UID))[0].Id

	r.stopSandbox(sb0) // the sandbox dies: edged makes a new one
	st = r.waitStatus(pod.Name, "Running again in a new sandbox, restart count 1", 30*time.Second, running(1))
	cs := containerStatus(st, "main")
	second := cs.RestartCount
	if cs.ContainerID == first || cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ContainerID != first {
		t.Fatalf("after the sandbox was recreated: container %+v (first was %s)", cs, first)
	}
	ready := readySandboxes(r.sandboxes(pod.UID))
	if len(ready) != 1 || ready[0].Id == sb0 {
		t.Fatalf("ready sandboxes %v, want one new one (old %s)", ready, sb0)
	}

	// The sandbox dies while edged is down: the restarted edged counts on from the runtime's records.
	r.stop()
	r.stopSandbox(ready[0].Id)
	r.start()
	st = r.waitStatus(pod.Name, "Running in a third sandbox, restart count above the second's", 30*time.Second, running(second+1))
	id := strings.TrimPrefix(containerStatus(st, "main").ContainerID, "containerd://")
	third := containerStatus(st, "main").RestartCount
	var annotation string
	for _, c := range r.containers(pod.UID) {
		if c.Id == id {
			annotation = c.Annotations["io.kubernetes.container.restartCount"]
		}
	}
	if want := fmt.Sprint(third); annotation != want {
		t.Errorf("io.kubernetes.container.restartCount of the running container = %q, want %s", annotation, want)
	}
	// Only the two newest instances are kept; the first sandbox, holding none, goes.
	r.eventually("the first sandbox removed, two containers kept", 30*time.Second, func() bool {
		sbs, ctrs := r.sandboxes(pod.UID), r.containers(pod.UID)
		for _, sb := range sbs {
			if sb.Id == sb0 {
				return false
			}
		}
		return len(sbs) <= 2 && len(ctrs) == 2
	})
}

func TestDeletionReportsTheContainersTerminatedBeforeConfirmingIt(t *testing.T) {
	r := newRig(t, nil)
	// The shell is the container's PID 1: a TERM that arrives before its trap is set is ignored and the
	// grace period ends in SIGKILL (137), so the pod is deleted only once the readiness probe sees the
	// file written after the trap (on a busy machine a container can be Running long before that).
	pod := newPod(t, corev1.RestartPolicyAlways, `trap 'exit 7' TERM; touch /tmp/trapped; while true; do sleep 0.1; done`)
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/trapped"}}},
		PeriodSeconds: 1, TimeoutSeconds: 10, FailureThreshold: 1}
	r.run(pod)
	r.waitStatus(pod.Name, "Ready (its TERM trap set)", 60*time.Second, func(s corev1.PodStatus) bool {
		return s.Phase == corev1.PodRunning && condition(s, corev1.PodReady) == corev1.ConditionTrue
	})
	grace := int64(20) // the trap ends it at once; the margin is for a busy machine
	now := metav1.Now()
	pod.DeletionTimestamp, pod.DeletionGracePeriodSeconds = &now, &grace
	r.apply(pod)
	r.eventually("deletion confirmed", 90*time.Second, func() bool { return r.deletionDone(pod.Name, pod.UID) })

	// The last status sent before the delete confirmation says how the container ended.
	r.mu.Lock()
	var last *statusReport
	for _, m := range r.sent {
		if m.Route.Operation == message.OpDelete && m.Route.Resource == ns+"/pod/"+pod.Name {
			break
		}
		if m.Route.Operation == message.OpUpdate && m.Route.Resource == ns+"/podstatus/"+pod.Name {
			var s statusReport
			if err := json.Unmarshal(m.Content, &s); err != nil {
				r.mu.Unlock()
				t.Fatal(err)
			}
			last = &s
		}
	}
	r.mu.Unlock()
	if last == nil {
		t.Fatal("no status before the deletion was confirmed")
	}
	cs := containerStatus(last.Status, "main")
	if term := cs.State.Terminated; term == nil || term.ExitCode != 7 || term.Reason != "Error" || cs.Ready {
		t.Fatalf("final container status %+v", cs)
	}
	if last.Status.Phase != corev1.PodFailed || condition(last.Status, corev1.PodReady) != corev1.ConditionFalse {
		t.Fatalf("final phase %s, Ready %s", last.Status.Phase, condition(last.Status, corev1.PodReady))
	}
}

func TestNeverPodWhoseSandboxDiesFailsWithoutANewSandbox(t *testing.T) {
	r := newRig(t, nil)
	pod := newPod(t, corev1.RestartPolicyNever, "sleep 3600")
	r.run(pod)
	r.waitStatus(pod.Name, "Running", 30*time.Second, func(s corev1.PodStatus) bool { return s.Phase == corev1.PodRunning })
	sb := readySandboxes(r.sandboxes(pod.UID))[0].Id
	r.stopSandbox(sb)
	st := r.waitStatus(pod.Name, "Failed", 30*time.Second, func(s corev1.PodStatus) bool { return s.Phase == corev1.PodFailed })
	if cs := containerStatus(st, "main"); cs.State.Terminated == nil || cs.State.Terminated.ExitCode == 0 || cs.RestartCount != 0 {
		t.Fatalf("container %+v", cs)
	}
	if sbs, ctrs := r.sandboxes(pod.UID), r.containers(pod.UID); len(sbs) != 1 || sbs[0].Id != sb || len(ctrs) != 1 {
		t.Fatalf("sandboxes %v containers %v: want only the stopped one and its container", sbs, ctrs)
	}
}
