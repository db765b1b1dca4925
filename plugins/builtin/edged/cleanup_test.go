package edged_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

// dirNames lists the folder names under dir (none when it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// A pod's log folder (rootDir/logs/<ns>_<name>_<uid>) and volume folder (rootDir/pods/<uid>) go
// when the pod is removed after its deletion, on real containerd; folders an earlier edged left
// behind for pods that are not stored any more are removed at start, while a running pod's stay.
func TestRemovedPodLeavesNoLogOrVolumeFolderAndLeftoversAreSweptAtStart(t *testing.T) {
	r := newRig(t, nil)
	root := r.config["rootDir"].(string)
	logs, pods := filepath.Join(root, "logs"), filepath.Join(root, "pods")

	keep := newPod(t, corev1.RestartPolicyAlways, "echo kept; sleep 3600")
	gone := newPod(t, corev1.RestartPolicyAlways, "echo going; sleep 3600")
	for _, p := range []*corev1.Pod{keep, gone} {
		p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
		r.run(p)
		r.waitStatus(p.Name, "Running", 30*time.Second, func(s corev1.PodStatus) bool { return s.Phase == corev1.PodRunning })
	}
	keepLog, goneLog := ns+"_"+keep.Name+"_"+string(keep.UID), ns+"_"+gone.Name+"_"+string(gone.UID)
	if l, p := dirNames(t, logs), dirNames(t, pods); !slices.Contains(l, goneLog) || !slices.Contains(p, string(gone.UID)) {
		t.Fatalf("the running pod has no log or volume folder: logs %v pods %v", l, p)
	}

	// Deleted as the API does it: deletionTimestamp, the edge confirms, then the pod leaves the store.
	now, grace := metav1.Now(), int64(1)
	gone.DeletionTimestamp, gone.DeletionGracePeriodSeconds = &now, &grace
	r.apply(gone)
	r.eventually("deletion confirmed", 30*time.Second, func() bool { return r.deletionDone(gone.Name, gone.UID) })
	r.cloud(message.OpDelete, ns+"/pod/"+gone.Name, gone)
	r.eventually("the removed pod's log and volume folders gone", 30*time.Second, func() bool {
		return !slices.Contains(dirNames(t, logs), goneLog) && !slices.Contains(dirNames(t, pods), string(gone.UID))
	})
	if l, p := dirNames(t, logs), dirNames(t, pods); !slices.Contains(l, keepLog) || !slices.Contains(p, string(keep.UID)) {
		t.Fatalf("the running pod's folders went too: logs %v pods %v", l, p)
	}
	// ...and its worker ended (it used to run on, polling the runtime, for as long as edgecore ran).
	r.eventually("one pod worker left", 30*time.Second, func() bool { return r.gauge("kedge_edged_pods") == 1 })

	// Leftovers of pods removed while edged was not running (and of an edged before this cleanup).
	r.stop()
	stale := []string{filepath.Join(logs, ns+"_old_uid-stale-1", "main"), filepath.Join(pods, "uid-stale-1", "volumes", "v"),
		filepath.Join(logs, "other-ns_old-2_uid-stale-2")}
	for _, d := range stale {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(stale[0], "0.log"), []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	r.eventually("leftover folders swept at start", 30*time.Second, func() bool {
		l, p := dirNames(t, logs), dirNames(t, pods)
		return slices.Equal(l, []string{keepLog}) && slices.Equal(p, []string{string(keep.UID)})
	})
	st := r.waitStatus(keep.Name, "still Running", 30*time.Second, func(s corev1.PodStatus) bool { return s.Phase == corev1.PodRunning })
	if cs := containerStatus(st, "main"); cs.RestartCount != 0 {
		t.Fatalf("the kept pod restarted: %+v", cs)
	}
}

// gauge is the value of a gauge edged exports.
func (r *rig) gauge(name string) float64 {
	r.t.Helper()
	mfs, err := r.mgr.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
