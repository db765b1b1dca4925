// A pod's containers: listing the container instances the runtime holds for the pod, init and app
// containers in order, restart back-off, and starting, stopping and removing one container.

package edged

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

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
