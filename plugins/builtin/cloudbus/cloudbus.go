// Package cloudbus is the cloud end of ServiceBus: an HTTP endpoint on cloudcore,
// /nodes/<node>/ports/<port>/<path...>, that carries each request through cloudhub to the node's
// servicebus module, which calls 127.0.0.1:<port> there, and writes the node's answer back.
package cloudbus

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address. Its group is the hub's events group, so it knows which
// nodes are connected to this cloudcore.
const Name = "cloudbus"

// Wire format of the edge's servicebus module (see plugins/builtin/servicebus/README.md).
const (
	group        = "func"
	opRequest    = "request"
	resourceType = "servicebus"
)

type request struct {
	Method   string      `json:"method"`
	Path     string      `json:"path"`
	Query    string      `json:"query,omitempty"`
	Headers  http.Header `json:"headers,omitempty"`
	Body     []byte      `json:"body,omitempty"`
	Deadline int64       `json:"deadline,omitempty"`
}

type response struct {
	Status  int         `json:"status"`
	Headers http.Header `json:"headers,omitempty"`
	Body    []byte      `json:"body,omitempty"`
}

type refusal struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// statusOf maps the edge's refusal reasons to HTTP statuses; anything else is 502.
var statusOf = map[string]int{
	"port_not_allowed": http.StatusForbidden,
	"bad_request":      http.StatusBadRequest,
	"unreachable":      http.StatusBadGateway,
	"timeout":          http.StatusGatewayTimeout,
	"too_large":        http.StatusBadGateway,
	"expired":          http.StatusGatewayTimeout,
	"node_offline":     http.StatusServiceUnavailable, // cloudhub: no replica holds the node
	"forward_failed":   http.StatusBadGateway,         // cloudhub: the replica holding it could not be asked
}

// ReasonHeader carries the refusal's reason on an error answer (the body carries its message).
const ReasonHeader = "X-Kedge-Servicebus-Reason"

func init() {
	sdk.Register(sdk.Info{
		Name:     Name,
		Group:    "hubevents",
		Doc:      "ServiceBus from the cloud: an HTTP endpoint (/nodes/<node>/ports/<port>/<path>) that calls HTTP services on edge nodes through the hub.",
		Requires: []string{"cloudhub"},
		Enabled:  false,
		New:      func() sdk.Module { return New() },
	})
}

// Module is cloudbus; its exported fields are its settings.
type Module struct {
	Address         string        `yaml:"address" doc:"Listen address of the HTTP endpoint (loopback by default: it reaches into edge nodes)." cfg:"min"`
	Token           string        `yaml:"token" doc:"Bearer token every request must carry (Authorization: Bearer <token>)." cfg:"min"`
	TokenFile       string        `yaml:"tokenFile" doc:"File holding the bearer token (instead of token; surrounding whitespace ignored)."`
	InsecureNoAuth  bool          `yaml:"insecureNoAuth" doc:"Serve without a token (only for a loopback address on a trusted machine); without it and without a token the module does not start."`
	TLSCertFile     string        `yaml:"tlsCertFile" doc:"Serving certificate (PEM); with tlsKeyFile the endpoint speaks HTTPS, else plain HTTP."`
	TLSKeyFile      string        `yaml:"tlsKeyFile" doc:"Key of tlsCertFile (PEM)."`
	Timeout         time.Duration `yaml:"timeout" doc:"How long one request waits for the edge's answer (keep it above servicebus timeout on the edges); then 504."`
	MaxRequestBytes int64         `yaml:"maxRequestBytes" doc:"Largest request body sent to an edge; a larger one is answered 413."`
	HubModule       string        `yaml:"hubModule" doc:"Module that carries messages to edge nodes."`

	host    sdk.Host
	token   []byte
	srv     *http.Server
	ln      net.Listener
	wg      sync.WaitGroup
	metrics *metrics

	mu    sync.Mutex
	nodes map[string]*link // connected nodes
}

// link is a node's presence: conns counts its connections (a replacing connection comes before
// the replaced one's end); ctx ends when the last one does.
type link struct {
	conns  int
	ctx    context.Context
	cancel context.CancelFunc
}

var _ sdk.Module = (*Module)(nil)

// New returns cloudbus with its defaults.
func New() *Module {
	return &Module{Address: "127.0.0.1:10009", Timeout: 30 * time.Second, MaxRequestBytes: 1 << 20, HubModule: "cloudhub"}
}

// Addr is the address the endpoint listens on (useful with port 0); empty before Start.
func (m *Module) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	tok := strings.TrimSpace(m.Token)
	if m.TokenFile != "" {
		b, err := os.ReadFile(m.TokenFile)
		if err != nil {
			return fmt.Errorf("cloudbus: tokenFile: %w", err)
		}
		if tok = strings.TrimSpace(string(b)); tok == "" {
			return fmt.Errorf("cloudbus: tokenFile %s is empty", m.TokenFile)
		}
	}
	m.token = []byte(tok)
	var tlsCfg *tls.Config
	if m.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(m.TLSCertFile, m.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("cloudbus: tlsCertFile/tlsKeyFile: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var err error
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	m.host, m.nodes = h, map[string]*link{}
	ln, err := net.Listen("tcp", m.Address)
	if err != nil {
		return fmt.Errorf("cloudbus: listen on address %s: %w", m.Address, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	m.ln = ln
	m.srv = &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	m.wg.Go(func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.Logger().Error("endpoint stopped", "err", err)
		}
	})
	h.Logger().Info("serving ServiceBus requests for edge nodes", "address", ln.Addr().String(), "tls", tlsCfg != nil, "auth", !m.InsecureNoAuth)
	return nil
}

func (m *Module) Stop(ctx context.Context) error {
	var err error
	if m.srv != nil {
		err = m.srv.Shutdown(ctx)
		if err != nil {
			_ = m.srv.Close()
		}
	}
	m.wg.Wait()
	return err
}

// Handle takes the hub's events (which nodes are connected) and answers from the edge that came
// after the request stopped waiting.
func (m *Module) Handle(_ context.Context, msg sdk.Message) error {
	if msg.IsReply() {
		m.metrics.late.Inc()
		return nil
	}
	node, _, err := message.ToEdge(msg.Route.Resource)
	if err != nil {
		return nil // not a node event: nothing to do
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.nodes[node]
	switch msg.Route.Operation {
	case message.OpConnected:
		if l == nil {
			l = &link{}
			l.ctx, l.cancel = context.WithCancel(context.Background())
			m.nodes[node] = l
		}
		l.conns++
	case message.OpDisconnected:
		if l == nil {
			return nil
		}
		if l.conns--; l.conns <= 0 {
			l.cancel()
			delete(m.nodes, node)
		}
	}
	return nil
}

// online returns a context that ends when node disconnects, or false when it is not connected.
func (m *Module) online(node string) (context.Context, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.nodes[node]
	if !ok {
		return nil, false
	}
	return l.ctx, true
}

// ServeHTTP serves /nodes/<node>/ports/<port>/<path...>.
func (m *Module) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code := m.serve(w, r)
	m.metrics.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

func fail(w http.ResponseWriter, code int, reason, format string, args ...any) int {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if reason != "" {
		w.Header().Set(ReasonHeader, reason)
	}
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, format+"\n", args...)
	return code
}

func (m *Module) serve(w http.ResponseWriter, r *http.Request) int {
	if !m.InsecureNoAuth {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), m.token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kedge-cloudbus"`)
			return fail(w, http.StatusUnauthorized, "", "unauthorized: a valid bearer token is required")
		}
	}
	node, port, path, err := parsePath(r.URL.EscapedPath())
	if err != nil {
		return fail(w, http.StatusNotFound, "", "%v", err)
	}
	// A node not connected here may be held by another replica: cloudhub forwards the request there,
	// or answers node_offline at once when no replica holds it.
	linkCtx, local := m.online(node)
	if !local {
		linkCtx = context.Background()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, m.MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fail(w, http.StatusRequestEntityTooLarge, "", "request body exceeds maxRequestBytes (%d bytes)", m.MaxRequestBytes)
		}
		return fail(w, http.StatusBadRequest, "", "reading the request body: %v", err)
	}
	hdr := r.Header.Clone()
	hdr.Del("Authorization") // the endpoint's credential is not the edge service's
	deadline := time.Now().Add(m.Timeout)
	res := message.Resource{Node: node, Namespace: "-", Type: resourceType, Name: strconv.Itoa(port)}.Cloud()
	msg, err := message.New(Name, group, opRequest, res).WithContent(request{
		Method: r.Method, Path: path, Query: r.URL.RawQuery, Headers: hdr, Body: body, Deadline: deadline.UnixMilli(),
	})
	if err != nil {
		return fail(w, http.StatusInternalServerError, "", "encode the request: %v", err)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	stop := context.AfterFunc(linkCtx, func() { cancel(errNodeGone) })
	defer stop()
	reply, err := m.host.SendSync(ctx, m.HubModule, msg, m.Timeout)
	switch {
	case errors.Is(context.Cause(ctx), errNodeGone):
		return fail(w, http.StatusServiceUnavailable, "node_offline", "node %q disconnected before it answered (the request is not made later: its deadline passes first)", node)
	case errors.Is(err, sdk.ErrUnknownModule):
		return fail(w, http.StatusServiceUnavailable, "", "module %s (hubModule) is not running", m.HubModule)
	case errors.Is(err, context.DeadlineExceeded):
		return fail(w, http.StatusGatewayTimeout, "timeout", "node %q did not answer within %s", node, m.Timeout)
	case err != nil:
		return fail(w, http.StatusBadGateway, "", "node %q: %v", node, err)
	}
	if reply.Route.Operation == message.OpError {
		var ref refusal
		if err := reply.DecodeContent(&ref); err != nil || ref.Error == "" {
			return fail(w, http.StatusBadGateway, "", "node %q refused the request: %s", node, reply.Content)
		}
		code, ok := statusOf[ref.Reason]
		if !ok {
			code = http.StatusBadGateway
		}
		if ref.Reason == "node_offline" { // cloudhub's answer: "is not connected to ..."
			return fail(w, code, ref.Reason, "node %q %s", node, ref.Error)
		}
		return fail(w, code, ref.Reason, "node %q: %s", node, ref.Error)
	}
	var resp response
	if err := reply.DecodeContent(&resp); err != nil {
		return fail(w, http.StatusBadGateway, "", "node %q: its answer does not decode: %v", node, err)
	}
	if resp.Status < 100 || resp.Status > 999 {
		return fail(w, http.StatusBadGateway, "", "node %q: its answer has status %d", node, resp.Status)
	}
	for k, vs := range resp.Headers {
		if k = http.CanonicalHeaderKey(k); k == "Content-Length" || k == "Connection" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
	return resp.Status
}

var errNodeGone = errors.New("node disconnected")

// parsePath splits /nodes/<node>/ports/<port>/<path...> (escaped); the path on the edge keeps its
// escaping and is "/" when absent.
func parsePath(p string) (node string, port int, path string, err error) {
	const want = "want /nodes/<node>/ports/<port>/<path>"
	rest, ok := strings.CutPrefix(p, "/nodes/")
	if !ok {
		return "", 0, "", fmt.Errorf("path %q: %s", p, want)
	}
	segs := strings.SplitN(rest, "/", 4)
	if len(segs) < 3 || segs[0] == "" || segs[1] != "ports" {
		return "", 0, "", fmt.Errorf("path %q: %s", p, want)
	}
	node = segs[0]
	if strings.ContainsAny(node, "%") {
		return "", 0, "", fmt.Errorf("path %q: node name %q must not be escaped", p, node)
	}
	port, err = strconv.Atoi(segs[2])
	if err != nil || port < 1 || port > 65535 {
		return "", 0, "", fmt.Errorf("path %q: port %q is not a number in 1..65535", p, segs[2])
	}
	path = "/"
	if len(segs) == 4 {
		path += segs[3]
	}
	return node, port, path, nil
}
