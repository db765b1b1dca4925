package servicebus

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// port returns the port of an httptest server.
func port(t *testing.T, srv *httptest.Server) int {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, cfg map[string]any) *sdktest.Harness {
	t.Helper()
	info, ok := sdk.Lookup(Name)
	if !ok {
		t.Fatal("servicebus is not registered")
	}
	return sdktest.Run(t, info, cfg)
}

func request(t *testing.T, resource string, content any) sdk.Message {
	t.Helper()
	m, err := message.New(sdktest.Source, Group, OpRequest, resource).WithContent(content)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func resource(p int) string { return "-/" + ResourceType + "/" + strconv.Itoa(p) }

// ask sends m and returns the reply: the response, or the refusal when the reply is an error.
func ask(t *testing.T, h *sdktest.Harness, m sdk.Message) (Response, *Refusal) {
	t.Helper()
	reply, err := h.SendSync(m, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Route.Operation == message.OpError {
		var r Refusal
		if err := reply.DecodeContent(&r); err != nil {
			t.Fatal(err)
		}
		return Response{}, &r
	}
	if reply.Route.Operation != message.OpResponse {
		t.Fatalf("reply operation %q, want response or error", reply.Route.Operation)
	}
	var resp Response
	if err := reply.DecodeContent(&resp); err != nil {
		t.Fatal(err)
	}
	return resp, nil
}

func TestRequestRoundTripCarriesMethodPathQueryHeadersAndBinaryBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo-Method", r.Method)
		w.Header().Set("X-Echo-Path", r.URL.EscapedPath())
		w.Header().Set("X-Echo-Query", r.URL.RawQuery)
		w.Header().Set("X-Echo-Header", r.Header.Get("X-Custom"))
		w.Header().Set("X-Echo-Connection", r.Header.Get("X-Hop"))
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(append([]byte("got:"), body...))
	}))
	defer srv.Close()
	p := port(t, srv)
	h := run(t, map[string]any{"allowedPorts": []any{p}})

	body := []byte{0, 1, 2, 0xff, '\n', '"'}
	resp, ref := ask(t, h, request(t, resource(p), Request{
		Method: "POST", Path: "/a%2Fb/c", Query: "x=1&y=%20",
		Headers: http.Header{"X-Custom": {"v1"}, "Connection": {"X-Hop"}, "X-Hop": {"kept"}},
		Body:    body,
	}))
	if ref != nil {
		t.Fatalf("refused: %+v", ref)
	}
	if resp.Status != http.StatusCreated {
		t.Errorf("status %d, want 201", resp.Status)
	}
	for k, want := range map[string]string{"X-Echo-Method": "POST", "X-Echo-Path": "/a%2Fb/c", "X-Echo-Query": "x=1&y=%20", "X-Echo-Header": "v1", "X-Echo-Connection": ""} {
		if got := resp.Headers.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := resp.Headers.Values("X-Multi"); strings.Join(got, ",") != "a,b" {
		t.Errorf("X-Multi = %v, want [a b]", got)
	}
	if want := append([]byte("got:"), body...); !bytes.Equal(resp.Body, want) {
		t.Errorf("body %q, want %q", resp.Body, want)
	}
}

func TestRedirectsArePassedBackNotFollowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://example.invalid/elsewhere", http.StatusFound)
	}))
	defer srv.Close()
	p := port(t, srv)
	h := run(t, map[string]any{"allowedPorts": []any{p}})
	resp, ref := ask(t, h, request(t, resource(p), Request{Method: "GET", Path: "/"}))
	if ref != nil || resp.Status != http.StatusFound || resp.Headers.Get("Location") != "http://example.invalid/elsewhere" {
		t.Fatalf("got %+v refused %+v, want the 302 itself", resp, ref)
	}
}

func TestRefusals(t *testing.T) {
	release := make(chan struct{})
	var calls = make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls <- r.URL.Path
		switch r.URL.Path {
		case "/slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/big":
			_, _ = w.Write(bytes.Repeat([]byte("x"), 1025))
		case "/limit":
			_, _ = w.Write(bytes.Repeat([]byte("x"), 1024))
		}
	}))
	defer srv.Close()
	defer close(release)
	p := port(t, srv)
	// A port that was free a moment ago: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().(*net.TCPAddr).Port
	l.Close()
	h := run(t, map[string]any{"allowedPorts": []any{p, dead}, "timeout": "300ms", "maxResponseBytes": 1024})

	raw := func(content string) sdk.Message {
		m := message.New(sdktest.Source, Group, OpRequest, resource(p))
		m.Content = json.RawMessage(content)
		return m
	}
	withOp := func(op string) sdk.Message {
		m := request(t, resource(p), Request{Path: "/"})
		m.Route.Operation = op
		return m
	}
	tests := []struct {
		name       string
		msg        sdk.Message
		wantReason string
		wantText   string
		reachesSrv bool
	}{
		{"a port not on the allow-list is refused", request(t, resource(p+1), Request{Path: "/"}), ReasonPortNotAllowed, "not in servicebus allowedPorts", false},
		{"a port outside 1..65535 is a bad request", request(t, "-/servicebus/70000", Request{Path: "/"}), ReasonBadRequest, "not a number in 1..65535", false},
		{"a resource of another type is a bad request", request(t, "-/pod/80", Request{Path: "/"}), ReasonBadRequest, "want <namespace>/servicebus/<port>", false},
		{"a resource without a port is a bad request", request(t, "-/servicebus", Request{Path: "/"}), ReasonBadRequest, "want <namespace>/servicebus/<port>", false},
		{"another operation is a bad request", withOp("update"), ReasonBadRequest, `operation "update" is not "request"`, false},
		{"content that is not JSON is a bad request", raw(`GET / HTTP/1.1`), ReasonBadRequest, "content is not a request object", false},
		{"content that is a JSON string is a bad request", raw(`"GET /"`), ReasonBadRequest, "content is not a request object", false},
		{"content that is a JSON array is a bad request", raw(`[1,2]`), ReasonBadRequest, "content is not a request object", false},
		{"a body that is not base64 is a bad request", raw(`{"path":"/","body":"not base64!"}`), ReasonBadRequest, "content is not a request object", false},
		{"no content is a bad request", raw(``), ReasonBadRequest, "no content", false},
		{"an absolute URL as path is a bad request", request(t, resource(p), Request{Path: "http://10.0.0.1/x"}), ReasonBadRequest, "must be an absolute path", false},
		{"a path without a leading slash is a bad request", request(t, resource(p), Request{Path: "x"}), ReasonBadRequest, "must be an absolute path", false},
		{"a malformed method is a bad request", request(t, resource(p), Request{Method: "GE T", Path: "/"}), ReasonBadRequest, "invalid method", false},
		{"a request past its deadline is not made", request(t, resource(p), Request{Path: "/expired", Deadline: time.Now().Add(-time.Minute).UnixMilli()}), ReasonExpired, "after its deadline", false},
		{"a port where nothing listens is unreachable", request(t, resource(dead), Request{Path: "/"}), ReasonUnreachable, "connection refused", false},
		{"a service slower than the timeout times out", request(t, resource(p), Request{Path: "/slow"}), ReasonTimeout, "no answer within 300ms", true},
		{"a response over maxResponseBytes is refused, not cut", request(t, resource(p), Request{Path: "/big"}), ReasonTooLarge, "exceeds maxResponseBytes (1024 bytes)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for len(calls) > 0 {
				<-calls
			}
			_, ref := ask(t, h, tt.msg)
			if ref == nil {
				t.Fatal("answered, want a refusal")
			}
			if ref.Reason != tt.wantReason || !strings.Contains(ref.Error, tt.wantText) {
				t.Fatalf("refusal %+v, want reason %s with %q", ref, tt.wantReason, tt.wantText)
			}
			if got := len(calls) > 0; got != tt.reachesSrv {
				t.Fatalf("service called: %v, want %v", got, tt.reachesSrv)
			}
		})
	}
	t.Run("a response of exactly maxResponseBytes is passed", func(t *testing.T) {
		resp, ref := ask(t, h, request(t, resource(p), Request{Path: "/limit"}))
		if ref != nil || len(resp.Body) != 1024 {
			t.Fatalf("got %d bytes, refusal %+v", len(resp.Body), ref)
		}
	})
	t.Run("refusals are counted by reason", func(t *testing.T) {
		want := map[string]float64{ReasonPortNotAllowed: 1, ReasonBadRequest: 12, ReasonExpired: 1, ReasonUnreachable: 1, ReasonTimeout: 1, ReasonTooLarge: 1, "ok": 1}
		got := map[string]float64{}
		mfs, err := h.Metrics.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "kedge_servicebus_requests_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" {
						got[l.GetValue()] = m.GetCounter().GetValue()
					}
				}
			}
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("requests{result=%s} = %v, want %v (all: %v)", k, got[k], v, got)
			}
		}
	})
}

func TestNothingIsAllowedByDefault(t *testing.T) {
	var called atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) }))
	defer srv.Close()
	h := run(t, nil)
	_, ref := ask(t, h, request(t, resource(port(t, srv)), Request{Path: "/"}))
	if ref == nil || ref.Reason != ReasonPortNotAllowed || called.Load() {
		t.Fatalf("refusal %+v, service called %v: want port_not_allowed and no call", ref, called.Load())
	}
}
