package edged

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
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
// and nothing of it is left.
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

func (w *worker) sandboxes(ctx context.Context) ([]*criv1.PodSandbox, error) {
	resp, err := w.m.cri.rt.ListPodSandbox(ctx, &criv1.ListPodSandboxRequest{Filter: &criv1.PodSandboxFilter{
		LabelSelector: map[string]string{labelManaged: managedValue, labelPodUID: string(w.uid)}}})
	if err != nil {
		return nil, w.m.criErr("ListPodSandbox", err)
	}
	items := resp.Items
	sort.Slice(items, func(i, j int) bool { return items[i].CreatedAt > items[j].CreatedAt })
	return items, nil
}

// instance is one container the runtime holds, newest first per name.
type instance struct {
	c      *criv1.Container
	status *criv1.ContainerStatus // filled for the two newest of each name
}

// restartCount is the instance's restart count, from the kubelet's annotation (older edged versions
// wrote kedge.io/restart-count).
func (i *instance) restartCount() int32 {
	v, ok := i.c.Annotations[annotationRestartCount]
	if !ok {
		v = i.c.Annotations[annotationRestartCountOld]
	}
	n, _ := strconv.Atoi(v)
	return int32(n)
}

// nextRestartCount is the restart count of the next instance of a container: one more than its
// newest instance in any of the pod's sandboxes, so counts keep growing when the sandbox is
// recreated (and across edgecore restarts: the counts are annotations in the runtime).
func nextRestartCount(list []*instance) int32 {
	if len(list) == 0 {
		return 0
	}
	return list[0].restartCount() + 1
}

// containers lists the pod's container instances in all its sandboxes (those of a dead sandbox
// carry the restart counts and last states on), by container name, newest first.
func (w *worker) containers(ctx context.Context) (map[string][]*instance, error) {
	resp, err := w.m.cri.rt.ListContainers(ctx, &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{
		LabelSelector: map[string]string{labelManaged: managedValue, labelPodUID: string(w.uid)}}})
	if err != nil {
		return nil, w.m.criErr("ListContainers", err)
	}
	out := map[string][]*instance{}
	for _, c := range resp.Containers {
		name := c.Labels[labelContainerName]
		out[name] = append(out[name], &instance{c: c})
	}
	for name, list := range out {
		sort.Slice(list, func(i, j int) bool { return list[i].c.CreatedAt > list[j].c.CreatedAt })
		for _, in := range list[:min(2, len(list))] {
			st, err := w.inspect(ctx, in.c.Id)
			if err != nil {
				return nil, err
			}
			in.status = st
		}
		out[name] = list
	}
	return out, nil
}

// inSandbox keeps the instances of one sandbox.
func inSandbox(list []*instance, sandboxID string) []*instance {
	var out []*instance
	for _, in := range list {
		if in.c.PodSandboxId == sandboxID {
			out = append(out, in)
		}
	}
	return out
}

func readySandbox(sbs []*criv1.PodSandbox) *criv1.PodSandbox {
	for _, sb := range sbs {
		if sb.State == criv1.PodSandboxState_SANDBOX_READY {
			return sb
		}
	}
	return nil
}

// exitedFor is whether a container's newest instance exited (with code 0 when zero is set).
func exitedFor(list []*instance, zero bool) bool {
	if len(list) == 0 || list[0].status == nil || list[0].status.State != criv1.ContainerState_CONTAINER_EXITED {
		return false
	}
	return !zero || list[0].status.ExitCode == 0
}

// finished says the pod ended for good: restartPolicy Never and an init container failed or every
// container exited; OnFailure and every container exited 0. An Always pod never finishes.
func finished(pod *corev1.Pod, byName map[string][]*instance) bool {
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		for _, c := range pod.Spec.InitContainers {
			if list := byName[c.Name]; exitedFor(list, false) && list[0].status.ExitCode != 0 {
				return true
			}
		}
		for _, c := range pod.Spec.Containers {
			if !exitedFor(byName[c.Name], false) {
				return false
			}
		}
		return true
	case corev1.RestartPolicyOnFailure:
		for _, c := range pod.Spec.Containers {
			if !exitedFor(byName[c.Name], true) {
				return false
			}
		}
		return true
	}
	return false
}

// mayRunAgain says whether a pod without a ready sandbox gets a new one. Like the kubelet: not when
// it finished, and never for restartPolicy Never once any of its containers was created (a Never
// pod whose sandbox died ends with what its containers did).
func mayRunAgain(pod *corev1.Pod, byName map[string][]*instance) bool {
	if finished(pod, byName) {
		return false
	}
	if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
		for _, list := range byName {
			if len(list) > 0 {
				return false
			}
		}
	}
	return true
}

// stopSandboxes stops (StopPodSandbox: containers killed, network torn down, pause stopped) the
// sandboxes this worker has not stopped yet, keeping them and their containers' records.
func (w *worker) stopSandboxes(ctx context.Context, sbs []*criv1.PodSandbox) {
	for _, sb := range sbs {
		if w.stopped[sb.Id] {
			continue
		}
		if _, err := w.m.cri.rt.StopPodSandbox(ctx, &criv1.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			w.log.Warn("cannot stop the sandbox", "sandbox", sb.Id, "err", w.m.criErr("StopPodSandbox", err))
			continue
		}
		w.stopped[sb.Id] = true
		w.log.Info("sandbox stopped", "sandbox", sb.Id, "state", sb.State.String())
	}
}

// removeOldSandboxes removes the pod's sandboxes other than the current one that hold none of the
// container instances kept.
func (w *worker) removeOldSandboxes(ctx context.Context, sbs []*criv1.PodSandbox, current *criv1.PodSandbox, holding map[string]bool) {
	for _, sb := range sbs {
		if sb.Id == current.Id || sb.State == criv1.PodSandboxState_SANDBOX_READY || holding[sb.Id] {
			continue
		}
		if err := w.m.removeSandbox(ctx, sb.Id, 0); err != nil {
			w.log.Warn("cannot remove an old sandbox", "sandbox", sb.Id, "err", err)
			continue
		}
		delete(w.sandboxIP, sb.Id)
		delete(w.stopped, sb.Id)
		w.log.Info("old sandbox removed", "sandbox", sb.Id)
	}
}

func (w *worker) inspect(ctx context.Context, id string) (*criv1.ContainerStatus, error) {
	if st, ok := w.exited[id]; ok {
		return st, nil
	}
	resp, err := w.m.cri.rt.ContainerStatus(ctx, &criv1.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, w.m.criErr("ContainerStatus", err)
	}
	if resp.Status.State == criv1.ContainerState_CONTAINER_EXITED {
		w.exited[id] = resp.Status
	}
	return resp.Status, nil
}

// prune removes instances older than the two newest of each container (the newest and the one
// before it, whose end is the status's lastState). It returns the sandboxes still holding instances.
func (w *worker) prune(ctx context.Context, byName map[string][]*instance) (holding map[string]bool) {
	holding = map[string]bool{}
	for _, list := range byName {
		for i, in := range list {
			if i < 2 || in.c.State == criv1.ContainerState_CONTAINER_RUNNING {
				holding[in.c.PodSandboxId] = true
				continue
			}
			if _, err := w.m.cri.rt.RemoveContainer(ctx, &criv1.RemoveContainerRequest{ContainerId: in.c.Id}); err != nil {
				w.log.Warn("cannot remove an old container instance", "container", in.c.Id, "err", err)
				holding[in.c.PodSandboxId] = true
				continue
			}
			delete(w.exited, in.c.Id)
		}
	}
	return holding
}

// ensureSandbox returns the pod's ready sandbox, creating one (after removing dead ones) if needed.
func (w *worker) ensureSandbox(ctx context.Context, pod *corev1.Pod, sbs []*criv1.PodSandbox) (*criv1.PodSandbox, error) {
	var attempt uint32
	if sb := readySandbox(sbs); sb != nil {
		return sb, nil
	}
	// Dead sandboxes are stopped (whatever still runs in them is killed) but kept while their
	// containers' records carry the restart counts and last states; removeOldSandboxes removes them
	// once those are pruned.
	for _, sb := range sbs {
		attempt = max(attempt, sb.Metadata.GetAttempt()+1)
	}
	w.stopSandboxes(ctx, sbs)
	for _, sb := range sbs {
		if !w.stopped[sb.Id] {
			return nil, fmt.Errorf("sandbox %s is not ready and cannot be stopped", sb.Id)
		}
	}
	cfg := w.sandboxConfig(pod, attempt)
	if err := w.m.ensureDir(cfg.LogDirectory); err != nil {
		return nil, err
	}
	resp, err := w.m.cri.rt.RunPodSandbox(ctx, &criv1.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		// A failed RunPodSandbox can leave a NotReady sandbox holding the name; the next round
		// removes it and retries with the next attempt.
		return nil, w.m.criErr("RunPodSandbox", err)
	}
	w.log.Info("sandbox started", "sandbox", resp.PodSandboxId, "attempt", attempt)
	sbs, err = w.sandboxes(ctx)
	if err != nil {
		return nil, err
	}
	for _, sb := range sbs {
		if sb.Id == resp.PodSandboxId {
			return sb, nil
		}
	}
	return nil, fmt.Errorf("sandbox %s is not listed after RunPodSandbox", resp.PodSandboxId)
}

func (m *Module) podLogDir(pod *corev1.Pod) string {
	return filepath.Join(m.RootDir, "logs", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
}

func (w *worker) sandboxConfig(pod *corev1.Pod, attempt uint32) *criv1.PodSandboxConfig {
	hostname := ""
	if !pod.Spec.HostNetwork {
		hostname = pod.Name
		if pod.Spec.Hostname != "" {
			hostname = pod.Spec.Hostname
		}
	}
	privileged := false
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.SecurityContext != nil && isTrue(c.SecurityContext.Privileged) {
			privileged = true
		}
	}
	return &criv1.PodSandboxConfig{
		Metadata:     &criv1.PodSandboxMetadata{Name: pod.Name, Namespace: pod.Namespace, Uid: string(pod.UID), Attempt: attempt},
		Hostname:     hostname,
		LogDirectory: w.m.podLogDir(pod),
		PortMappings: portMappings(pod),
		Labels: map[string]string{labelManaged: managedValue, labelNode: w.m.host.NodeName(), labelPodUID: string(pod.UID),
			labelPodName: pod.Name, labelPodNamespace: pod.Namespace},
		Annotations: map[string]string{annotationGrace: strconv.FormatInt(gracePeriod(pod), 10)},
		Linux: &criv1.LinuxPodSandboxConfig{
			CgroupParent: w.m.CgroupParent,
			SecurityContext: &criv1.LinuxSandboxSecurityContext{
				NamespaceOptions: namespaceOptions(pod),
				Privileged:       privileged,
			},
		},
	}
}

func (m *Module) ensureDir(dir string) error {
	if err := mkdirAll(dir); err != nil {
		return fmt.Errorf("log directory %s: %w", dir, err)
	}
	return nil
}

// gracePeriod is how long the pod's containers get to stop: the deletion's grace period, else the
// spec's terminationGracePeriodSeconds, else 30 s.
func gracePeriod(pod *corev1.Pod) int64 {
	if pod == nil {
		return 2
	}
	if pod.DeletionGracePeriodSeconds != nil {
		return *pod.DeletionGracePeriodSeconds
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return *pod.Spec.TerminationGracePeriodSeconds
	}
	return 30
}

// runEnv is what the downward API reads about where the pod runs.
func (w *worker) runEnv(ctx context.Context, pod *corev1.Pod, sb *criv1.PodSandbox) podEnv {
	pe := podEnv{nodeName: w.m.host.NodeName(), hostIP: w.m.nodeIP}
	if pod.Spec.HostNetwork {
		pe.podIP = w.m.nodeIP
		return pe
	}
	if ip, ok := w.sandboxIP[sb.Id]; ok {
		pe.podIP = ip
		return pe
	}
	resp, err := w.m.cri.rt.PodSandboxStatus(ctx, &criv1.PodSandboxStatusRequest{PodSandboxId: sb.Id})
	if err != nil {
		w.log.Warn("PodSandboxStatus failed", "err", err)
		return pe
	}
	pe.podIP = resp.Status.GetNetwork().GetIp()
	if pe.podIP != "" {
		w.sandboxIP[sb.Id] = pe.podIP
	}
	return pe
}

// object implements envSource over metamanager.
func (w *worker) object(ctx context.Context, typ, namespace, name string) (json.RawMessage, error) {
	return w.m.query(ctx, message.Resource{Namespace: namespace, Type: typ, Name: name}.Edge())
}

// syncInit runs init containers one after the other; done says all of them succeeded.
func (w *worker) syncInit(ctx context.Context, pod *corev1.Pod, sb *criv1.PodSandbox, byName map[string][]*instance, paths map[string]string, env podEnv) (done bool, wakeAt time.Time) {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		// Init containers run again in a new sandbox; their restart counts go on from the old one.
		list := inSandbox(byName[c.Name], sb.Id)
		if len(list) == 0 {
			return false, w.startContainer(ctx, pod, sb, c, true, nextRestartCount(byName[c.Name]), paths, env)
		}
		latest := list[0]
		switch latest.c.State {
		case criv1.ContainerState_CONTAINER_RUNNING:
			return false, time.Time{}
		case criv1.ContainerState_CONTAINER_EXITED:
			if latest.status.ExitCode == 0 {
				continue
			}
			if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				return false, time.Time{} // the pod failed
			}
			if until := w.crashBackoff(c.Name, latest.status); time.Now().Before(until) {
				return false, until
			}
		default: // created but never started, or unknown: start over
			w.removeContainer(ctx, latest.c.Id)
		}
		return false, w.startContainer(ctx, pod, sb, c, true, nextRestartCount(byName[c.Name]), paths, env)
	}
	return true, time.Time{}
}

// syncContainers starts what is missing, restarts what exited (per restartPolicy, with back-off)
// and what runs an outdated spec or failed its liveness probe.
func (w *worker) syncContainers(ctx context.Context, pod *corev1.Pod, sb *criv1.PodSandbox, byName map[string][]*instance, paths map[string]string, env podEnv) (wakeAt time.Time) {
	earliest := func(t time.Time) {
		if !t.IsZero() && (wakeAt.IsZero() || t.Before(wakeAt)) {
			wakeAt = t
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		list := byName[c.Name]
		if len(list) == 0 {
			earliest(w.startContainer(ctx, pod, sb, c, false, 0, paths, env))
			continue
		}
		latest := list[0]
		if latest.c.PodSandboxId != sb.Id && latest.c.State == criv1.ContainerState_CONTAINER_RUNNING {
			// Left running in a sandbox that died: it cannot stay (its namespaces are gone).
			w.log.Info("stopping a container of an old sandbox", "container", c.Name, "id", latest.c.Id)
			w.stopContainer(ctx, pod, c, latest.c.Id, gracePeriod(pod))
			earliest(time.Now())
			continue
		}
		switch latest.c.State {
		case criv1.ContainerState_CONTAINER_RUNNING:
			why := ""
			if latest.c.Annotations[annotationHash] != specHash(c) {
				why = "its spec changed"
			} else if w.livenessFailed(latest.c.Id) {
				why = "it failed its liveness probe"
			}
			if why == "" {
				delete(w.waiting, c.Name)
				continue
			}
			w.log.Info("restarting container: "+why, "container", c.Name, "id", latest.c.Id)
			w.stopContainer(ctx, pod, c, latest.c.Id, gracePeriod(pod))
			earliest(time.Now()) // seen exited on the next round, restarted per policy
		case criv1.ContainerState_CONTAINER_EXITED:
			st := latest.status
			restart := pod.Spec.RestartPolicy == corev1.RestartPolicyAlways || pod.Spec.RestartPolicy == "" ||
				(pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && st.ExitCode != 0)
			if !restart {
				delete(w.waiting, c.Name)
				continue
			}
			until := w.crashBackoff(c.Name, st)
			if time.Now().Before(until) {
				b := w.crash[c.Name]
				w.waiting[c.Name] = waitState{"CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
					b.delay, c.Name, pod.Name, pod.Namespace, pod.UID)}
				earliest(until)
				continue
			}
			earliest(w.startContainer(ctx, pod, sb, c, false, nextRestartCount(list), paths, env))
		default:
			w.removeContainer(ctx, latest.c.Id)
			earliest(w.startContainer(ctx, pod, sb, c, false, nextRestartCount(list), paths, env))
		}
	}
	return wakeAt
}

// crashBackoff is when a container whose newest instance ended as st may start again: base delay
// after the first exit, doubled after each further one, back to base after a long enough run.
func (w *worker) crashBackoff(name string, st *criv1.ContainerStatus) time.Time {
	finished, started := nanoTime(st.FinishedAt), nanoTime(st.StartedAt)
	b := w.crash[name]
	if b != nil && b.forFinish.Equal(finished) {
		return b.until
	}
	d := w.m.Backoff.Base
	if b != nil && finished.Sub(started) < w.m.Backoff.ResetAfter {
		d = min(b.delay*2, w.m.Backoff.Max)
	}
	w.crash[name] = &backoff{delay: d, forFinish: finished, until: finished.Add(d)}
	return finished.Add(d)
}

func (w *worker) removeContainer(ctx context.Context, id string) {
	if _, err := w.m.cri.rt.RemoveContainer(ctx, &criv1.RemoveContainerRequest{ContainerId: id}); err != nil {
		w.log.Warn("RemoveContainer failed", "container", id, "err", err)
	}
	delete(w.exited, id)
}

// startContainer creates and starts one container; a zero time means done (or failed without a
// retry time), else the time to try again.
func (w *worker) startContainer(ctx context.Context, pod *corev1.Pod, sb *criv1.PodSandbox, c *corev1.Container, isInit bool, restartCount int32, paths map[string]string, pe podEnv) time.Time {
	imageRef, wait, retry := w.ensureImage(ctx, c)
	if wait != nil {
		w.waiting[c.Name] = *wait
		return retry
	}
	cfg, err := w.containerConfig(ctx, pod, c, isInit, restartCount, paths, pe, imageRef)
	if err != nil {
		reason := "CreateContainerConfigError"
		var ce *configError
		if !errors.As(err, &ce) {
			reason = "CreateContainerError"
		}
		w.waiting[c.Name] = waitState{reason, err.Error()}
		w.log.Warn("cannot configure container", "container", c.Name, "reason", reason, "err", err)
		return time.Now().Add(w.m.Backoff.Base)
	}
	start := time.Now()
	created, err := w.m.cri.rt.CreateContainer(ctx, &criv1.CreateContainerRequest{PodSandboxId: sb.Id, Config: cfg,
		SandboxConfig: w.sandboxConfig(pod, sb.Metadata.GetAttempt())})
	if err != nil {
		w.waiting[c.Name] = waitState{"CreateContainerError", w.m.criErr("CreateContainer", err).Error()}
		w.log.Warn("cannot create container", "container", c.Name, "err", err)
		return time.Now().Add(w.m.Backoff.Base)
	}
	if _, err := w.m.cri.rt.StartContainer(ctx, &criv1.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		// The instance stays (exited or created); it is restarted per policy with back-off.
		w.waiting[c.Name] = waitState{"RunContainerError", w.m.criErr("StartContainer", err).Error()}
		w.log.Warn("cannot start container", "container", c.Name, "err", err)
		return time.Now().Add(w.m.Backoff.Base)
	}
	w.m.metrics.containerStart.Observe(time.Since(start).Seconds())
	w.m.metrics.starts.Inc()
	delete(w.waiting, c.Name)
	w.log.Info("container started", "container", c.Name, "id", created.ContainerId, "restartCount", restartCount)
	if h := c.Lifecycle; h != nil && h.PostStart != nil && h.PostStart.Exec != nil {
		if out, err := w.m.cri.rt.ExecSync(ctx, &criv1.ExecSyncRequest{ContainerId: created.ContainerId, Cmd: h.PostStart.Exec.Command, Timeout: 30}); err != nil || out.ExitCode != 0 {
			w.log.Warn("postStart hook failed; killing the container (FailedPostStartHook)", "container", c.Name, "err", err, "exitCode", out.GetExitCode())
			w.stopContainer(ctx, pod, c, created.ContainerId, 0)
		}
	}
	return time.Time{}
}

func (w *worker) containerConfig(ctx context.Context, pod *corev1.Pod, c *corev1.Container, isInit bool, restartCount int32, paths map[string]string, pe podEnv, imageRef string) (*criv1.ContainerConfig, error) {
	envs, vars, err := containerEnv(ctx, w, pod, c, pe)
	if err != nil {
		return nil, err
	}
	res, err := linuxResources(c)
	if err != nil {
		return nil, err
	}
	mounts, err := w.m.volumes.Mounts(pod, c, paths)
	if err != nil {
		return nil, &configError{err.Error()}
	}
	labels := map[string]string{labelManaged: managedValue, labelNode: w.m.host.NodeName(), labelPodUID: string(pod.UID), labelPodName: pod.Name,
		labelPodNamespace: pod.Namespace, labelContainerName: c.Name}
	if isInit {
		labels[labelInit] = "true"
	}
	return &criv1.ContainerConfig{
		Metadata:    &criv1.ContainerMetadata{Name: c.Name, Attempt: uint32(restartCount)},
		Image:       &criv1.ImageSpec{Image: imageRef, UserSpecifiedImage: c.Image},
		Command:     expandAll(c.Command, vars),
		Args:        expandAll(c.Args, vars),
		WorkingDir:  c.WorkingDir,
		Envs:        envs,
		Mounts:      mounts,
		Labels:      labels,
		Annotations: map[string]string{annotationHash: specHash(c), annotationRestartCount: strconv.Itoa(int(restartCount))},
		LogPath:     filepath.Join(c.Name, strconv.Itoa(int(restartCount))+".log"),
		Stdin:       c.Stdin, StdinOnce: c.StdinOnce, Tty: c.TTY,
		Linux: &criv1.LinuxContainerConfig{Resources: res, SecurityContext: securityContext(pod, c)},
	}, nil
}

// stopContainer runs the preStop exec hook, then stops the container with what is left of grace.
func (w *worker) stopContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string, grace int64) {
	start := time.Now()
	if c != nil && c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Exec != nil && grace > 0 {
		out, err := w.m.cri.rt.ExecSync(ctx, &criv1.ExecSyncRequest{ContainerId: id, Cmd: c.Lifecycle.PreStop.Exec.Command, Timeout: grace})
		if err != nil || out.ExitCode != 0 {
			w.log.Warn("preStop hook failed (FailedPreStopHook)", "container", c.Name, "err", err, "exitCode", out.GetExitCode(), "stderr", string(out.GetStderr()))
		}
	}
	left := grace - int64(time.Since(start).Seconds())
	if grace > 0 {
		left = max(left, 2) // like the kubelet: a hook that used up the grace still leaves 2 s
	}
	if _, err := w.m.cri.rt.StopContainer(ctx, &criv1.StopContainerRequest{ContainerId: id, Timeout: left}); err != nil {
		w.log.Warn("StopContainer failed", "container", id, "err", w.m.criErr("StopContainer", err))
	}
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
