package edged_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

func TestPodRunsReadyWithEnvFromConfigMapAndDownwardAPIAndItsContainerIsInCRI(t *testing.T) {
	r := newRig(t, nil)
	r.cloud(message.OpInsert, ns+"/configmap/settings", &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: ns},
		Data: map[string]string{"greeting": "hello"}})
	pod := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
	c := &pod.Spec.Containers[0]
	c.Env = []corev1.EnvVar{
		{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "greeting"}}},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory",
			Divisor: resource.MustParse("1Mi")}}},
		{Name: "BOTH", Value: "$(GREETING)-$(POD_NAME)"},
	}
	c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("500m")}
	r.run(pod)

	st := r.waitStatus(pod.Name, "Running and Ready", 30*time.Second, func(s corev1.PodStatus) bool {
		return s.Phase == corev1.PodRunning && condition(s, corev1.PodReady) == corev1.ConditionTrue
	})
	cs := containerStatus(st, "main")
	if cs.State.Running == nil || !cs.Ready || cs.RestartCount != 0 || !strings.HasPrefix(cs.ContainerID, "containerd://") {
		t.Fatalf("container status %+v", cs)
	}
	for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady} {
		if condition(st, ct) != corev1.ConditionTrue {
			t.Errorf("condition %s = %s", ct, condition(st, ct))
		}
	}
	if st.QOSClass != corev1.PodQOSGuaranteed || st.StartTime == nil {
		t.Errorf("qos %s startTime %v", st.QOSClass, st.StartTime)
	}
	ctrs := r.containers(pod.UID)
	if len(ctrs) != 1 || "containerd://"+ctrs[0].Id != cs.ContainerID || ctrs[0].State != criv1.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("CRI holds %v, status says %s", ctrs, cs.ContainerID)
	}
	out, err := r.cri.Runtime.ExecSync(context.Background(), &criv1.ExecSyncRequest{ContainerId: ctrs[0].Id, Cmd: []string{"env"}, Timeout: 10})
	if err != nil {
		t.Fatal(err)
	}
	env := string(out.Stdout)
	for _, want := range []string{"GREETING=hello", "POD_NAME=" + pod.Name, "MEM=64", "BOTH=hello-" + pod.Name} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
	cst, err := r.cri.Runtime.ContainerStatus(context.Background(), &criv1.ContainerStatusRequest{ContainerId: ctrs[0].Id})
	if err != nil {
		t.Fatal(err)
	}
	if res := cst.Status.GetResources().GetLinux(); res != nil && (res.MemoryLimitInBytes != 64<<20 || res.CpuQuota != 50000 || res.CpuShares != 512) {
		t.Errorf("linux resources %+v", res)
	}
	all := r.statuses(pod.Name)
	for i := 1; i < len(all); i++ {
		if reflect.DeepEqual(all[i].Status, all[i-1].Status) {
			t.Errorf("status %d repeats status %d: only changes are sent", i, i-1)
		}
	}
}

func TestRestartPolicyDecidesWhetherAnExitedContainerRestarts(t *testing.T) {
	r := newRig(t, nil)
	cases := []struct {
		name      string
		policy    corev1.RestartPolicy
		script    string
		phase     corev1.PodPhase
		exitCode  int32
		restarted bool
	}{
		{"Never/exit 3 fails the pod without restart", corev1.RestartPolicyNever, "exit 3", corev1.PodFailed, 3, false},
		{"Never/exit 0 succeeds", corev1.RestartPolicyNever, "exit 0", corev1.PodSucceeded, 0, false},
		{"OnFailure/exit 0 succeeds without restart", corev1.RestartPolicyOnFailure, "exit 0", corev1.PodSucceeded, 0, false},
		{"OnFailure/exit 2 restarts", corev1.RestartPolicyOnFailure, "exit 2", corev1.PodRunning, 2, true},
		{"Always/exit 0 restarts", corev1.RestartPolicyAlways, "exit 0", corev1.PodRunning, 0, true},
	}
	pods := make([]*corev1.Pod, len(cases))
	for i, tc := range cases {
		pods[i] = newPod(t, tc.policy, tc.script)
		r.run(pods[i])
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := pods[i]
			if tc.restarted {
				st := r.waitStatus(pod.Name, "restarted once", 30*time.Second, func(s corev1.PodStatus) bool {
					return containerStatus(s, "main").RestartCount >= 1
				})
				cs := containerStatus(st, "main")
				if st.Phase != tc.phase || cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != tc.exitCode {
					t.Fatalf("phase %s, container %+v", st.Phase, cs)
				}
				return
			}
			st := r.waitStatus(pod.Name, "phase "+string(tc.phase), 30*time.Second, func(s corev1.PodStatus) bool { return s.Phase == tc.phase })
			cs := containerStatus(st, "main")
			if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != tc.exitCode || cs.RestartCount != 0 {
				t.Fatalf("container %+v", cs)
			}
			if want := map[int32]string{0: "Completed"}[tc.exitCode]; want != "" && cs.State.Terminated.Reason != want {
				t.Errorf("reason %q, want %q", cs.State.Terminated.Reason, want)
			}
			if n := len(r.containers(pod.UID)); n != 1 {
				t.Errorf("%d container instances in CRI, want 1 (no restart)", n)
			}
		})
	}
}

func TestCrashingContainerBacksOffWithGrowingDelays(t *testing.T) {
	r := newRig(t, nil)
	pod := newPod(t, corev1.RestartPolicyAlways, "exit 1")
	r.run(pod)
	// The time each restart is first seen; the intervals between restarts should double (base 1s).
	seen := map[int32]time.Time{}
	r.eventually("three restarts", 60*time.Second, func() bool {
		for _, s := range r.statuses(pod.Name) {
			n := containerStatus(s.Status, "main").RestartCount
			if _, ok := seen[n]; !ok {
				seen[n] = time.Now()
			}
		}
		return len(seen) >= 4 && seen[3] != (time.Time{})
	})
	d1, d2 := seen[2].Sub(seen[1]), seen[3].Sub(seen[2])
	t.Logf("restart intervals: %s, %s", d1, d2)
	if ratio := float64(d2) / float64(d1); ratio < 1.4 || ratio > 3 {
		t.Errorf("restart intervals %s then %s: ratio %.2f, want about 2", d1, d2, ratio)
	}
	st := r.waitStatus(pod.Name, "CrashLoopBackOff", 10*time.Second, func(s corev1.PodStatus) bool {
		w := containerStatus(s, "main").State.Waiting
		return w != nil && w.Reason == "CrashLoopBackOff"
	})
	cs := containerStatus(st, "main")
	if !strings.Contains(cs.State.Waiting.Message, "back-off") || cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 1 {
		t.Errorf("container %+v", cs)
	}
}

func TestMissingImageIsReportedWithThePullReason(t *testing.T) {
	r := newRig(t, nil)
	cases := []struct {
		name    string
		policy  corev1.PullPolicy
		reasons []string // in the order they must appear
	}{
		{"IfNotPresent gives ErrImagePull then ImagePullBackOff", corev1.PullIfNotPresent, []string{"ErrImagePull", "ImagePullBackOff"}},
		{"Never gives ErrImageNeverPull", corev1.PullNever, []string{"ErrImageNeverPull"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := newPod(t, corev1.RestartPolicyAlways, "true")
			pod.Spec.Containers[0].Image = "localhost/not-on-this-node:1"
			pod.Spec.Containers[0].ImagePullPolicy = tc.policy
			r.run(pod)
			for _, reason := range tc.reasons {
				st := r.waitStatus(pod.Name, reason, 30*time.Second, func(s corev1.PodStatus) bool {
					w := containerStatus(s, "main").State.Waiting
					return w != nil && w.Reason == reason
				})
				w := containerStatus(st, "main").State.Waiting
				if st.Phase != corev1.PodPending || !strings.Contains(w.Message, "localhost/not-on-this-node:1") {
					t.Fatalf("phase %s waiting %+v", st.Phase, w)
				}
			}
		})
	}
}

func TestDeletionRunsPreStopHonoursTheGracePeriodAndIsConfirmed(t *testing.T) {
	r := newRig(t, nil)
	dir := t.TempDir()
	pod := newPod(t, corev1.RestartPolicyAlways, "")
	grace := int64(2)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	pod.Spec.Volumes = []corev1.Volume{{Name: "out", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}}}}
	pod.Spec.Containers = []corev1.Container{
		{Name: "graceful", Image: pod.Spec.Containers[0].Image, ImagePullPolicy: corev1.PullIfNotPresent,
			Command:      []string{"sh", "-c", `trap 'echo term > /out/term; exit 0' TERM; while true; do sleep 0.1; done`},
			VolumeMounts: []corev1.VolumeMount{{Name: "out", MountPath: "/out"}},
			Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
				Command: []string{"sh", "-c", "echo prestop > /out/prestop"}}}}},
		{Name: "stubborn", Image: pod.Spec.Containers[0].Image, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"sh", "-c", `trap '' TERM; while true; do sleep 0.1; done`}},
	}
	r.run(pod)
	r.waitStatus(pod.Name, "Running and Ready", 30*time.Second, func(s corev1.PodStatus) bool {
		return s.Phase == corev1.PodRunning && condition(s, corev1.PodReady) == corev1.ConditionTrue
	})
	now := metav1.Now()
	pod.DeletionTimestamp, pod.DeletionGracePeriodSeconds = &now, &grace
	start := time.Now()
	r.apply(pod)
	r.eventually("deletion confirmed", 30*time.Second, func() bool { return r.deletionDone(pod.Name, pod.UID) })
	if took := time.Since(start); took < time.Duration(grace)*time.Second {
		t.Errorf("deletion confirmed after %s: the container that ignores SIGTERM should have had %ds", took, grace)
	}
	for _, f := range []string{"prestop", "term"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || strings.TrimSpace(string(b)) != f {
			t.Errorf("%s: %q %v (preStop hook and SIGTERM should both have run)", f, b, err)
		}
	}
	if sbs := r.sandboxes(pod.UID); len(sbs) != 0 {
		t.Errorf("sandboxes left after deletion: %v", sbs)
	}
}

func TestRestartedEdgedAdoptsRunningContainers(t *testing.T) {
	r := newRig(t, nil)
	pod := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
	r.run(pod)
	st := r.waitStatus(pod.Name, "Running", 30*time.Second, func(s corev1.PodStatus) bool { return s.Phase == corev1.PodRunning })
	id := containerStatus(st, "main").ContainerID
	sb := r.sandboxes(pod.UID)
	before := len(r.statuses(pod.Name))
	r.stop()
	r.start()
	r.eventually("a status after the restart", 30*time.Second, func() bool { return len(r.statuses(pod.Name)) > before })
	after := r.lastStatus(pod.Name)
	cs := containerStatus(after, "main")
	if after.Phase != corev1.PodRunning || cs.ContainerID != id || cs.RestartCount != 0 {
		t.Fatalf("after restart: phase %s container %s (was %s) restarts %d", after.Phase, cs.ContainerID, id, cs.RestartCount)
	}
	if got := r.sandboxes(pod.UID); len(got) != 1 || got[0].Id != sb[0].Id {
		t.Fatalf("sandboxes %v, want the same %s", got, sb[0].Id)
	}
	if n := len(r.containers(pod.UID)); n != 1 {
		t.Fatalf("%d containers, want the one adopted", n)
	}
}

func TestInvalidPodIsReportedAndOthersKeepRunning(t *testing.T) {
	r := newRig(t, nil)
	bad := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
	bad.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "missing", MountPath: "/x"}}
	good := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
	r.run(bad)
	r.run(good)
	st := r.waitStatus(bad.Name, "InvalidPodSpec", 30*time.Second, func(s corev1.PodStatus) bool { return s.Reason == "InvalidPodSpec" })
	if st.Phase != corev1.PodPending || !strings.Contains(st.Message, `volumeMount "missing"`) {
		t.Fatalf("status %s %q", st.Phase, st.Message)
	}
	r.waitStatus(good.Name, "Running", 30*time.Second, func(s corev1.PodStatus) bool { return s.Phase == corev1.PodRunning })
	if n := len(r.sandboxes(bad.UID)); n != 0 {
		t.Fatalf("invalid pod got %d sandboxes", n)
	}
}

// The same edged source serves as a plugin process (runtime: process): built with the module's build
// tag into cmd/kedge-module, it runs a pod to Running and Ready over CRI like the builtin one.
func TestEdgedAsAPluginProcessRunsAPod(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin and needs containerd")
	}
	bin := filepath.Join(t.TempDir(), "edged")
	build := exec.Command("go", "build", "-race", "-tags", "kedge_custom kedge_edged", "-ldflags", "-X main.moduleName=edged", "-o", bin, "github.com/kedge-io/kedge/cmd/kedge-module")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the plugin: %v\n%s", err, out)
	}
	r := newRigWith(t, nil, bin)
	pod := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
	r.run(pod)
	st := r.waitStatus(pod.Name, "Running and Ready", 60*time.Second, func(s corev1.PodStatus) bool {
		return s.Phase == corev1.PodRunning && condition(s, corev1.PodReady) == corev1.ConditionTrue
	})
	if cs := containerStatus(st, "main"); cs.State.Running == nil || !strings.HasPrefix(cs.ContainerID, "containerd://") {
		t.Fatalf("container status %+v", cs)
	}
}
