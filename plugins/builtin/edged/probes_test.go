package edged_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

func TestFailingLivenessProbeRestartsTheContainerAndReadinessDrivesReady(t *testing.T) {
	r := newRig(t, nil)
	pod := newPod(t, corev1.RestartPolicyAlways, "touch /tmp/alive /tmp/ready; sleep 3600")
	c := &pod.Spec.Containers[0]
	// probeTimeUnit is 100ms here: period 1 = 100 ms.
	c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/alive"}}},
		PeriodSeconds: 1, TimeoutSeconds: 10, FailureThreshold: 1}
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ready"}}},
		PeriodSeconds: 1, TimeoutSeconds: 10, FailureThreshold: 1}
	r.run(pod)
	st := r.waitStatus(pod.Name, "Ready", 30*time.Second, func(s corev1.PodStatus) bool { return condition(s, corev1.PodReady) == corev1.ConditionTrue })
	id := strings.TrimPrefix(containerStatus(st, "main").ContainerID, "containerd://")
	exec := func(cmd string) {
		if _, err := r.cri.Runtime.ExecSync(context.Background(), &criv1.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", cmd}, Timeout: 10}); err != nil {
			t.Fatal(err)
		}
	}
	exec("rm /tmp/ready")
	r.waitStatus(pod.Name, "not Ready after the readiness probe fails", 30*time.Second, func(s corev1.PodStatus) bool {
		return s.Phase == corev1.PodRunning && condition(s, corev1.PodReady) == corev1.ConditionFalse && !containerStatus(s, "main").Ready
	})
	exec("rm /tmp/alive")
	st = r.waitStatus(pod.Name, "restarted after the liveness probe fails, and Ready again", 30*time.Second, func(s corev1.PodStatus) bool {
		cs := containerStatus(s, "main")
		return cs.RestartCount == 1 && cs.Ready && cs.State.Running != nil
	})
	if got := containerStatus(st, "main").ContainerID; got == "containerd://"+id {
		t.Fatalf("same container %s after a liveness failure", got)
	}
}

// An exec liveness probe whose command outlasts its timeout fails as a timeout — containerd ends the
// command and answers DeadlineExceeded, which edged reads as the kubelet does — and the container is
// restarted. (Read as a failed call instead, the result would be discarded and nothing would happen.)
func TestExecLivenessProbeOutlastingItsTimeoutRestartsTheContainer(t *testing.T) {
	r := newRig(t, nil)
	pod := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
	// probeTimeUnit is 100ms here: timeout 10 = 1 s, period 50 = 5 s.
	pod.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "30"}}},
		PeriodSeconds: 50, TimeoutSeconds: 10, FailureThreshold: 1}
	r.run(pod)
	r.waitStatus(pod.Name, "restarted after its liveness command outlasted the timeout", 60*time.Second, func(s corev1.PodStatus) bool {
		return containerStatus(s, "main").RestartCount >= 1
	})
}

func TestConfigMapVolumeFollowsTheObjectAndPodNetworkGivesAPodIP(t *testing.T) {
	r := newRig(t, nil)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: ns, ResourceVersion: "1"}, Data: map[string]string{"motd": "one"}}
	r.cloud(message.OpInsert, ns+"/configmap/files", cm)
	pod := newPod(t, corev1.RestartPolicyAlways, "sleep 3600")
	pod.Spec.HostNetwork = false
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "files"}}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true}}
	r.run(pod)
	st := r.waitStatus(pod.Name, "Running with a pod IP", 30*time.Second, func(s corev1.PodStatus) bool {
		return s.Phase == corev1.PodRunning && s.PodIP != ""
	})
	if st.PodIP == st.HostIP {
		t.Errorf("pod network pod got the host IP %s", st.PodIP)
	}
	id := strings.TrimPrefix(containerStatus(st, "main").ContainerID, "containerd://")
	read := func() string {
		out, err := r.cri.Runtime.ExecSync(context.Background(), &criv1.ExecSyncRequest{ContainerId: id, Cmd: []string{"cat", "/etc/cfg/motd"}, Timeout: 10})
		if err != nil {
			t.Fatal(err)
		}
		return string(out.Stdout)
	}
	if got := read(); got != "one" {
		t.Fatalf("mounted file %q, want one", got)
	}
	cm.Data["motd"], cm.ResourceVersion = "two", "2"
	m, _ := message.New("edgehub", "resource", message.OpUpdate, ns+"/configmap/files").WithContent(cm)
	m.Header.ResourceVersion = "2"
	if _, err := r.rt.SendSync(context.Background(), "metamanager", m, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r.eventually("the mounted file follows the ConfigMap", 30*time.Second, func() bool { return read() == "two" })
}
