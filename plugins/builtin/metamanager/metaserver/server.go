// Package metaserver is the edge's read-only Kubernetes API: client-go programs on the edge point a
// kubeconfig at it and keep working offline, served from metamanager's SQLite store.
//
// Objects keep the cloud's resourceVersion when listed or got. Changes are numbered by a local
// sequence that starts at max(largest stored resourceVersion, unix microseconds) when the server
// starts and grows by one per change; a list's resourceVersion is the current sequence, a watch from
// x replays the held changes after x, and an x the server no longer holds (or from a previous process)
// gets 410 Expired, so the client lists again.
package metaserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kedge-io/kedge/sdk"
)

// Reader is the part of the store the server reads.
type Reader interface {
	Get(ctx context.Context, k sdk.Key) (sdk.Object, error)
	List(ctx context.Context, q sdk.Query) ([]sdk.Object, error)
}

// Options configure a Server.
type Options struct {
	Address     string // host:port to listen on; port 0 picks a free one (see Addr)
	Store       Reader
	Logger      *slog.Logger
	Metrics     prometheus.Registerer // nil: no metrics registered
	EventWindow int                   // changes held for watches to resume from (default 4096)
	// WatchTimeout ends a watch that asked for no timeoutSeconds (default 30m); the client re-watches.
	WatchTimeout time.Duration
	// Auth authenticates every request but the health checks: the node-admin token and the bound
	// service-account tokens of this node's pods. Required unless Insecure.
	Auth *Authenticator
	// Insecure serves everyone without a token (benchmarks and tests of the API shape only).
	Insecure bool
	// TLS, when set, serves HTTPS. kubectl and client-go's kubeconfig loading send a token only over
	// TLS, so node agents with a kubeconfig need it.
	TLS *tls.Config
}

// Change is one applied change of a stored object; for a delete, Value is the object's last state.
type Change struct {
	Key     sdk.Key
	RV      uint64
	Value   []byte
	Deleted bool
}

// Server serves the API. Create it with New, fill its state with Load, then Listen and Run.
type Server struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	ring  *ring
	known map[sdk.Key]meta // objects of served types, as the last change left them

	lnMu      sync.Mutex
	ln        net.Listener
	addr      atomic.Value // string
	closing   chan struct{}
	closeOnce sync.Once

	requests  *prometheus.CounterVec
	watchers  prometheus.Gauge
	events    prometheus.Counter
	expired   prometheus.Counter
	listening prometheus.Gauge
	authn     *prometheus.CounterVec
}

// New checks opts and builds a server; nothing is bound yet.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("metaserver: no store to serve from")
	}
	if _, _, err := net.SplitHostPort(opts.Address); err != nil {
		return nil, fmt.Errorf("metaServer.address %q: want host:port: %w", opts.Address, err)
	}
	if opts.Auth == nil && !opts.Insecure {
		return nil, errors.New("metaserver: no authenticator (every request but the health checks needs a token)")
	}
	if opts.EventWindow <= 0 {
		opts.EventWindow = 4096
	}
	if opts.WatchTimeout <= 0 {
		opts.WatchTimeout = 30 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, known: map[sdk.Key]meta{}, closing: make(chan struct{})}
	s.addr.Store("")
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_metaserver_requests_total",
		Help: "MetaServer requests by verb (get, list, watch, discovery, refused), resource and HTTP code."}, []string{"verb", "resource", "code"})
	s.watchers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_metaserver_watchers", Help: "Open watch streams."})
	s.events = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_metaserver_events_total", Help: "Changes recorded for watchers."})
	s.expired = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_metaserver_watch_expired_total",
		Help: "Watches refused with 410 Expired (their resourceVersion is no longer held); the client relists."})
	s.listening = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_metaserver_listening", Help: "1 while the server is bound to its address."})
	s.authn = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_metaserver_authentications_total",
		Help: "MetaServer authentications by result: admin, pod, or refused for no_token, unknown_token, expired, pod_gone, error."}, []string{"result"})
	if opts.Metrics != nil {
		for _, c := range []prometheus.Collector{s.requests, s.watchers, s.events, s.expired, s.listening, s.authn} {
			if err := opts.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("metaserver metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Load reads the store once: the starting sequence is max(largest stored resourceVersion, now in unix
// microseconds), and the served objects are remembered so a change is told as ADDED or MODIFIED.
func (s *Server) Load(ctx context.Context) error {
	objs, err := s.opts.Store.List(ctx, sdk.Query{})
	if err != nil {
		return fmt.Errorf("metaserver: read the store: %w", err)
	}
	start := uint64(time.Now().UnixMicro())
	known := map[sdk.Key]meta{}
	for _, o := range objs {
		start = max(start, o.ResourceVersion)
		if res, ok := byStoreType(o.Type); ok {
			if _, m, err := render(o.Value, res, "", o.ResourceVersion); err == nil {
				known[o.Key] = m
			}
		}
	}
	if s.opts.Auth != nil {
		s.opts.Auth.loadTokens(objs, s.log)
	}
	s.mu.Lock()
	s.ring, s.known = newRing(s.opts.EventWindow, start), known
	s.mu.Unlock()
	return nil
}

// Record tells watchers about a change that is already in the store. Changes of types the server does
// not serve are ignored.
func (s *Server) Record(c Change) {
	if c.Key.Type == TokenType && s.opts.Auth != nil {
		v := c.Value
		if c.Deleted {
			v = nil
		}
		if err := s.opts.Auth.setTokens(c.Key, v); err != nil {
			s.log.Warn("service-account tokens not usable for the metaserver", "err", err)
		}
		return
	}
	res, ok := byStoreType(c.Key.Type)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ring == nil {
		return // not loaded: nobody can be watching
	}
	prev, existed := s.known[c.Key]
	obj, m, err := render(c.Value, res, strconv.FormatUint(s.ring.seq+1, 10), c.RV)
	if err != nil {
		if c.Deleted {
			delete(s.known, c.Key)
		}
		s.log.Warn("change not served to watchers", "key", c.Key.String(), "err", err)
		return
	}
	if c.Deleted {
		if !existed {
			return
		}
		delete(s.known, c.Key)
	} else {
		s.known[c.Key] = m
	}
	s.ring.push(&event{res: res, key: c.Key, deleted: c.Deleted, existed: existed, object: obj, cur: m, prev: prev, hasPrevM: existed})
	s.events.Inc()
}

// Listen binds the configured address.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.opts.Address)
	if err != nil {
		return fmt.Errorf("metaServer.address %s: %w", s.opts.Address, err)
	}
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	s.lnMu.Lock()
	s.ln = ln
	s.lnMu.Unlock()
	s.addr.Store(ln.Addr().String())
	s.listening.Set(1)
	return nil
}

// Addr is the bound address, empty until bound.
func (s *Server) Addr() string { return s.addr.Load().(string) }

// Run serves until ctx ends. If Listen failed (the address is taken, e.g. by an old instance still
// stopping), it keeps trying with backoff; the store keeps working meanwhile.
func (s *Server) Run(ctx context.Context) {
	defer s.closingOnce()
	wait := time.Second
	for {
		s.lnMu.Lock()
		ln := s.ln
		s.lnMu.Unlock()
		if ln != nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := s.Listen(); err != nil {
			s.log.Error("metaserver cannot listen; retrying", "err", err, "retry_in", min(wait*2, time.Minute))
			wait = min(wait*2, time.Minute)
		}
	}
	s.log.Info("metaserver serving", "address", s.Addr(), "tls", s.opts.TLS != nil, "authentication", !s.opts.Insecure)
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		s.closingOnce()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			_ = hs.Close()
		}
	}()
	if err := hs.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("metaserver stopped", "err", err)
	}
	<-done
	s.listening.Set(0)
}

// closingOnce ends the watch streams (they would otherwise hold Shutdown until their timeout).
func (s *Server) closingOnce() { s.closeOnce.Do(func() { close(s.closing) }) }

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	verb, resName := s.route(rec, r)
	s.requests.WithLabelValues(verb, resName, strconv.Itoa(rec.code)).Inc()
}

// recorder keeps the status code for metrics and passes Flush through for watches.
type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) (verb, resName string) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if s.current() == 0 {
		writeStatus(w, apierrors.NewServiceUnavailable("the metaserver has not read the store yet").ErrStatus)
		return "unavailable", ""
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && (path == "/healthz" || path == "/readyz" || path == "/livez") {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok"))
		return "health", ""
	}
	// Everything else needs a token, before anything is read or refused for another reason.
	var g *grant
	var id Identity
	var tok string
	if !s.opts.Insecure {
		var err error
		id, g, tok, err = s.authenticate(r)
		if err != nil {
			s.authn.WithLabelValues(authResult(err)).Inc()
			if authResult(err) == "error" {
				writeStatus(w, apierrors.NewInternalError(err).ErrStatus)
				return "error", ""
			}
			s.log.Debug("metaserver request refused: not authenticated", "path", r.URL.Path, "remote", r.RemoteAddr, "why", err)
			writeStatus(w, apierrors.NewUnauthorized("Unauthorized").ErrStatus)
			return "unauthenticated", ""
		}
		if id.Admin {
			s.authn.WithLabelValues("admin").Inc()
		} else {
			s.authn.WithLabelValues("pod").Inc()
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		st := apierrors.NewMethodNotSupported(schema.GroupResource{Resource: path}, r.Method).ErrStatus
		st.Message = fmt.Sprintf("the edge's metaserver is read-only: %s %s is not allowed (write through the cloud's kube-apiserver)", r.Method, r.URL.Path)
		writeStatus(w, st)
		return "refused", ""
	}
	switch path {
	case "/version":
		writeJSON(w, http.StatusOK, map[string]string{"major": "1", "minor": "36", "gitVersion": "v1.36.0-kedge-metaserver", "platform": "edge"})
		return "discovery", ""
	case "/api":
		writeJSON(w, http.StatusOK, metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: s.Addr()}}})
		return "discovery", ""
	case "/apis":
		writeJSON(w, http.StatusOK, metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}})
		return "discovery", ""
	case "/api/v1":
		list := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: "v1"}
		for _, res := range resources {
			list.APIResources = append(list.APIResources, metav1.APIResource{Name: res.plural, SingularName: res.storeType,
				Namespaced: res.namespaced, Kind: res.kind, Verbs: metav1.Verbs{"get", "list", "watch"}})
		}
		writeJSON(w, http.StatusOK, list)
		return "discovery", ""
	}
	parts := strings.Split(strings.TrimPrefix(path, "/api/v1/"), "/")
	if !strings.HasPrefix(path, "/api/v1/") {
		parts = nil
	}
	var ns, plural, name string
	switch {
	case len(parts) == 1 || len(parts) == 2 && parts[0] != "namespaces":
		plural = parts[0]
		if len(parts) == 2 {
			name = parts[1]
		}
	case (len(parts) == 3 || len(parts) == 4) && parts[0] == "namespaces":
		ns, plural = parts[1], parts[2]
		if len(parts) == 4 {
			name = parts[3]
		}
	default:
		writeStatus(w, notServed(r.URL.Path))
		return "unknown", ""
	}
	res, ok := byPlural(plural)
	if !ok || (ns != "" && !res.namespaced) || (ns == "" && name != "" && res.namespaced) {
		writeStatus(w, notServed(r.URL.Path))
		return "unknown", ""
	}
	q := r.URL.Query()
	fieldSel := q.Get("fieldSelector")
	if name != "" && isTrue(q.Get("watch")) {
		fieldSel = joinSel(fieldSel, "metadata.name="+name) // watch one object
		name = ""
	}
	if name != "" {
		if !g.mayRead(res, storeNamespace(res, ns), name) {
			writeStatus(w, forbidden(id, "get", res, ns, name))
			return "get", res.plural
		}
		s.get(w, r, res, ns, name)
		return "get", res.plural
	}
	if !g.mayList(res) {
		verb := "list"
		if isTrue(q.Get("watch")) {
			verb = "watch"
		}
		writeStatus(w, forbidden(id, verb, res, ns, ""))
		return verb, res.plural
	}
	sel, err := parseSelector(res, q.Get("labelSelector"), fieldSel)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()).ErrStatus)
		return "list", res.plural
	}
	if isTrue(q.Get("watch")) {
		s.watch(w, r, res, ns, sel, g, id, tok)
		return "watch", res.plural
	}
	s.list(w, r, res, ns, sel, g)
	return "list", res.plural
}

func isTrue(v string) bool { return v == "1" || v == "true" }

func joinSel(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

func notServed(path string) metav1.Status {
	return metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Message: fmt.Sprintf("the server could not find the requested resource %s (the edge's metaserver serves pods, configmaps, secrets, services and nodes of core v1)", path)}
}

func storeNamespace(res resource, ns string) string {
	if !res.namespaced {
		return clusterNamespace
	}
	return ns
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, res resource, ns, name string) {
	obj, err := s.opts.Store.Get(r.Context(), sdk.Key{Type: res.storeType, Namespace: storeNamespace(res, ns), Name: name})
	if errors.Is(err, sdk.ErrNotFound) {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Resource: res.plural}, name).ErrStatus)
		return
	}
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err).ErrStatus)
		return
	}
	out, _, err := render(obj.Value, res, "", obj.ResourceVersion)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err).ErrStatus)
		return
	}
	writeRaw(w, http.StatusOK, out)
}

// current is the latest sequence; what the store holds now includes every change up to it.
func (s *Server) current() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ring == nil {
		return 0
	}
	return s.ring.seq
}

// snapshot reads the matching objects; rv, when set, is stamped on each (watch events).
func (s *Server) snapshot(ctx context.Context, res resource, ns string, sel selector, rv string, g *grant) ([]json.RawMessage, error) {
	q := sdk.Query{Type: res.storeType, Namespace: ns}
	if !res.namespaced {
		q.Namespace = clusterNamespace
	}
	objs, err := s.opts.Store.List(ctx, q)
	if err != nil {
		return nil, err
	}
	items := make([]json.RawMessage, 0, len(objs))
	for _, o := range objs {
		if !g.mayRead(res, o.Namespace, o.Name) {
			continue // not the caller's: not even decoded
		}
		out, m, err := render(o.Value, res, rv, o.ResourceVersion)
		if err != nil {
			s.log.Warn("stored object not served", "key", o.Key.String(), "err", err)
			continue
		}
		if sel.matches(m) {
			items = append(items, out)
		}
	}
	return items, nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, res resource, ns string, sel selector, g *grant) {
	seq := s.current() // read before the store: a change after it is also replayed to a watch from seq
	items, err := s.snapshot(r.Context(), res, ns, sel, "", g)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err).ErrStatus)
		return
	}
	type listMeta struct {
		ResourceVersion string `json:"resourceVersion"`
	}
	writeJSON(w, http.StatusOK, struct {
		Kind       string            `json:"kind"`
		APIVersion string            `json:"apiVersion"`
		Metadata   listMeta          `json:"metadata"`
		Items      []json.RawMessage `json:"items"`
	}{res.kind + "List", "v1", listMeta{strconv.FormatUint(seq, 10)}, items})
}

type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request, res resource, ns string, sel selector, g *grant, id Identity, tok string) {
	q := r.URL.Query()
	timeout := s.opts.WatchTimeout
	if t := q.Get("timeoutSeconds"); t != "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n < 0 {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("timeoutSeconds %q is not a non-negative number", t)).ErrStatus)
			return
		}
		if n > 0 {
			timeout = time.Duration(n) * time.Second
		}
	}
	rvParam := q.Get("resourceVersion")
	var from uint64
	if rvParam != "" && rvParam != "0" {
		x, err := strconv.ParseUint(rvParam, 10, 64)
		if err != nil {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion %q is not a number", rvParam)).ErrStatus)
			return
		}
		from = x
	}
	initial := isTrue(q.Get("sendInitialEvents"))
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeStatus(w, apierrors.NewInternalError(errors.New("streaming is not supported")).ErrStatus)
		return
	}
	s.watchers.Inc()
	defer s.watchers.Dec()
	// The starting point and the snapshot are taken before the client sees the response: a change
	// made after the client got its 200 is always an event on this watch, never folded into ADDED.
	cur := s.current()
	var items []json.RawMessage
	if (initial || from == 0) && from <= cur {
		var err error
		if items, err = s.snapshot(r.Context(), res, ns, sel, strconv.FormatUint(cur, 10), g); err != nil {
			writeStatus(w, apierrors.NewInternalError(err).ErrStatus)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	send := func(typ string, obj json.RawMessage) bool {
		b, err := json.Marshal(watchEvent{Type: typ, Object: obj})
		if err != nil {
			return false
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	expired := func(why string) {
		s.expired.Inc()
		st := apierrors.NewResourceExpired(why).ErrStatus
		st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
		b, _ := json.Marshal(st)
		send("ERROR", b)
	}

	if initial || from == 0 {
		if from > cur {
			expired(fmt.Sprintf("too old resource version: %d (the metaserver restarted; its current is %d)", from, cur))
			return
		}
		// The snapshot at cur, then the changes after it.
		from = cur
		rv := strconv.FormatUint(cur, 10)
		for _, it := range items {
			if !send("ADDED", it) {
				return
			}
		}
		if initial {
			bm, _ := json.Marshal(map[string]any{"kind": res.kind, "apiVersion": "v1", "metadata": map[string]any{
				"resourceVersion": rv, "annotations": map[string]string{metav1.InitialEventsAnnotationKey: "true"}}})
			if !send("BOOKMARK", bm) {
				return
			}
		}
	}

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	last := from
	for {
		s.mu.Lock()
		evs, gone, wake := s.ring.since(last)
		s.mu.Unlock()
		if gone {
			expired(fmt.Sprintf("too old resource version: %d (the metaserver holds changes after %d only; list again)", last, s.base()))
			return
		}
		for _, e := range evs {
			last = e.seq
			if res.storeType != e.key.Type || (ns != "" && e.key.Namespace != ns) || !g.mayRead(res, e.key.Namespace, e.key.Name) {
				continue
			}
			if typ, ok := e.watchType(sel); ok && !send(typ, e.object) {
				return
			}
		}
		select {
		case <-wake:
			if !s.opts.Insecure && !s.opts.Auth.still(id, tok) {
				return // the pod's token was revoked (the pod is gone) or expired: the client's re-watch is refused
			}
		case <-r.Context().Done():
			return
		case <-deadline.C:
			return
		case <-s.closing:
			return
		}
	}
}

func (s *Server) base() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ring.base
}

// authResult names an authentication failure for the metric.
func authResult(err error) string {
	switch {
	case errors.Is(err, errNoToken):
		return "no_token"
	case errors.Is(err, errUnknownToken):
		return "unknown_token"
	case errors.Is(err, errExpired):
		return "expired"
	case errors.Is(err, errPodGone):
		return "pod_gone"
	}
	return "error"
}

// forbidden is the API server's 403 for an authenticated caller reaching beyond its grant.
func forbidden(id Identity, verb string, res resource, ns, name string) metav1.Status {
	why := fmt.Sprintf("User %q cannot %s resource %q in API group \"\"", id.User(), verb, res.plural)
	if ns != "" {
		why += fmt.Sprintf(" in the namespace %q", ns)
	}
	why += fmt.Sprintf(": the edge's metaserver gives pod %s/%s its own pod, the ConfigMaps and Secrets its spec references and the Services of its namespace", id.Namespace, id.Pod)
	return apierrors.NewForbidden(schema.GroupResource{Resource: res.plural}, name, errors.New(why)).ErrStatus
}

func writeStatus(w http.ResponseWriter, st metav1.Status) {
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	st.Status = metav1.StatusFailure
	writeJSON(w, int(st.Code), st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}`)
	}
	writeRaw(w, code, b)
}

func writeRaw(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
