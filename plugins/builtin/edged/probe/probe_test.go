package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const wait = 10 * time.Second // bound for every wait; nothing waits this long when it works

type execResp struct {
	code int
	out  string
	err  error
}

// scriptExec answers each ExecSync with the next response the test feeds for that command
// (cmd[0]), or at once with a fixed answer for commands set to auto. Unanswered calls end with
// their context.
type scriptExec struct {
	mu    sync.Mutex
	calls map[string]int
	ids   map[string]string // cmd -> container ID of the last call
	feed  map[string]chan execResp
	auto  map[string]int
	sent  map[string]int // answers the test gave
}

func newScriptExec() *scriptExec {
	return &scriptExec{calls: map[string]int{}, ids: map[string]string{}, feed: map[string]chan execResp{}, auto: map[string]int{}, sent: map[string]int{}}
}

func (s *scriptExec) ch(cmd string) chan execResp {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.feed[cmd]
	if !ok {
		c = make(chan execResp)
		s.feed[cmd] = c
	}
	return c
}

func (s *scriptExec) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, []byte, error) {
	s.mu.Lock()
	s.calls[cmd[0]]++
	s.ids[cmd[0]] = id
	code, auto := s.auto[cmd[0]]
	s.mu.Unlock()
	if auto {
		return code, nil, nil
	}
	limit := time.NewTimer(timeout) // the runtime's bound on the command
	defer limit.Stop()
	select {
	case r := <-s.ch(cmd[0]):
		return r.code, []byte(r.out), r.err
	case <-limit.C:
		return 0, nil, fmt.Errorf("timeout %s exceeded: %w", timeout, context.DeadlineExceeded)
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// slowRuntime is a runtime that takes setup to start each exec (runc exec on a loaded machine),
// after which the command succeeds at once.
type slowRuntime struct{ setup time.Duration }

func (s slowRuntime) ExecSync(ctx context.Context, _ string, _ []string, _ time.Duration) (int, []byte, error) {
	select {
	case <-time.After(s.setup):
		return 0, []byte("ok"), nil
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

func (s *scriptExec) count(cmd string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[cmd]
}

// respond answers the pending call of cmd, then waits until the probe has handled it and is
// waiting in its next call (so any result of the answered call is already in Results).
func (s *scriptExec) respond(t *testing.T, cmd string, r execResp) {
	t.Helper()
	s.answer(t, cmd, r)
	s.mu.Lock()
	n := s.sent[cmd]
	s.mu.Unlock()
	s.waitCalls(t, cmd, n+1) // every call so far was answered; wait for the next one
}

// answer answers the pending (or next) call of cmd without waiting for another.
func (s *scriptExec) answer(t *testing.T, cmd string, r execResp) {
	t.Helper()
	select {
	case s.ch(cmd) <- r:
		s.mu.Lock()
		s.sent[cmd]++
		s.mu.Unlock()
	case <-time.After(wait):
		t.Fatalf("probe %s never called", cmd)
	}
}

func (s *scriptExec) waitCalls(t *testing.T, cmd string, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for s.count(cmd) < n {
		if time.Now().After(deadline) {
			t.Fatalf("probe %s: %d calls, want at least %d", cmd, s.count(cmd), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func execProbe(cmd string, success, failure int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{cmd}}},
		PeriodSeconds: 1, TimeoutSeconds: 100000, SuccessThreshold: success, FailureThreshold: failure}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// drain returns the results already delivered.
func drain(m *Manager) []Result {
	var out []Result
	for {
		select {
		case r := <-m.Results():
			out = append(out, r)
		default:
			return out
		}
	}
}

func next(t *testing.T, m *Manager) Result {
	t.Helper()
	select {
	case r := <-m.Results():
		return r
	case <-time.After(wait):
		t.Fatal("no probe result")
		return Result{}
	}
}

func TestThresholdsAreCountedExactlyAndOnlyChangesAreSent(t *testing.T) {
	ex := newScriptExec()
	m := NewManager(ex, quiet(), WithTimeUnit(2*time.Millisecond))
	defer m.Close()
	c := &corev1.Container{Name: "app", ReadinessProbe: execProbe("ready", 2, 3)}
	if err := m.Start("pod-1", "127.0.0.1", c, "cid-1"); err != nil {
		t.Fatal(err)
	}
	ok, fail := execResp{code: 0, out: "fine"}, execResp{code: 1, out: "sick"}
	broken := execResp{err: errors.New("runtime unavailable")}
	steps := []struct {
		resp  execResp
		want  string // "" no result, "healthy", "unhealthy"
		ready bool
	}{
		{ok, "", false},            // 1 success < successThreshold 2
		{ok, "healthy", true},      // 2 successes: the first result
		{fail, "", true},           // 1 failure
		{fail, "", true},           // 2 failures
		{ok, "", true},             // a success resets the failure run
		{fail, "", true},           // 1
		{broken, "", true},         // a runtime error is discarded, not counted
		{fail, "", true},           // 2
		{fail, "unhealthy", false}, // 3 failures: changed
		{fail, "", false},          // still failing: no repeated result
		{ok, "", false},            // 1 success
		{ok, "healthy", true},      // 2 successes: changed back
	}
	for i, s := range steps {
		ex.respond(t, "ready", s.resp)
		got := drain(m)
		switch {
		case s.want == "" && len(got) != 0:
			t.Fatalf("step %d: unexpected results %+v", i+1, got)
		case s.want != "" && len(got) != 1:
			t.Fatalf("step %d: results %+v, want one %s", i+1, got, s.want)
		case s.want != "":
			r := got[0]
			if r.Healthy != (s.want == "healthy") || r.Kind != Readiness || r.PodUID != "pod-1" || r.Container != "app" || r.ContainerID != "cid-1" || r.Time.IsZero() {
				t.Fatalf("step %d: result %+v, want %s", i+1, r, s.want)
			}
			if !r.Healthy && !strings.Contains(r.Message, "exited with 1: sick") {
				t.Fatalf("step %d: message %q", i+1, r.Message)
			}
		}
		if m.Ready("pod-1", "app") != s.ready {
			t.Fatalf("step %d: Ready = %v, want %v", i+1, !s.ready, s.ready)
		}
	}
}

func TestLivenessFailureHoldsUntilRestart(t *testing.T) {
	ex := newScriptExec()
	ex.auto["ready"] = 0 // a readiness probe that always passes serves as a clock
	m := NewManager(ex, quiet(), WithTimeUnit(2*time.Millisecond))
	defer m.Close()
	c := &corev1.Container{Name: "app", LivenessProbe: execProbe("live", 1, 2), ReadinessProbe: execProbe("ready", 1, 1)}
	if err := m.Start("pod-1", "", c, "cid-1"); err != nil {
		t.Fatal(err)
	}
	ex.respond(t, "live", execResp{code: 0})
	ex.respond(t, "live", execResp{code: 1})
	ex.answer(t, "live", execResp{code: 1}) // the deciding failure: no further call follows
	var live []Result
	deadline := time.After(wait)
	for len(live) < 2 {
		select {
		case r := <-m.Results():
			if r.Kind == Liveness {
				live = append(live, r)
			}
		case <-deadline:
			t.Fatalf("liveness results %+v", live)
		}
	}
	if !live[0].Healthy || live[1].Healthy {
		t.Fatalf("liveness results %+v, want healthy then unhealthy", live)
	}
	// On hold: the readiness probe keeps running, the liveness probe does not.
	held := ex.count("live")
	ex.waitCalls(t, "ready", ex.count("ready")+20)
	if n := ex.count("live"); n != held {
		t.Fatalf("liveness probed %d more times after failing; it must wait for the restart", n-held)
	}
	// The restarted container: Start again with its new ID; probing resumes for it.
	if err := m.Start("pod-1", "", c, "cid-2"); err != nil {
		t.Fatal(err)
	}
	ex.answer(t, "live", execResp{code: 0})
	for {
		r := next(t, m)
		if r.Kind == Liveness {
			if !r.Healthy || r.ContainerID != "cid-2" {
				t.Fatalf("after restart: %+v", r)
			}
			break
		}
	}
}

func TestStartupProbeGatesLivenessAndReadiness(t *testing.T) {
	ex := newScriptExec()
	ex.auto["live"], ex.auto["ready"] = 0, 0
	m := NewManager(ex, quiet(), WithTimeUnit(2*time.Millisecond))
	defer m.Close()
	c := &corev1.Container{Name: "app", StartupProbe: execProbe("startup", 1, 10),
		LivenessProbe: execProbe("live", 1, 3), ReadinessProbe: execProbe("ready", 1, 3)}
	if err := m.Start("pod-1", "", c, "cid-1"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		ex.respond(t, "startup", execResp{code: 1})
	}
	if m.Started("pod-1", "app") || m.Ready("pod-1", "app") {
		t.Fatal("started or ready before the startup probe succeeded")
	}
	if ex.count("live") != 0 || ex.count("ready") != 0 {
		t.Fatalf("liveness (%d) or readiness (%d) ran before startup succeeded", ex.count("live"), ex.count("ready"))
	}
	if got := drain(m); len(got) != 0 {
		t.Fatalf("results before any threshold was reached: %+v", got)
	}
	ex.answer(t, "startup", execResp{code: 0})
	kinds := map[Kind]bool{}
	for len(kinds) < 3 {
		r := next(t, m)
		if !r.Healthy {
			t.Fatalf("unexpected %+v", r)
		}
		kinds[r.Kind] = true
	}
	if !m.Started("pod-1", "app") || !m.Ready("pod-1", "app") {
		t.Fatal("not started and ready after all probes passed")
	}
	// The startup probe is done: it never runs again.
	n := ex.count("startup")
	ex.waitCalls(t, "ready", ex.count("ready")+10)
	if ex.count("startup") != n {
		t.Fatal("startup probe ran after it succeeded")
	}
}

func TestExecTimeoutIsAFailure(t *testing.T) {
	ex := newScriptExec() // never answers: the call ends with the probe's timeout
	m := NewManager(ex, quiet(), WithTimeUnit(5*time.Millisecond))
	defer m.Close()
	p := execProbe("hang", 1, 1)
	p.TimeoutSeconds = 2
	if err := m.Start("pod-1", "", &corev1.Container{Name: "app", ReadinessProbe: p}, "cid"); err != nil {
		t.Fatal(err)
	}
	r := next(t, m)
	if r.Healthy || !strings.Contains(r.Message, "timed out after 10ms") {
		t.Fatalf("result %+v, want a timeout failure", r)
	}
}

// On a loaded machine the runtime may take longer to start an exec than the probe's whole timeout;
// the timeout bounds the command (as the runtime and the kubelet count it), so a liveness probe whose
// command answers at once stays healthy and never restarts the container. The test would fail if the
// probe bounded the runtime call by the timeout alone.
func TestExecProbeTimeoutBoundsTheCommandNotTheRuntimeStartingIt(t *testing.T) {
	const unit = 5 * time.Millisecond
	m := NewManager(slowRuntime{setup: 40 * unit}, quiet(), WithTimeUnit(unit))
	defer m.Close()
	p := execProbe("check", 1, 1)
	p.TimeoutSeconds = 4 // 20 ms, half the runtime's setup
	if err := m.Start("pod-1", "", &corev1.Container{Name: "app", LivenessProbe: p}, "cid"); err != nil {
		t.Fatal(err)
	}
	if r := next(t, m); !r.Healthy || r.Message != "ok" {
		t.Fatalf("result %+v, want healthy: the command answered at once, only the runtime was slow to start it", r)
	}
	// A runtime slower than the grace as well fails the probe as a timeout.
	m2 := NewManager(slowRuntime{setup: time.Hour}, quiet(), WithTimeUnit(unit), WithExecGrace(20*unit))
	defer m2.Close()
	if err := m2.Start("pod-2", "", &corev1.Container{Name: "app", LivenessProbe: p}, "cid"); err != nil {
		t.Fatal(err)
	}
	if r := next(t, m2); r.Healthy || !strings.Contains(r.Message, "timed out after 20ms") {
		t.Fatalf("result %+v, want a timeout failure once the grace ran out too", r)
	}
}

func httpProbe(port intstr.IntOrString, path string, headers ...corev1.HTTPHeader) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port, HTTPHeaders: headers}},
		PeriodSeconds: 1, TimeoutSeconds: 200, FailureThreshold: 1}
}

func serverPort(t *testing.T, s *httptest.Server) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(s.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

func TestHTTPGet(t *testing.T) {
	var mu sync.Mutex
	otherHits := 0
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		otherHits++
		mu.Unlock()
	}))
	defer other.Close()
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1) // another host name
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			fmt.Fprint(w, "all good")
		case "/notfound":
			http.Error(w, "no such page", http.StatusNotFound)
		case "/error":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "/headers":
			if r.Header.Get("X-Probe") != "yes" || !strings.HasPrefix(r.UserAgent(), "kube-probe/") || r.URL.RawQuery != "deep=1" {
				http.Error(w, "missing header", http.StatusBadRequest)
			}
		case "/redirect-same":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/redirect-error":
			http.Redirect(w, r, "/error", http.StatusFound)
		case "/redirect-other":
			http.Redirect(w, r, otherURL+"/x", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/hang":
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	port := serverPort(t, srv)
	named := []corev1.ContainerPort{{Name: "metrics", ContainerPort: 1}, {Name: "web", ContainerPort: int32(port)}}

	tests := []struct {
		name    string
		probe   *corev1.Probe
		healthy bool
		msg     string
	}{
		{"200 is healthy", httpProbe(intstr.FromInt32(int32(port)), "/ok"), true, "all good"},
		{"named port resolves from the container", httpProbe(intstr.FromString("web"), "/ok"), true, "all good"},
		{"404 is unhealthy", httpProbe(intstr.FromInt32(int32(port)), "/notfound"), false, "status code 404"},
		{"500 is unhealthy", httpProbe(intstr.FromInt32(int32(port)), "/error"), false, "status code 500: boom"},
		{"headers, user agent and query are sent", httpProbe(intstr.FromInt32(int32(port)), "/headers?deep=1", corev1.HTTPHeader{Name: "X-Probe", Value: "yes"}), true, ""},
		{"redirect on the same host is followed", httpProbe(intstr.FromInt32(int32(port)), "/redirect-same"), true, "all good"},
		{"followed redirect to a failing page fails", httpProbe(intstr.FromInt32(int32(port)), "/redirect-error"), false, "status code 500"},
		{"redirect to another host is not followed and counts as success", httpProbe(intstr.FromInt32(int32(port)), "/redirect-other"), true, "redirect to another host not followed"},
		{"redirect loop fails", httpProbe(intstr.FromInt32(int32(port)), "/loop"), false, "stopped after 10 redirects"},
		{"a hanging server times out", func() *corev1.Probe {
			p := httpProbe(intstr.FromInt32(int32(port)), "/hang")
			p.TimeoutSeconds = 5
			return p
		}(), false, "timed out after 50ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewManager(nil, quiet(), WithTimeUnit(10*time.Millisecond))
			defer m.Close()
			c := &corev1.Container{Name: "app", Ports: named, ReadinessProbe: tc.probe}
			if err := m.Start(types.UID("pod"), "127.0.0.1", c, "cid"); err != nil {
				t.Fatal(err)
			}
			r := next(t, m)
			if r.Healthy != tc.healthy || !strings.Contains(r.Message, tc.msg) {
				t.Fatalf("result %+v, want healthy=%v with %q", r, tc.healthy, tc.msg)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if otherHits != 0 {
		t.Fatalf("the other host was contacted %d times", otherHits)
	}
}

func TestStartRefusesBadProbes(t *testing.T) {
	tests := []struct {
		name    string
		c       corev1.Container
		execer  Execer
		wantErr string
	}{
		{"unknown named port", corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 80}},
			LivenessProbe: httpProbe(intstr.FromString("admin"), "/")},
			nil, `pod p container "app" liveness probe: httpGet: port "admin" is not a named port of container "app" (named ports: web)`},
		{"named port on a container without ports", corev1.Container{Name: "app",
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("db")}}}},
			nil, `tcpSocket: port "db" is not a named port of container "app" (it names no ports)`},
		{"port out of range", corev1.Container{Name: "app", ReadinessProbe: httpProbe(intstr.FromInt32(70000), "/")}, nil, "port 70000 is out of range"},
		{"no handler", corev1.Container{Name: "app", StartupProbe: &corev1.Probe{}}, nil, "needs exactly one of exec, httpGet, tcpSocket, grpc (has 0)"},
		{"liveness successThreshold above 1", corev1.Container{Name: "app", LivenessProbe: execProbe("x", 2, 1)}, newScriptExec(), "successThreshold must be 1 for a liveness probe"},
		{"negative period", corev1.Container{Name: "app", ReadinessProbe: func() *corev1.Probe { p := execProbe("x", 1, 1); p.PeriodSeconds = -1; return p }()}, newScriptExec(), "periodSeconds -1 is negative"},
		{"exec without an Execer", corev1.Container{Name: "app", ReadinessProbe: execProbe("x", 1, 1)}, nil, "exec probes need an Execer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewManager(tc.execer, quiet())
			defer m.Close()
			err := m.Start("p", "127.0.0.1", &tc.c, "cid")
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if m.Started("p", "app") {
				t.Fatal("a refused container is tracked")
			}
		})
	}
}

func TestTCPSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	tests := []struct {
		name    string
		port    int
		healthy bool
	}{
		{"a listening port is healthy", l.Addr().(*net.TCPAddr).Port, true},
		{"a closed port is unhealthy", closedPort, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewManager(nil, quiet(), WithTimeUnit(10*time.Millisecond))
			defer m.Close()
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(tc.port)}},
				PeriodSeconds: 1, TimeoutSeconds: 200, FailureThreshold: 1}
			if err := m.Start("pod", "127.0.0.1", &corev1.Container{Name: "app", ReadinessProbe: p}, "cid"); err != nil {
				t.Fatal(err)
			}
			if r := next(t, m); r.Healthy != tc.healthy {
				t.Fatalf("result %+v, want healthy=%v", r, tc.healthy)
			}
		})
	}
}

func TestGRPCHealth(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(l)
	defer srv.Stop()
	port := int32(l.Addr().(*net.TCPAddr).Port)
	tests := []struct {
		service string
		healthy bool
		msg     string
	}{
		{"up", true, ""},
		{"down", false, "is NOT_SERVING"},
		{"unknown", false, "NotFound"},
	}
	for _, tc := range tests {
		t.Run("service "+tc.service, func(t *testing.T) {
			m := NewManager(nil, quiet(), WithTimeUnit(10*time.Millisecond))
			defer m.Close()
			svc := tc.service
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: port, Service: &svc}},
				PeriodSeconds: 1, TimeoutSeconds: 300, FailureThreshold: 1}
			if err := m.Start("pod", "127.0.0.1", &corev1.Container{Name: "app", ReadinessProbe: p}, "cid"); err != nil {
				t.Fatal(err)
			}
			if r := next(t, m); r.Healthy != tc.healthy || !strings.Contains(r.Message, tc.msg) {
				t.Fatalf("result %+v, want healthy=%v with %q", r, tc.healthy, tc.msg)
			}
		})
	}
}

func TestInitialDelayAndNoProbesMeansReady(t *testing.T) {
	ex := newScriptExec()
	ex.auto["ready"] = 0
	m := NewManager(ex, quiet(), WithTimeUnit(time.Millisecond))
	defer m.Close()
	if err := m.Start("pod", "", &corev1.Container{Name: "plain"}, "cid"); err != nil {
		t.Fatal(err)
	}
	if !m.Started("pod", "plain") || !m.Ready("pod", "plain") {
		t.Fatal("a container without probes is started and ready")
	}
	if m.Ready("pod", "other") || m.Started("other", "plain") {
		t.Fatal("an unknown container reports ready or started")
	}
	p := execProbe("ready", 1, 1)
	p.InitialDelaySeconds = 50
	start := time.Now()
	if err := m.Start("pod", "", &corev1.Container{Name: "slow", ReadinessProbe: p}, "cid"); err != nil {
		t.Fatal(err)
	}
	r := next(t, m)
	if !r.Healthy || r.Container != "slow" {
		t.Fatalf("result %+v", r)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Fatalf("first probe after %s, before initialDelaySeconds (50 units of 1ms)", el)
	}
}

func TestStopLeavesNoGoroutines(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	port := int32(serverPort(t, srv))
	ex := newScriptExec()
	ex.auto["x"] = 0
	before := runtime.NumGoroutine()

	m := NewManager(ex, quiet(), WithTimeUnit(time.Millisecond))
	for i := range 5 {
		c := &corev1.Container{Name: fmt.Sprint("c", i),
			LivenessProbe:  execProbe("x", 1, 3),
			ReadinessProbe: httpProbe(intstr.FromInt32(port), "/"),
			StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}},
				PeriodSeconds: 1, TimeoutSeconds: 1000}}
		if err := m.Start(types.UID(fmt.Sprint("pod", i%2)), "127.0.0.1", c, "cid"); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	for seen < 15 { // 5 containers x startup, liveness, readiness
		next(t, m)
		seen++
	}
	m.Stop("pod0", "c0")
	m.StopPod("pod1")
	if m.Ready("pod1", "c1") {
		t.Fatal("a stopped container is still ready")
	}
	m.Close()
	if _, open := <-m.Results(); open {
		// drain whatever was buffered; the channel must end closed
		for range m.Results() {
		}
	}
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := m.Start("pod", "", &corev1.Container{Name: "late"}, "cid"); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}
