// The shared relist: one ListPodSandbox and one ListContainers per status period for all pods (as
// the kubelet's PLEG relists), instead of every pod's worker polling CRI. A worker is woken only
// when what the runtime holds for its pod changed since the previous relist.

package edged

import (
	"context"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// wrapRuntime, when set (tests only), wraps the CRI runtime client edged uses.
var wrapRuntime func(criv1.RuntimeServiceClient) criv1.RuntimeServiceClient

// relistLoop relists every status period once the pods stored before the start have workers.
func (m *Module) relistLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-m.started:
	}
	seen := map[types.UID]string{}
	t := time.NewTicker(m.StatusPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.relist(ctx, seen)
	}
}

// relist lists edged's sandboxes and containers once and wakes the workers whose pod changed in the
// runtime (a sandbox or container came, went or changed state) since the previous relist. seen holds
// each pod's fingerprint from the previous relist.
func (m *Module) relist(ctx context.Context, seen map[types.UID]string) {
	m.mu.Lock()
	n := len(m.workers)
	m.mu.Unlock()
	if n == 0 {
		clear(seen)
		return
	}
	managed := map[string]string{labelManaged: managedValue}
	sbs, err := m.cri.rt.ListPodSandbox(ctx, &criv1.ListPodSandboxRequest{Filter: &criv1.PodSandboxFilter{LabelSelector: managed}})
	if err != nil {
		m.metrics.relists.WithLabelValues("error").Inc()
		m.log().Warn("relist: cannot list the sandboxes", "err", m.criErr("ListPodSandbox", err))
		return
	}
	cs, err := m.cri.rt.ListContainers(ctx, &criv1.ListContainersRequest{Filter: &criv1.ContainerFilter{LabelSelector: managed}})
	if err != nil {
		m.metrics.relists.WithLabelValues("error").Inc()
		m.log().Warn("relist: cannot list the containers", "err", m.criErr("ListContainers", err))
		return
	}
	m.metrics.relists.WithLabelValues("ok").Inc()
	parts := map[types.UID][]string{}
	for _, sb := range sbs.Items {
		uid := types.UID(sb.Labels[labelPodUID])
		parts[uid] = append(parts[uid], "s"+sb.Id+"="+sb.State.String())
	}
	for _, c := range cs.Containers {
		uid := types.UID(c.Labels[labelPodUID])
		parts[uid] = append(parts[uid], "c"+c.Id+"="+c.State.String())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for uid, w := range m.workers {
		p := parts[uid]
		sort.Strings(p)
		fp := strings.Join(p, ",")
		if old, ok := seen[uid]; !ok || old != fp {
			seen[uid] = fp
			w.poke(false)
		}
	}
	for uid := range seen {
		if _, ok := m.workers[uid]; !ok {
			delete(seen, uid)
		}
	}
}
