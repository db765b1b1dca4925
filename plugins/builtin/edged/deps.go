package edged

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edged/probe"
	"github.com/kedge-io/kedge/plugins/builtin/edged/volume"
	"github.com/kedge-io/kedge/sdk/message"
)

func mkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

// metaSource is volume.Source over metamanager queries.
type metaSource struct{ m *Module }

func (s metaSource) Get(ctx context.Context, typ, namespace, name string) ([]byte, error) {
	raw, err := s.m.query(ctx, message.Resource{Namespace: namespace, Type: typ, Name: name}.Edge())
	var qe *queryError
	// Missing for sure only when the cloud said so; a miss while offline (or with the cloud slow) is
	// unknown, so an optional object is not skipped but the pod is retried once it can be known.
	if errors.As(err, &qe) {
		_, cloud, asked := strings.Cut(qe.reason, "asked the cloud:")
		if asked && strings.Contains(cloud, "not found") || strings.Contains(qe.reason, "no cloud link") { // no cloud: the store is the truth
			return nil, errors.Join(volume.ErrNotFound, err)
		}
	}
	return raw, err
}

// criExec is probe.Execer over CRI ExecSync.
type criExec struct{ m *Module }

// The runtime bounds the command by timeout (whole seconds, from the command's start) and answers
// DeadlineExceeded when it ran past it, as the kubelet reads it; ctx (the probe's, which allows for a
// slow runtime setting up the exec) bounds the call.
func (e criExec) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, []byte, error) {
	secs := int64((timeout + time.Second - 1) / time.Second)
	resp, err := e.m.cri.rt.ExecSync(ctx, &criv1.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: max(secs, 1)})
	if err != nil {
		if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
			return 0, nil, errors.Join(context.DeadlineExceeded, err)
		}
		return 0, nil, err
	}
	return int(resp.ExitCode), append(resp.Stdout, resp.Stderr...), nil
}

// probeState is what the probe results tell a worker (written by the results reader).
type probeState struct {
	mu             sync.Mutex
	livenessFailed map[string]string // container id -> message
	started        map[string]string // container name -> id probes were started for
}

// readProbeResults hands liveness failures and state changes to the pods' workers.
func (m *Module) readProbeResults() {
	for r := range m.probes.Results() {
		m.mu.Lock()
		w := m.workers[r.PodUID]
		m.mu.Unlock()
		if w == nil {
			continue
		}
		if r.Kind == probe.Liveness && !r.Healthy {
			w.probe.mu.Lock()
			w.probe.livenessFailed[r.ContainerID] = r.Message
			w.probe.mu.Unlock()
			w.log.Warn("liveness probe failed; the container will be restarted", "container", r.Container, "message", r.Message)
		} else if !r.Healthy {
			w.log.Info("probe failed", "kind", r.Kind, "container", r.Container, "message", r.Message)
		}
		w.poke(false)
	}
}

func (w *worker) livenessFailed(id string) bool {
	w.probe.mu.Lock()
	defer w.probe.mu.Unlock()
	_, failed := w.probe.livenessFailed[id]
	return failed
}

// syncProbes starts the probes of each running container instance once, and stops those of
// containers that do not run.
func (w *worker) syncProbes(pod *corev1.Pod, byName map[string][]*instance, podIP string) {
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		list := byName[c.Name]
		running := len(list) > 0 && list[0].c.State == criv1.ContainerState_CONTAINER_RUNNING
		w.probe.mu.Lock()
		had := w.probe.started[c.Name]
		w.probe.mu.Unlock()
		switch {
		case running && had != list[0].c.Id:
			if err := w.m.probes.Start(pod.UID, podIP, c, list[0].c.Id); err != nil {
				w.log.Error("probes not started", "container", c.Name, "err", err)
			}
			w.probe.mu.Lock()
			w.probe.started[c.Name] = list[0].c.Id
			delete(w.probe.livenessFailed, had)
			w.probe.mu.Unlock()
		case !running && had != "":
			w.m.probes.Stop(pod.UID, c.Name)
			w.probe.mu.Lock()
			delete(w.probe.started, c.Name)
			delete(w.probe.livenessFailed, had)
			w.probe.mu.Unlock()
		}
	}
}

func (w *worker) forgetProbes(uid types.UID) {
	w.m.probes.StopPod(uid)
	w.probe.mu.Lock()
	w.probe.started = map[string]string{}
	w.probe.livenessFailed = map[string]string{}
	w.probe.mu.Unlock()
}
