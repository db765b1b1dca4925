package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Kind is the kind of a probe.
type Kind string

const (
	Liveness  Kind = "liveness"
	Readiness Kind = "readiness"
	Startup   Kind = "startup"
)

// Execer runs a command in a container (Edged: CRI ExecSync). timeout bounds the command, counted
// from its start as the container runtime counts it (CRI's ExecSyncRequest.Timeout), not the
// runtime's setup of the exec; ctx bounds the whole call and allows for that setup (see
// WithExecGrace). A non-nil error means the call itself failed; a command that ran and failed is a
// non-zero exitCode. A call that ends because ctx or timeout expired should return an error
// wrapping context.DeadlineExceeded.
type Execer interface {
	ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (exitCode int, output []byte, err error)
}

// Result is a probe's state, sent when it changes (and the first time it is known).
type Result struct {
	PodUID      types.UID
	Container   string
	ContainerID string
	Kind        Kind
	Healthy     bool
	Message     string // the deciding probe's output or failure reason
	Time        time.Time
}

// Option configures a Manager.
type Option func(*Manager)

// WithTimeUnit sets how long one "second" of a probe spec lasts (default time.Second); tests use
// milliseconds so they never sleep for seconds.
func WithTimeUnit(d time.Duration) Option { return func(m *Manager) { m.unit = d } }

// WithExecGrace sets how much longer than timeoutSeconds an exec probe's runtime call may take
// (default DefaultExecGrace). The timeout bounds the command, which the runtime enforces from the
// command's start; the runtime's own setup of the exec (runc exec: new process, namespaces, cgroups)
// takes milliseconds on a quiet machine and seconds on a loaded one, and must not fail a probe —
// least of all a liveness probe, whose failure restarts the container. The kubelet gives the CRI call
// its timeout plus the runtime request timeout (2 minutes).
func WithExecGrace(d time.Duration) Option { return func(m *Manager) { m.execGrace = d } }

// DefaultExecGrace is how long past its timeout an exec probe's runtime call may take by default.
const DefaultExecGrace = time.Minute

// WithResultBuffer sets the capacity of the Results channel (default 256). A full channel makes
// the probe that produced a result wait for the reader.
func WithResultBuffer(n int) Option { return func(m *Manager) { m.bufSize = n } }

// Manager runs the probes of many containers. It is safe for concurrent use.
type Manager struct {
	exec      Execer
	log       *slog.Logger
	unit      time.Duration
	execGrace time.Duration
	bufSize   int
	results   chan Result
	client    *http.Client
	tr        *http.Transport

	mu         sync.Mutex
	closed     bool
	containers map[key]*container
}

type key struct {
	pod  types.UID
	name string
}

// NewManager returns a Manager; execer may be nil when no exec probes are used (an exec probe then
// fails Start).
func NewManager(execer Execer, logger *slog.Logger, opts ...Option) *Manager {
	if logger == nil {
		logger = slog.Default()
	}
	m := &Manager{exec: execer, log: logger, unit: time.Second, execGrace: DefaultExecGrace, bufSize: 256, containers: map[key]*container{}}
	for _, o := range opts {
		o(m)
	}
	m.results = make(chan Result, m.bufSize)
	m.tr, m.client = newHTTPClient()
	return m
}

// Results delivers probe results. It is closed by Close.
func (m *Manager) Results() <-chan Result { return m.results }

// container is the probe state of one running container.
type container struct {
	pod     types.UID
	name    string
	id      string
	stop    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	workers []*worker

	mu           sync.Mutex
	hasStartup   bool
	hasReadiness bool
	started      bool
	ready        bool
}

func (c *container) isStarted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started
}

// Start begins probing container c of the pod (replacing probes of an earlier instance of it). The
// probes are checked first: a probe with no or several handlers, bad numbers, or a port that does
// not resolve (e.g. an unknown named port) is an error, and then nothing runs for the container.
// podIP is where httpGet, tcpSocket and grpc probes connect unless they name a host (a hostNetwork
// pod: the node's IP); it may be empty only when no probe needs it. initialDelaySeconds count from
// this call, so call it when the container has started.
func (m *Manager) Start(podUID types.UID, podIP string, c *corev1.Container, containerID string) error {
	if c == nil {
		return errors.New("probe: Start with a nil container")
	}
	specs := []struct {
		kind Kind
		p    *corev1.Probe
	}{{Startup, c.StartupProbe}, {Liveness, c.LivenessProbe}, {Readiness, c.ReadinessProbe}}
	cs := &container{pod: podUID, name: c.Name, id: containerID, stop: make(chan struct{})}
	cs.ctx, cs.cancel = context.WithCancel(context.Background())
	for _, s := range specs {
		if s.p == nil {
			continue
		}
		h, err := m.newHandler(podIP, c, s.p)
		if err != nil {
			return fmt.Errorf("pod %s container %q %s probe: %w", podUID, c.Name, s.kind, err)
		}
		t, err := newTiming(s.kind, s.p)
		if err != nil {
			return fmt.Errorf("pod %s container %q %s probe: %w", podUID, c.Name, s.kind, err)
		}
		cs.workers = append(cs.workers, &worker{m: m, c: cs, kind: s.kind, h: h, t: t, trigger: make(chan struct{}, 1)})
		switch s.kind {
		case Startup:
			cs.hasStartup = true
		case Readiness:
			cs.hasReadiness = true
		}
	}
	cs.started = !cs.hasStartup
	cs.ready = cs.started && !cs.hasReadiness

	k := key{podUID, c.Name}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("probe: manager is closed")
	}
	old := m.containers[k]
	m.containers[k] = cs
	for _, w := range cs.workers {
		cs.wg.Add(1)
		go w.run()
	}
	m.mu.Unlock()
	if old != nil {
		old.halt()
	}
	return nil
}

func (c *container) halt() {
	close(c.stop)
	c.cancel()
	c.wg.Wait()
}

// Stop ends the probes of one container and waits for them to finish.
func (m *Manager) Stop(podUID types.UID, containerName string) {
	k := key{podUID, containerName}
	m.mu.Lock()
	c := m.containers[k]
	delete(m.containers, k)
	m.mu.Unlock()
	if c != nil {
		c.halt()
	}
}

// StopPod ends the probes of every container of the pod and waits for them.
func (m *Manager) StopPod(podUID types.UID) {
	var stop []*container
	m.mu.Lock()
	for k, c := range m.containers {
		if k.pod == podUID {
			stop = append(stop, c)
			delete(m.containers, k)
		}
	}
	m.mu.Unlock()
	for _, c := range stop {
		c.halt()
	}
}

// Close stops every probe, waits for them and closes Results. Start fails afterwards.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	all := m.containers
	m.containers = map[key]*container{}
	m.mu.Unlock()
	for _, c := range all {
		c.halt()
	}
	m.tr.CloseIdleConnections()
	close(m.results)
}

func (m *Manager) get(podUID types.UID, name string) *container {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.containers[key{podUID, name}]
}

// Ready reports whether the container is ready: started, and its readiness probe (if any) succeeded
// last. An unknown container is not ready.
func (m *Manager) Ready(podUID types.UID, containerName string) bool {
	c := m.get(podUID, containerName)
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// Started reports whether the container's startup probe succeeded (true when it has none). An
// unknown container is not started.
func (m *Manager) Started(podUID types.UID, containerName string) bool {
	c := m.get(podUID, containerName)
	if c == nil {
		return false
	}
	return c.isStarted()
}
