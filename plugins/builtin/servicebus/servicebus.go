// Package servicebus lets the cloud call HTTP services that run on the edge node: a request message
// from the cloud (group "func") becomes an HTTP call to 127.0.0.1:<port>, and its answer is the reply.
// Only ports on the allow-list are reachable (none by default), each call has a timeout, and a
// response larger than the limit is refused rather than cut.
package servicebus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address; its group is "func" (edgehub's dispatch sends that group here).
const Name = "servicebus"

// Wire format, shared with the cloud module by documentation (see README), not by import.
const (
	// Group of ServiceBus messages.
	Group = "func"
	// OpRequest is the operation of a request from the cloud.
	OpRequest = "request"
	// ResourceType is the type segment of the resource: <namespace>/servicebus/<port> on the edge
	// (the namespace is "-"), node/<node>/-/servicebus/<port> on the cloud.
	ResourceType = "servicebus"
)

// Reasons of refusals, carried in an error reply's "reason" so the cloud can choose an HTTP status.
const (
	ReasonPortNotAllowed = "port_not_allowed"
	ReasonBadRequest     = "bad_request"
	ReasonUnreachable    = "unreachable"
	ReasonTimeout        = "timeout"
	ReasonTooLarge       = "too_large"
	ReasonExpired        = "expired"
)

// Request is the content of a request message.
type Request struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`            // escaped path, starting with "/"
	Query   string      `json:"query,omitempty"` // raw query, without "?"
	Headers http.Header `json:"headers,omitempty"`
	Body    []byte      `json:"body,omitempty"` // base64 in JSON
	// Deadline (Unix milliseconds, the cloud's clock) after which nobody waits for the answer: a
	// request that reaches the edge later (it was queued while the node was offline) is not made.
	Deadline int64 `json:"deadline,omitempty"`
}

// Response is the content of a successful reply.
type Response struct {
	Status  int         `json:"status"`
	Headers http.Header `json:"headers,omitempty"`
	Body    []byte      `json:"body,omitempty"` // base64 in JSON
}

// Refusal is the content of an error reply (operation "error").
type Refusal struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

func init() {
	sdk.Register(sdk.Info{
		Name:    Name,
		Group:   Group,
		Doc:     "Lets the cloud call HTTP services on this node (127.0.0.1:<port>, allow-listed ports only) through the hub.",
		Enabled: true,
		New:     func() sdk.Module { return New() },
	})
}

// Module is servicebus; its exported fields are its settings.
type Module struct {
	AllowedPorts     []int         `yaml:"allowedPorts" doc:"Local ports the cloud may call on 127.0.0.1; empty: none (every request is refused)." cfg:"min"`
	Timeout          time.Duration `yaml:"timeout" doc:"Longest time one HTTP call may take, response body included (keep it below edgehub's handleTimeout)."`
	MaxResponseBytes int64         `yaml:"maxResponseBytes" doc:"Largest response body passed back to the cloud; a larger one is refused, not cut."`
	MaxClockSkew     time.Duration `yaml:"maxClockSkew" doc:"A request whose cloud-set deadline passed more than this ago (by the edge's clock) is refused as expired and not made."`
	Concurrency      int           `yaml:"concurrency" doc:"HTTP calls made at once; one slow service does not hold up the others (further requests wait their turn)."`

	host    sdk.Host
	life    context.Context
	slots   chan struct{}
	wg      sync.WaitGroup
	client  *http.Client
	metrics *metrics
	allowed map[int]bool
}

var _ sdk.Module = (*Module)(nil)

// maxBody keeps a base64-encoded body well inside the hub's message limit.
const maxBody = message.MaxSize / 2

// New returns servicebus with its defaults: nothing allowed.
func New() *Module {
	return &Module{Timeout: 10 * time.Second, MaxResponseBytes: 1 << 20, MaxClockSkew: 5 * time.Second, Concurrency: 16}
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	m.life = ctx
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	m.slots = make(chan struct{}, m.Concurrency)
	m.allowed = map[int]bool{}
	for _, p := range m.AllowedPorts {
		m.allowed[p] = true
	}
	var err error
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	m.host = h
	dialer := &net.Dialer{Timeout: m.Timeout}
	m.client = &http.Client{
		Transport: &http.Transport{
			Proxy: nil, // never through a proxy from the environment: the call is to this node only
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true, // pass bodies through as the service sent them
		},
		// A redirect could lead anywhere (another port, another host): the cloud gets it as is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if len(m.allowed) == 0 {
		h.Logger().Info("no ports allowed: every request from the cloud is refused (set allowedPorts)")
	} else {
		h.Logger().Info("serving cloud requests", "allowedPorts", slices.Sorted(func(yield func(int) bool) {
			for p := range m.allowed {
				if !yield(p) {
					return
				}
			}
		}), "timeout", m.Timeout, "maxResponseBytes", m.MaxResponseBytes)
	}
	return nil
}

func (m *Module) Stop(context.Context) error {
	m.wg.Wait()
	if m.client != nil {
		m.client.CloseIdleConnections()
	}
	return nil
}

// refusal is a request the module does not make or whose call failed.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }

func refuse(reason, format string, args ...any) *refusal {
	return &refusal{reason: reason, err: fmt.Errorf(format, args...)}
}

// Handle makes the HTTP call a request asks for and replies with its answer or a refusal.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	if msg.IsReply() {
		return nil // nothing here sends requests; a stray answer is dropped
	}
	select {
	case m.slots <- struct{}{}: // answered from its own goroutine (the reply keeps the request's ID)
		m.wg.Go(func() {
			defer func() { <-m.slots }()
			if err := m.serve(m.life, msg); err != nil {
				m.host.Logger().Warn("request from the cloud not answered", "msg", msg.String(), "err", err)
			}
		})
		return nil
	default: // every slot busy: this request waits its turn here (backpressure on the mailbox)
		return m.serve(ctx, msg)
	}
}

// serve makes one request's call and answers it.
func (m *Module) serve(ctx context.Context, msg sdk.Message) error {
	start := time.Now()
	var reply sdk.Message
	resp, ref := m.call(ctx, msg)
	if ref != nil {
		m.metrics.requests.WithLabelValues(ref.reason).Inc()
		m.host.Logger().Info("request from the cloud refused", "msg", msg.String(), "reason", ref.reason, "err", ref.err)
		reply, _ = msg.Reply(Name, Refusal{Error: ref.Error(), Reason: ref.reason}) // strings always encode
		reply.Route.Operation = message.OpError
	} else {
		m.metrics.requests.WithLabelValues("ok").Inc()
		var err error
		if reply, err = msg.Reply(Name, resp); err != nil {
			return fmt.Errorf("servicebus: encode the answer to %s: %w", msg.Header.ID, err)
		}
	}
	m.metrics.seconds.Observe(time.Since(start).Seconds())
	if err := m.host.Reply(ctx, reply); err != nil && !errors.Is(err, sdk.ErrNoWaiter) {
		return fmt.Errorf("servicebus: reply to %s: %w", msg.Header.ID, err)
	}
	return nil
}

// call checks msg and makes its HTTP call.
func (m *Module) call(ctx context.Context, msg sdk.Message) (Response, *refusal) {
	if msg.Route.Operation != OpRequest {
		return Response{}, refuse(ReasonBadRequest, "operation %q is not %q", msg.Route.Operation, OpRequest)
	}
	port, ref := parseResource(msg.Route.Resource)
	if ref != nil {
		return Response{}, ref
	}
	if !m.allowed[port] {
		return Response{}, refuse(ReasonPortNotAllowed, "port %d is not in servicebus allowedPorts on this node", port)
	}
	req, ref := decodeRequest(msg)
	if ref != nil {
		return Response{}, ref
	}
	if req.Deadline > 0 {
		if late := time.Since(time.UnixMilli(req.Deadline)); late > m.MaxClockSkew {
			return Response{}, refuse(ReasonExpired, "request reached the edge %s after its deadline; not made", late.Round(time.Millisecond))
		}
	}
	u := &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), RawQuery: req.Query}
	p, err := url.Parse(req.Path)
	if err != nil || p.Scheme != "" || p.Host != "" || p.RawQuery != "" || p.Fragment != "" || !strings.HasPrefix(p.Path, "/") {
		return Response{}, refuse(ReasonBadRequest, "path %q must be an absolute path starting with / (no scheme, host, query or fragment)", req.Path)
	}
	u.Path, u.RawPath = p.Path, p.RawPath
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, req.Method, u.String(), bytes.NewReader(req.Body))
	if err != nil {
		return Response{}, refuse(ReasonBadRequest, "build the HTTP request: %v", err)
	}
	named := connectionTokens(req.Headers)
	for k, vs := range req.Headers {
		if hopByHop(k) || named[http.CanonicalHeaderKey(k)] {
			continue
		}
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	hresp, err := m.client.Do(hreq)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return Response{}, refuse(ReasonTimeout, "%s %s on port %d: no answer within %s", req.Method, req.Path, port, m.Timeout)
		}
		return Response{}, refuse(ReasonUnreachable, "%s %s on port %d: %v", req.Method, req.Path, port, err)
	}
	defer hresp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(hresp.Body, m.MaxResponseBytes+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return Response{}, refuse(ReasonTimeout, "%s %s on port %d: response body not complete within %s", req.Method, req.Path, port, m.Timeout)
		}
		return Response{}, refuse(ReasonUnreachable, "%s %s on port %d: reading the response body: %v", req.Method, req.Path, port, err)
	}
	if int64(len(body)) > m.MaxResponseBytes {
		return Response{}, refuse(ReasonTooLarge, "%s %s on port %d: response body exceeds maxResponseBytes (%d bytes)", req.Method, req.Path, port, m.MaxResponseBytes)
	}
	h := http.Header{}
	named = connectionTokens(hresp.Header)
	for k, vs := range hresp.Header {
		if !hopByHop(k) && !named[k] {
			h[k] = vs
		}
	}
	return Response{Status: hresp.StatusCode, Headers: h, Body: body}, nil
}

// parseResource reads the port from <namespace>/servicebus/<port>.
func parseResource(res string) (int, *refusal) {
	r, err := message.ParseEdge(res)
	if err != nil {
		return 0, refuse(ReasonBadRequest, "resource: %v", err)
	}
	if r.Type != ResourceType || r.Name == "" {
		return 0, refuse(ReasonBadRequest, "resource %q: want <namespace>/%s/<port>", res, ResourceType)
	}
	port, err := strconv.Atoi(r.Name)
	if err != nil || port < 1 || port > 65535 {
		return 0, refuse(ReasonBadRequest, "resource %q: port %q is not a number in 1..65535", res, r.Name)
	}
	return port, nil
}

func decodeRequest(msg sdk.Message) (Request, *refusal) {
	var req Request
	if len(msg.Content) == 0 {
		return req, refuse(ReasonBadRequest, "no content: want {\"method\",\"path\",\"query\",\"headers\",\"body\"}")
	}
	dec := json.NewDecoder(bytes.NewReader(msg.Content))
	if err := dec.Decode(&req); err != nil {
		return req, refuse(ReasonBadRequest, "content is not a request object {\"method\",\"path\",\"query\",\"headers\",\"body\"(base64)}: %v", err)
	}
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	if req.Path == "" {
		req.Path = "/"
	}
	return req, nil
}

// hopByHop names headers that describe one connection, not the message (RFC 9110 7.6.1), and Host.
func hopByHop(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host":
		return true
	}
	return false
}

// connectionTokens are the headers a Connection header names as hop-by-hop.
func connectionTokens(h http.Header) map[string]bool {
	out := map[string]bool{}
	for k, vs := range h {
		if http.CanonicalHeaderKey(k) != "Connection" {
			continue
		}
		for _, v := range vs {
			for _, tok := range strings.Split(v, ",") {
				if tok = strings.TrimSpace(tok); tok != "" {
					out[http.CanonicalHeaderKey(tok)] = true
				}
			}
		}
	}
	return out
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
