// A pod's sandbox: finding, creating, stopping and removing the CRI pod sandboxes of the pod a worker
// reconciles, and the sandbox config made from the pod spec.

package edged

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

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

func readySandbox(sbs []*criv1.PodSandbox) *criv1.PodSandbox {
	for _, sb := range sbs {
		if sb.State == criv1.PodSandboxState_SANDBOX_READY {
			return sb
		}
	}
	return nil
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
