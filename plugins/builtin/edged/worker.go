// A pod's worker: one goroutine per pod uid that reconciles the pod with the runtime (the loop, one
// sync pass, termination); the sandbox is in sandbox.go, the containers in containers.go.

package edged

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

// worker reconciles one pod (one uid). Its desired state is set under Module.mu; everything else is
// owned by its goroutine.
type worker struct {
	m         *Module
	uid       types.UID
	namespace string
	log       *slog.Logger

	// Guarded by m.mu.
	pod     *corev1.Pod
	removed bool

	wake    chan struct{}
	refresh atomic.Bool // objects a volume or env reads changed

	lastRefresh  time.Time
	lastSent     []byte
	lastStatus   *corev1.PodStatus
	crash        map[string]*backoff // container name -> restart back-off
	pulls        map[string]*backoff // image -> pull back-off
	waiting      map[string]waitState
	podProblem   *waitState                        // the pod cannot run at all (invalid spec, sandbox, volumes)
	exited       map[string]*criv1.ContainerStatus // exited instances never change: cached by id
	sandboxIP    map[string]string
	stopped      map[string]bool // sandboxes this worker stopped (StopPodSandbox done)
	deletionSent bool
	confirmed    bool // the deletion is confirmed and nothing of the pod is left: the worker may end
	invalidSeen  string
	probe        probeState
}

type waitState struct{ reason, message string }

type backoff struct {
	delay     time.Duration
	forFinish time.Time // the exit this delay was computed for
	until     time.Time
	lastErr   string
}

func newWorker(m *Module, pod *corev1.Pod) *worker {
	return &worker{
		m: m, uid: pod.UID, namespace: pod.Namespace,
		log:     m.log().With("pod", pod.Namespace+"/"+pod.Name, "uid", string(pod.UID)),
		wake:    make(chan struct{}, 1),
		crash:   map[string]*backoff{},
		pulls:   map[string]*backoff{},
		waiting: map[string]waitState{},
		exited:  map[string]*criv1.ContainerStatus{}, sandboxIP: map[string]string{}, stopped: map[string]bool{},
		probe: probeState{livenessFailed: map[string]string{}, started: map[string]string{}},
	}
}

func (w *worker) poke(refresh bool) {
	if refresh {
		w.refresh.Store(true)
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) run(ctx context.Context) {
	for {
		w.m.mu.Lock()
		pod, removed := w.pod, w.removed
		w.m.mu.Unlock()
		next, done := w.sync(ctx, pod, removed)
		if done && w.m.forget(w) {
			return
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// sync does one round of reconciliation and says when the next is due; done means the pod is gone
// and nothing of it is left. A failed round is retried after statusPeriod; otherwise the worker
// sleeps until the shared relist sees its pod change in the runtime (or another wake: a probe result,
// a new desired state, a stored object its volumes read, a back-off's end, syncPeriod).
func (w *worker) sync(ctx context.Context, pod *corev1.Pod, removed bool) (next time.Duration, done bool) {
	next = w.m.StatusPeriod
	sbs, err := w.sandboxes(ctx)
	if err != nil {
		w.fail("list sandboxes", err)
		return next, false
	}
	if removed {
		if err := w.terminate(ctx, pod, sbs); err != nil {
			w.fail("remove the pod's sandboxes", err)
			return next, false
		}
		w.forgetProbes(w.uid)
		if err := w.m.volumes.Cleanup(w.uid); err != nil {
			w.log.Warn("volume cleanup failed", "err", err)
		}
		if err := w.m.removePodLogs(w.uid); err != nil {
			w.log.Warn("log folder cleanup failed", "err", err)
		}
		w.log.Info("pod removed")
		return 0, true
	}
	if pod.DeletionTimestamp != nil {
		if len(sbs) > 0 {
			if err := w.stopAll(ctx, pod, sbs); err != nil {
				w.fail("stop the pod", err)
				return next, false
			}
			w.finalStatus(ctx, pod, sbs[0])
		}
		if err := w.terminate(ctx, pod, sbs); err != nil {
			w.fail("stop the pod", err)
			return next, false
		}
		w.forgetProbes(w.uid)
		if err := w.m.volumes.Cleanup(w.uid); err != nil {
			w.log.Warn("volume cleanup failed", "err", err)
		}
		if !w.deletionSent {
			r := message.Resource{Namespace: pod.Namespace, Type: "pod", Name: pod.Name}
			if err := w.m.send(ctx, message.OpDelete, r.Edge(), map[string]types.UID{"uid": pod.UID}); err != nil {
				w.fail("confirm the deletion", err)
				return next, false
			}
			w.deletionSent = true
			w.log.Info("pod stopped; deletion confirmed")
		}
		// The confirmation took the pod out of the edge's store (metamanager deletes it on its way
		// up), so no removal follows from the cloud: the pod is done here, and so is its log folder.
		if err := w.m.removePodLogs(w.uid); err != nil {
			w.log.Warn("log folder cleanup failed", "err", err)
			return w.m.SyncPeriod, false
		}
		w.confirmed = true
		return 0, true
	}
	w.m.metrics.syncs.WithLabelValues("ok").Inc()
	if err := validatePod(pod); err != nil {
		if msg := err.Error(); msg != w.invalidSeen {
			w.invalidSeen = msg
			w.log.Error("invalid pod spec; not running it", "err", err)
		}
		w.podProblem = &waitState{"InvalidPodSpec", err.Error()}
		w.report(ctx, pod, nil, nil)
		return w.m.SyncPeriod, false
	}
	w.podProblem = nil
	if readySandbox(sbs) == nil && len(sbs) > 0 {
		byName, err := w.containers(ctx)
		if err != nil {
			w.fail("list containers", err)
			return next, false
		}
		if !mayRunAgain(pod, byName) {
			// The pod has run and will not run again: its sandboxes stay stopped, its containers'
			// records stay (status, logs) until the pod is deleted.
			w.stopSandboxes(ctx, sbs)
			w.forgetProbes(w.uid)
			w.report(ctx, pod, sbs[0], byName)
			return w.m.SyncPeriod, false
		}
	}
	sb, err := w.ensureSandbox(ctx, pod, sbs)
	if err != nil {
		w.podProblem = &waitState{"SandboxCreationFailed", err.Error()}
		w.fail("create the sandbox", err)
		w.report(ctx, pod, nil, nil)
		return w.m.Backoff.Base, false
	}
	if w.refresh.Swap(false) || time.Since(w.lastRefresh) >= w.m.SyncPeriod {
		w.lastRefresh = time.Now()
		if err := w.m.volumes.Refresh(ctx, pod); err != nil {
			w.log.Warn("refreshing volumes failed", "err", err)
		}
	}
	paths, err := w.m.volumes.Setup(ctx, pod)
	if err != nil {
		w.podProblem = &waitState{"FailedMount", err.Error()}
		w.log.Warn("volumes not ready", "err", err)
		w.report(ctx, pod, sb, nil)
		return w.m.Backoff.Base, false
	}
	byName, err := w.containers(ctx)
	if err != nil {
		w.fail("list containers", err)
		return next, false
	}
	env := w.runEnv(ctx, pod, sb)
	initDone, wakeAt := w.syncInit(ctx, pod, sb, byName, paths, env)
	if initDone {
		if t := w.syncContainers(ctx, pod, sb, byName, paths, env); !t.IsZero() && (wakeAt.IsZero() || t.Before(wakeAt)) {
			wakeAt = t
		}
	}
	if byName, err = w.containers(ctx); err != nil {
		w.fail("list containers", err)
		return next, false
	}
	w.removeOldSandboxes(ctx, sbs, sb, w.prune(ctx, byName))
	w.syncProbes(pod, byName, env.podIP)
	w.report(ctx, pod, sb, byName)
	if finished(pod, byName) {
		// Like the kubelet: a pod that ended for good gives back its network and pause container;
		// its containers stay (exited) for the status and the logs until the pod is deleted.
		w.forgetProbes(w.uid)
		w.stopSandboxes(ctx, []*criv1.PodSandbox{sb})
		return w.m.SyncPeriod, false
	}
	// Nothing more to do until the runtime changes (the shared relist wakes the worker, see
	// relist.go), a probe result or a stored change arrives, a back-off ends or the volumes are due.
	next = w.m.SyncPeriod
	if !wakeAt.IsZero() {
		if d := time.Until(wakeAt); d < next {
			next = max(d, time.Millisecond)
		}
	}
	return next, false
}

func (w *worker) fail(what string, err error) {
	w.m.metrics.syncs.WithLabelValues("error").Inc()
	w.log.Warn("pod sync: cannot "+what, "err", err)
}

// stopAll stops every running container of the pod at once (preStop hooks, then the grace period).
func (w *worker) stopAll(ctx context.Context, pod *corev1.Pod, sbs []*criv1.PodSandbox) error {
	grace := gracePeriod(pod)
	if pod == nil && len(sbs) > 0 {
		if g, err := strconv.ParseInt(sbs[0].Annotations[annotationGrace], 10, 64); err == nil {
			grace = g
		}
	}
	specs := map[string]*corev1.Container{}
	if pod != nil {
		for i := range pod.Spec.Containers {
			specs[pod.Spec.Containers[i].Name] = &pod.Spec.Containers[i]
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, sb := range sbs {
		resp, err := w.m.cri.rt.ListContainers(ctx, &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{PodSandboxId: sb.Id}})
		if err != nil {
			return w.m.criErr("ListContainers", err)
		}
		for _, c := range resp.Containers {
			if c.State != criv1.ContainerState_CONTAINER_RUNNING {
				continue
			}
			spec := specs[c.Labels[labelContainerName]]
			wg.Go(func() { w.stopContainer(ctx, pod, spec, c.Id, grace) })
		}
	}
	return nil
}

// finalStatus reports, before the deletion is confirmed, how the containers of a pod being deleted
// ended (terminated, with exit codes and reasons), as the kubelet does.
func (w *worker) finalStatus(ctx context.Context, pod *corev1.Pod, sb *criv1.PodSandbox) {
	byName, err := w.containers(ctx)
	if err != nil {
		w.log.Warn("no final status: cannot list the containers", "err", err)
		return
	}
	w.waiting, w.podProblem = map[string]waitState{}, nil // nothing waits to start any more
	w.report(ctx, pod, sb, byName)
}

// terminate stops every container of the pod in parallel (preStop hooks, then the grace period)
// and removes its sandboxes.
func (w *worker) terminate(ctx context.Context, pod *corev1.Pod, sbs []*criv1.PodSandbox) error {
	if len(sbs) == 0 {
		return nil
	}
	if err := w.stopAll(ctx, pod, sbs); err != nil {
		return err
	}
	for _, sb := range sbs {
		if err := w.m.removeSandbox(ctx, sb.Id, 0); err != nil {
			return err
		}
		delete(w.sandboxIP, sb.Id)
		delete(w.stopped, sb.Id)
		w.log.Info("sandbox removed", "sandbox", sb.Id)
	}
	w.exited = map[string]*criv1.ContainerStatus{}
	return nil
}
