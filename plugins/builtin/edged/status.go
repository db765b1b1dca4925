package edged

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

// report computes the pod's status from what CRI holds and sends it upstream when it changed.
func (w *worker) report(ctx context.Context, pod *corev1.Pod, sb *criv1.PodSandbox, byName map[string][]*instance) {
	st := w.status(pod, sb, byName)
	w.keepTransitionTimes(&st)
	b, err := json.Marshal(st)
	if err != nil {
		w.log.Error("status does not encode", "err", err)
		return
	}
	if bytes.Equal(b, w.lastSent) {
		return
	}
	r := message.Resource{Namespace: pod.Namespace, Type: "podstatus", Name: pod.Name}
	if err := w.m.send(ctx, message.OpUpdate, r.Edge(), map[string]any{"uid": pod.UID, "name": pod.Name, "status": json.RawMessage(b)}); err != nil {
		w.log.Warn("cannot send the pod status", "err", err)
		return
	}
	w.m.metrics.statusSent.Inc()
	w.lastSent, w.lastStatus = b, &st
	w.log.Debug("status sent", "phase", st.Phase, "reason", st.Reason)
}

// keepTransitionTimes keeps a condition's lastTransitionTime while its status stays the same.
func (w *worker) keepTransitionTimes(st *corev1.PodStatus) {
	if w.lastStatus == nil {
		return
	}
	for i := range st.Conditions {
		for _, old := range w.lastStatus.Conditions {
			if old.Type == st.Conditions[i].Type && old.Status == st.Conditions[i].Status {
				st.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	if st.StartTime == nil {
		st.StartTime = w.lastStatus.StartTime
	}
}

// status is the PodStatus Kubernetes expects, from the runtime's view of the pod.
func (w *worker) status(pod *corev1.Pod, sb *criv1.PodSandbox, byName map[string][]*instance) corev1.PodStatus {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	st := corev1.PodStatus{HostIP: w.m.nodeIP, QOSClass: qosClass(pod)}
	if st.HostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: st.HostIP}}
	}
	if pod.Status.StartTime != nil {
		st.StartTime = pod.Status.StartTime
	} else if sb != nil {
		t := metav1.NewTime(nanoTime(sb.CreatedAt).Truncate(time.Second))
		st.StartTime = &t
	}
	if sb != nil {
		if pod.Spec.HostNetwork {
			st.PodIP = w.m.nodeIP
		} else {
			st.PodIP = w.sandboxIP[sb.Id]
		}
		if st.PodIP != "" {
			st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
		}
	}
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: reason, Message: msg}
		if ok {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "", ""
		}
		return c
	}
	if w.podProblem != nil {
		st.Phase, st.Reason, st.Message = corev1.PodPending, w.podProblem.reason, w.podProblem.message
		for _, c := range pod.Spec.InitContainers {
			st.InitContainerStatuses = append(st.InitContainerStatuses, waitingStatus(c, w.podProblem.reason, w.podProblem.message))
		}
		for _, c := range pod.Spec.Containers {
			st.ContainerStatuses = append(st.ContainerStatuses, waitingStatus(c, w.podProblem.reason, w.podProblem.message))
		}
		st.Conditions = []corev1.PodCondition{
			cond(corev1.PodScheduled, true, "", ""),
			cond(corev1.PodInitialized, len(pod.Spec.InitContainers) == 0, w.podProblem.reason, w.podProblem.message),
			cond(corev1.ContainersReady, false, w.podProblem.reason, w.podProblem.message),
			cond(corev1.PodReady, false, w.podProblem.reason, w.podProblem.message),
		}
		return st
	}

	// Init containers.
	initDone, initFailed := true, false
	for _, c := range pod.Spec.InitContainers {
		cs := w.containerStatus(c, byName[c.Name], "PodInitializing")
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
		if t := cs.State.Terminated; t != nil && t.ExitCode == 0 {
			continue
		}
		initDone = false
		if t := cs.State.Terminated; t != nil && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			initFailed = true
		}
	}
	// Containers.
	var pending, running, succeeded, failed int
	var unready []string
	for _, c := range pod.Spec.Containers {
		waitReason := "ContainerCreating"
		if !initDone {
			waitReason = "PodInitializing"
		}
		cs := w.containerStatus(c, byName[c.Name], waitReason)
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		if !cs.Ready {
			unready = append(unready, c.Name)
		}
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			} else {
				failed++
			}
		case cs.LastTerminationState.Terminated != nil:
			running++ // waiting to be restarted
		default:
			pending++
		}
	}
	switch {
	case initFailed:
		st.Phase = corev1.PodFailed
	case !initDone || pending > 0:
		st.Phase = corev1.PodPending
	case running > 0:
		st.Phase = corev1.PodRunning
	case failed > 0:
		st.Phase = corev1.PodFailed
	default:
		st.Phase = corev1.PodSucceeded
	}
	var initMsg string
	if !initDone {
		var names []string
		for _, cs := range st.InitContainerStatuses {
			if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
				names = append(names, cs.Name)
			}
		}
		initMsg = fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(names, " "))
	}
	readyMsg := fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	allReady := len(unready) == 0
	notReadyReason := "ContainersNotReady"
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		allReady, notReadyReason, readyMsg = false, "PodCompleted", ""
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true, "", ""),
		cond(corev1.PodInitialized, initDone, "ContainersNotInitialized", initMsg),
		cond(corev1.ContainersReady, allReady, notReadyReason, readyMsg),
		cond(corev1.PodReady, allReady, notReadyReason, readyMsg),
	}
	return st
}

func waitingStatus(c corev1.Container, reason, msg string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: c.Name, Image: c.Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
}

// containerStatus describes a container from its newest instances (newest first).
func (w *worker) containerStatus(c corev1.Container, list []*instance, waitReason string) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
	f := false
	cs.Started = &f
	if len(list) == 0 || list[0].status == nil {
		ws := waitState{reason: waitReason}
		if wt, ok := w.waiting[c.Name]; ok {
			ws = wt
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: ws.reason, Message: ws.message}
		return cs
	}
	latest := list[0]
	s := latest.status
	cs.RestartCount = latest.restartCount()
	cs.ContainerID = "containerd://" + s.Id
	if s.ImageRef != "" {
		cs.ImageID = s.ImageRef
	}
	switch s.State {
	case criv1.ContainerState_CONTAINER_RUNNING:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(nanoTime(s.StartedAt).Truncate(time.Second))}
		started := w.m.probes.Started(w.uid, c.Name)
		cs.Started = &started
		cs.Ready = started && w.m.probes.Ready(w.uid, c.Name)
		if len(list) > 1 && list[1].status != nil && list[1].status.State == criv1.ContainerState_CONTAINER_EXITED {
			cs.LastTerminationState.Terminated = terminated(list[1].status)
		}
	case criv1.ContainerState_CONTAINER_EXITED:
		if wt, ok := w.waiting[c.Name]; ok {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: wt.reason, Message: wt.message}
			cs.LastTerminationState.Terminated = terminated(s)
		} else {
			cs.State.Terminated = terminated(s)
			if len(list) > 1 && list[1].status != nil && list[1].status.State == criv1.ContainerState_CONTAINER_EXITED {
				cs.LastTerminationState.Terminated = terminated(list[1].status)
			}
		}
	default:
		ws := waitState{reason: waitReason}
		if wt, ok := w.waiting[c.Name]; ok {
			ws = wt
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: ws.reason, Message: ws.message}
	}
	return cs
}

func terminated(s *criv1.ContainerStatus) *corev1.ContainerStateTerminated {
	reason := s.Reason
	if reason == "" {
		reason = "Error"
		if s.ExitCode == 0 {
			reason = "Completed"
		}
	}
	return &corev1.ContainerStateTerminated{
		ExitCode:    s.ExitCode,
		Reason:      reason,
		Message:     s.Message,
		StartedAt:   metav1.NewTime(nanoTime(s.StartedAt).Truncate(time.Second)),
		FinishedAt:  metav1.NewTime(nanoTime(s.FinishedAt).Truncate(time.Second)),
		ContainerID: "containerd://" + s.Id,
	}
}

// qosClass: BestEffort without any request or limit, Guaranteed when every container's cpu and
// memory limits equal its requests, else Burstable.
func qosClass(pod *corev1.Pod) corev1.PodQOSClass {
	any, guaranteed := false, true
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			any = true
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			lim, ok := c.Resources.Limits[r]
			if !ok {
				guaranteed = false
				continue
			}
			if req, ok := c.Resources.Requests[r]; ok && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}
