// Package edged is the edge's lightweight kubelet: it runs the pods bound to this node on a container
// runtime through CRI (containerd + runc), and reports their status upstream.
//
// Desired state comes from metamanager (every pod, configmap and secret the cloud sent, stored in
// SQLite before edged hears of it); actual state is read from CRI, using the labels edged puts on
// every sandbox and container. A worker goroutine per pod reconciles the two, so an edgecore restart
// adopts what is running instead of recreating it.
package edged

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edged/probe"
	"github.com/kedge-io/kedge/plugins/builtin/edged/volume"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address.
const Name = "edged"

func init() {
	sdk.Register(sdk.Info{
		Name:     Name,
		Group:    "pods",
		Doc:      "Runs this node's pods on a container runtime over CRI (containerd) and reports their status; set metamanager's consumers for pods to edged.",
		Requires: []string{sdk.DefaultMetaManager},
		Enabled:  false,
		New:      func() sdk.Module { return New() },
	})
}

// Module is Edged; its exported fields are its settings.
type Module struct {
	CRIEndpoint     string `yaml:"criEndpoint" doc:"CRI runtime and image service: unix:///path/to/containerd.sock (or a bare socket path)."`
	RootDir         string `yaml:"rootDir" doc:"Edged's directory: pods/<uid>/volumes/<name> hold pod volumes, logs/ the container logs CRI writes."`
	PodSandboxImage string `yaml:"podSandboxImage" doc:"Image of the pod sandbox (pause) container: containerd's sandbox_image (CRI has no field for it); edged checks at start that it is present and warns if not."`
	CgroupParent    string `yaml:"cgroupParent" doc:"Cgroup parent of pod sandboxes; empty lets the runtime choose."`
	NodeIP          string `yaml:"nodeIP" doc:"The node's IP for status.hostIP and host-network pods' podIP; empty picks the first non-loopback IPv4 address."`
	MetaManager     string `yaml:"metaManager" doc:"Module that stores objects and carries status to the cloud; pods, configmaps and secrets are read from it."`

	SyncPeriod   time.Duration `yaml:"syncPeriod" doc:"Every pod's configMap/secret/projected volume files are re-read from the store at least this often (a change notified by metamanager refreshes them at once)."`
	StatusPeriod time.Duration `yaml:"statusPeriod" doc:"How often the runtime is relisted (one ListPodSandbox + one ListContainers for all pods) to detect exits and changes; only the pods that changed are synced, and status goes upstream only when it changed. A failed sync is retried after this period."`
	QueryTimeout time.Duration `yaml:"queryTimeout" doc:"Bound on one query to metamanager (a ConfigMap or Secret a container's env refers to)."`

	// ProbeTimeUnit is how long one "second" of a probe spec lasts; tests shorten it.
	ProbeTimeUnit time.Duration `yaml:"probeTimeUnit" doc:"Length of one probe-spec second (periodSeconds, timeoutSeconds...); leave at 1s outside tests."`

	Backoff BackoffSettings `yaml:"backoff" doc:"Restart back-off of crashing containers and of failed image pulls (CrashLoopBackOff / ImagePullBackOff)."`
	Images  ImageSettings   `yaml:"images" doc:"Image handling."`

	host    sdk.Host
	ctx     context.Context
	cri     *criClient
	nodeIP  string
	volumes *volume.Manager
	probes  *probe.Manager
	metrics *metrics

	mu      sync.Mutex
	workers map[types.UID]*worker
	wg      sync.WaitGroup
	started chan struct{} // closed once the pods stored before the start have workers
}

// BackoffSettings configure back-off.
type BackoffSettings struct {
	Base       time.Duration `yaml:"base" doc:"First delay before restarting a container that exited (or retrying a failed pull); doubled after each further failure."`
	Max        time.Duration `yaml:"max" doc:"Largest delay."`
	ResetAfter time.Duration `yaml:"resetAfter" doc:"A container that ran this long before exiting starts again from the base delay."`
}

// ImageSettings configure images.
type ImageSettings struct {
	PullTimeout time.Duration `yaml:"pullTimeout" doc:"Bound on one PullImage call."`
	// LocalOnPullFailure: an edge node is often offline; with pull policy Always a present image is
	// used when the pull fails, rather than stopping the pod.
	LocalOnPullFailure bool `yaml:"localOnPullFailure" doc:"With imagePullPolicy Always, use the image already present when the pull fails (an offline edge keeps running); false reports ErrImagePull."`
}

type metrics struct {
	syncs          *prometheus.CounterVec
	starts         prometheus.Counter
	statusSent     prometheus.Counter
	pods           prometheus.GaugeFunc
	criErrors      *prometheus.CounterVec
	containerStart prometheus.Histogram
	relists        *prometheus.CounterVec
}

var _ sdk.Module = (*Module)(nil)

// New returns Edged with its defaults.
func New() *Module {
	return &Module{
		CRIEndpoint:     "unix:///run/containerd/containerd.sock",
		RootDir:         "/var/lib/kedge/edged",
		PodSandboxImage: "localhost/pause:local",
		MetaManager:     sdk.DefaultMetaManager,
		SyncPeriod:      time.Minute,
		StatusPeriod:    2 * time.Second,
		QueryTimeout:    10 * time.Second,
		ProbeTimeUnit:   time.Second,
		Backoff:         BackoffSettings{Base: 10 * time.Second, Max: 5 * time.Minute, ResetAfter: 10 * time.Minute},
		Images:          ImageSettings{PullTimeout: 2 * time.Minute, LocalOnPullFailure: true},
	}
}

// Start dials the runtime (lazily: a runtime that is not up yet is retried by the workers), lists
// every pod metamanager holds and starts a worker for each, and removes sandboxes of pods that are
// no longer wanted.
func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	m.host, m.ctx = h, ctx
	if err := m.Validate(); err != nil { // validate.go; the host checked already
		return err
	}
	cri, err := dial(m.CRIEndpoint)
	if err != nil {
		return err
	}
	if wrapRuntime != nil {
		cri.rt = wrapRuntime(cri.rt)
	}
	m.cri = cri
	m.nodeIP = m.NodeIP
	if m.nodeIP == "" {
		m.nodeIP = firstHostIP()
	}
	m.volumes = volume.NewManager(m.RootDir, metaSource{m}, volume.WithLogger(h.Logger().With("part", "volume")))
	m.probes = probe.NewManager(criExec{m}, h.Logger().With("part", "probe"), probe.WithTimeUnit(m.ProbeTimeUnit))
	go m.readProbeResults()
	if err := m.registerMetrics(); err != nil {
		return err
	}
	m.workers = map[types.UID]*worker{}
	m.started = make(chan struct{})
	m.wg.Go(func() { m.initialSync(ctx) })
	m.wg.Go(func() { m.relistLoop(ctx) })
	return nil
}

func (m *Module) registerMetrics() error {
	m.metrics = &metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edged_pod_syncs_total",
			Help: "Pod reconciliations, by result (ok, error)."}, []string{"result"}),
		starts: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edged_container_starts_total",
			Help: "Containers created and started (restarts included)."}),
		statusSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edged_pod_status_sent_total",
			Help: "Pod statuses sent upstream (only changed ones are sent)."}),
		pods: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kedge_edged_pods",
			Help: "Pods with a worker on this node."}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(len(m.workers))
		}),
		criErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edged_cri_errors_total",
			Help: "Failed CRI calls, by call."}, []string{"call"}),
		containerStart: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_edged_container_start_seconds",
			Help: "CreateContainer + StartContainer duration.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 10)}),
		relists: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edged_relists_total",
			Help: "Shared relists of the runtime (one ListPodSandbox + one ListContainers for all pods), by result (ok, error)."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.metrics.syncs, m.metrics.starts, m.metrics.statusSent, m.metrics.pods, m.metrics.criErrors, m.metrics.containerStart, m.metrics.relists} {
		if err := m.host.Metrics().Register(c); err != nil {
			return err
		}
	}
	return nil
}

// initialSync lists the stored pods (notifications may have been missed while edged was not running),
// starts their workers, then removes sandboxes edged made for pods that are not stored any more.
func (m *Module) initialSync(ctx context.Context) {
	defer close(m.started)
	var pods []corev1.Pod
	for delay := 100 * time.Millisecond; ; delay = min(delay*2, 5*time.Second) {
		var err error
		if pods, err = m.listPods(ctx); err == nil {
			break
		}
		m.host.Logger().Warn("cannot list pods from metamanager yet; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	if st, err := m.cri.img.ImageStatus(ctx, &criv1.ImageStatusRequest{Image: &criv1.ImageSpec{Image: m.PodSandboxImage}}); err != nil || st.Image == nil {
		m.host.Logger().Warn("the pod sandbox image is not present in the runtime: no pod can start until it is imported",
			"image", m.PodSandboxImage, "err", err)
	}
	wanted := map[string]bool{}
	for i := range pods {
		wanted[string(pods[i].UID)] = true
		m.setPod(&pods[i], false)
	}
	m.host.Logger().Info("pods from the store", "count", len(pods))
	for delay := 100 * time.Millisecond; ; delay = min(delay*2, 10*time.Second) {
		err := m.removeOrphans(ctx, wanted)
		if err == nil {
			// Folders of pods removed while edged was down (their sandboxes are gone now).
			n, err := m.sweepPodDirs(wanted)
			if err != nil {
				m.host.Logger().Warn("folders of removed pods not all removed", "err", err)
			}
			if n > 0 {
				m.host.Logger().Info("removed the folders of pods no longer wanted", "folders", n)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		m.host.Logger().Warn("cannot clean up sandboxes of removed pods yet", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

func (m *Module) listPods(ctx context.Context) ([]corev1.Pod, error) {
	raw, err := m.query(ctx, "*/pod")
	if err != nil {
		return nil, err
	}
	var pods []corev1.Pod
	if err := json.Unmarshal(raw, &pods); err != nil {
		return nil, fmt.Errorf("list */pod: answer is not a list of pods: %w", err)
	}
	return pods, nil
}

// removeOrphans removes sandboxes labelled by edged whose pod is neither stored nor has a worker.
func (m *Module) removeOrphans(ctx context.Context, wanted map[string]bool) error {
	sbs, err := m.cri.rt.ListPodSandbox(ctx, &criv1.ListPodSandboxRequest{Filter: &criv1.PodSandboxFilter{
		LabelSelector: map[string]string{labelManaged: managedValue, labelNode: m.host.NodeName()}}})
	if err != nil {
		return fmt.Errorf("ListPodSandbox: %w", err)
	}
	for _, sb := range sbs.Items {
		uid := sb.Labels[labelPodUID]
		m.mu.Lock()
		_, has := m.workers[types.UID(uid)]
		m.mu.Unlock()
		if wanted[uid] || has {
			continue
		}
		m.host.Logger().Info("removing the sandbox of a pod no longer wanted", "pod", sb.Metadata.GetNamespace()+"/"+sb.Metadata.GetName(), "uid", uid, "sandbox", sb.Id)
		if err := m.removeSandbox(ctx, sb.Id, 2); err != nil {
			return err
		}
	}
	return nil
}

// Stop waits for the workers; containers keep running (a restarted edged adopts them).
func (m *Module) Stop(context.Context) error {
	m.wg.Wait()
	if m.probes != nil {
		m.probes.Close()
	}
	if m.cri != nil {
		return m.cri.close()
	}
	return nil
}

// Healthy reports whether the runtime answers.
func (m *Module) Healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := m.cri.rt.Version(ctx, &criv1.VersionRequest{}); err != nil {
		return fmt.Errorf("CRI runtime at %s: %w", m.CRIEndpoint, err)
	}
	return nil
}

// Handle takes a stored change from metamanager: a pod goes to its worker; a configmap, secret or
// token change wakes the workers of its namespace (their volume files are refreshed).
func (m *Module) Handle(_ context.Context, msg sdk.Message) error {
	res, err := message.ParseEdge(msg.Route.Resource)
	if err != nil {
		return fmt.Errorf("message from %s: %w", msg.Route.Source, err)
	}
	switch msg.Route.Operation {
	case message.OpInsert, message.OpUpdate, message.OpPatch, message.OpDelete:
	default:
		return nil // answers, queries: nothing to do
	}
	switch res.Type {
	case "pod":
		var pod corev1.Pod
		if err := json.Unmarshal(msg.Content, &pod); err != nil {
			return fmt.Errorf("pod %s: content is not a pod: %w", msg.Route.Resource, err)
		}
		if pod.UID == "" {
			return fmt.Errorf("pod %s: content has no metadata.uid", msg.Route.Resource)
		}
		if pod.Namespace == "" {
			pod.Namespace = res.Namespace
		}
		m.setPod(&pod, msg.Route.Operation == message.OpDelete)
	case "configmap", "secret", "serviceaccounttoken":
		m.mu.Lock()
		for _, w := range m.workers {
			if w.namespace == res.Namespace {
				w.poke(true)
			}
		}
		m.mu.Unlock()
	}
	return nil
}

// setPod gives a pod's new desired state to its worker, starting one if needed.
func (m *Module) setPod(pod *corev1.Pod, removed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.workers[pod.UID]
	if !ok {
		// Even for a removal: make sure nothing of the pod runs (edged may have been down meanwhile).
		w = newWorker(m, pod)
		m.workers[pod.UID] = w
		m.wg.Go(func() { w.run(m.ctx) })
	}
	w.pod, w.removed = pod, removed
	w.poke(false)
}

// forget removes a finished worker (its pod removed from the store, or its deletion confirmed) unless a new desired state arrived meanwhile.
func (m *Module) forget(w *worker) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !(w.removed || w.confirmed) || len(w.wake) > 0 {
		return false
	}
	delete(m.workers, w.uid)
	return true
}

// query asks metamanager for a stored object or list.
func (m *Module) query(ctx context.Context, resource string) (json.RawMessage, error) {
	req := message.New(Name, "resource", message.OpQuery, resource)
	resp, err := m.host.SendSync(ctx, m.MetaManager, req, m.QueryTimeout)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", resource, err)
	}
	if resp.Route.Operation == message.OpError {
		var reason string
		if json.Unmarshal(resp.Content, &reason) != nil {
			reason = string(resp.Content)
		}
		return nil, &queryError{resource: resource, reason: reason}
	}
	return json.RawMessage(resp.Content), nil
}

type queryError struct{ resource, reason string }

func (e *queryError) Error() string { return fmt.Sprintf("query %s: %s", e.resource, e.reason) }

// send carries a message to metamanager (stored, then to the cloud).
func (m *Module) send(ctx context.Context, op, resource string, content any) error {
	out, err := message.New(Name, "resource", op, resource).WithContent(content)
	if err != nil {
		return err
	}
	return m.host.Send(ctx, m.MetaManager, out)
}

func (m *Module) log() *slog.Logger { return m.host.Logger() }
