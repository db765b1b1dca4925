package hublink

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudbus"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/plugins/builtin/edgehub"
	"github.com/kedge-io/kedge/plugins/builtin/servicebus"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/test/faultproxy"
)

const busToken = "bus-token-for-tests"

// busLink is a cloud (cloudhub + cloudbus) and an edge (metamanager + edgehub + servicebus) joined
// through a fault proxy, and an HTTP service on the edge side whose port servicebus allows.
type busLink struct {
	*link
	bus      *cloudbus.Module
	svcPort  int
	endpoint string
}

func newBusLink(t *testing.T, svc http.Handler) *busLink {
	t.Helper()
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	svcPort, _ := strconv.Atoi(u.Port())

	l := &link{t: t, dir: t.TempDir(), hbeat: 500 * time.Millisecond,
		edged: &recorder{name: "edged"}, edgeEvts: &recorder{name: "edgeevents"}}
	hub := cloudhub.New()
	hub.Address, hub.CertServerAddress, hub.PKIDir = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(l.dir, "pki")
	hub.Heartbeat, hub.AckTimeout, hub.QPS, hub.Burst = l.hbeat, time.Second, 1e6, 1e6
	l.hub = hub
	bus := cloudbus.New()
	bus.Address, bus.Token, bus.Timeout = "127.0.0.1:0", busToken, 2*time.Minute // a hang would show as a 504 after 2 minutes
	l.cloud = startHost(t, "cloudcore-test", filepath.Join(l.dir, "cloud.db"), []modules.Planned{
		{Info: sdk.Info{Name: cloudhub.Name, Group: "hub"}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: hub},
		{Info: sdk.Info{Name: cloudbus.Name, Group: "hubevents", Requires: []string{cloudhub.Name}}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: bus},
	})
	t.Cleanup(func() { l.cloud.stop() })

	ca, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: filepath.Join(l.dir, "pki")})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := pki.CreateToken(context.Background(), ca, pki.FileRecords{Dir: filepath.Join(l.dir, "pki")}, pki.TokenOptions{TTL: time.Hour, Node: nodeName})
	if err != nil {
		t.Fatal(err)
	}
	l.certs, err = pki.Join(context.Background(), pki.JoinOptions{CertServer: hub.CertServerAddress, Token: tok.String(), NodeName: nodeName, Dir: filepath.Join(l.dir, "certs")})
	if err != nil {
		t.Fatal(err)
	}
	l.proxy, err = faultproxy.New(hub.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.proxy.Close() })

	mm, _ := sdk.Lookup("metamanager")
	mmPlan, err := modules.Plan("test", map[string]any{"modules": map[string]any{"metamanager": map[string]any{
		"consumers": map[string]any{"item": "edged"}}}}, nil, []sdk.Info{mm}, nil)
	if err != nil {
		t.Fatal(err)
	}
	eh := edgehub.New()
	eh.Server = "localhost:" + strings.Split(l.proxy.Addr(), ":")[1]
	eh.CAFile, eh.CertFile, eh.KeyFile = l.certs.CAFile, l.certs.CertFile, l.certs.KeyFile
	eh.Heartbeat, eh.AckTimeout, eh.BackoffMin, eh.BackoffMax = l.hbeat, time.Second, 10*time.Millisecond, 200*time.Millisecond
	sb := servicebus.New()
	sb.AllowedPorts, sb.Timeout = []int{svcPort}, 3*time.Second
	l.edge = startHost(t, nodeName, filepath.Join(l.dir, "edge.db"), []modules.Planned{
		recorderInfo(l.edged, "edged"),
		recorderInfo(l.edgeEvts, "hubevents"),
		mmPlan[0],
		{Info: sdk.Info{Name: servicebus.Name, Group: servicebus.Group}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: sb},
		{Info: sdk.Info{Name: edgehub.Name, Group: "hub", Requires: []string{"metamanager"}}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: eh},
	})
	t.Cleanup(func() { l.edge.stop() })
	bl := &busLink{link: l, bus: bus, svcPort: svcPort, endpoint: "http://" + bus.Addr()}
	bl.waitOnline()
	return bl
}

// call makes one request to the cloud endpoint.
func (b *busLink) call(method, path string, body []byte, hdr http.Header) (*http.Response, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.endpoint+path, bytes.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header = hdr.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+busToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp, got
}

func (b *busLink) svc(path string) string {
	return "/nodes/" + nodeName + "/ports/" + strconv.Itoa(b.svcPort) + path
}

// waitOnline waits until the cloud endpoint takes the node for connected.
func (b *busLink) waitOnline() {
	b.t.Helper()
	b.waitEdge("the cloud endpoint to see the node connected", func() bool {
		resp, _ := b.call("GET", "/nodes/"+nodeName+"/ports/1/", nil, nil)
		return resp.Header.Get(cloudbus.ReasonHeader) != "node_offline"
	})
}

func TestServiceBusRoundTripFromTheCloudEndpointToAnEdgeService(t *testing.T) {
	b := newBusLink(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen-Path", r.URL.EscapedPath())
		w.Header().Set("X-Seen-Query", r.URL.RawQuery)
		w.Header().Set("X-Seen-Method", r.Method)
		w.Header().Set("X-Seen-Custom", r.Header.Get("X-Custom"))
		w.Header().Set("X-Seen-Authorization", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(append([]byte("edge says: "), body...))
	}))
	payload := []byte{0, 1, 2, 0xfe, 0xff, 'h', 'i'}
	resp, body := b.call("POST", b.svc("/api/v1/things%2F1?a=1&b=two"), payload, http.Header{"X-Custom": {"c1"}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d (%s), want 202 from the edge service", resp.StatusCode, body)
	}
	for k, want := range map[string]string{"X-Seen-Path": "/api/v1/things%2F1", "X-Seen-Query": "a=1&b=two", "X-Seen-Method": "POST",
		"X-Seen-Custom": "c1", "X-Seen-Authorization": ""} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if want := append([]byte("edge says: "), payload...); !bytes.Equal(body, want) {
		t.Errorf("body %q, want %q", body, want)
	}

	t.Run("a port not on the edge's allow-list is 403 with the edge's reason", func(t *testing.T) {
		resp, body := b.call("GET", "/nodes/"+nodeName+"/ports/1/x", nil, nil)
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get(cloudbus.ReasonHeader) != servicebus.ReasonPortNotAllowed ||
			!strings.Contains(string(body), "port 1 is not in servicebus allowedPorts") {
			t.Fatalf("status %d reason %q body %q, want 403 port_not_allowed", resp.StatusCode, resp.Header.Get(cloudbus.ReasonHeader), body)
		}
	})
	t.Run("a request without the bearer token is 401 and reaches no node", func(t *testing.T) {
		resp, _ := b.call("GET", b.svc("/"), nil, http.Header{"Authorization": {"Bearer wrong"}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", resp.StatusCode)
		}
	})
	t.Run("a path outside /nodes/<node>/ports/<port>/ is 404", func(t *testing.T) {
		resp, body := b.call("GET", "/nodes/"+nodeName+"/port/80/", nil, nil)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "want /nodes/<node>/ports/<port>/<path>") {
			t.Fatalf("status %d body %q, want 404 naming the form", resp.StatusCode, body)
		}
	})
	t.Run("a node never connected is 503 at once", func(t *testing.T) {
		resp, body := b.call("GET", "/nodes/no-such-node/ports/80/", nil, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `node "no-such-node" is not connected`) {
			t.Fatalf("status %d body %q, want 503 not connected", resp.StatusCode, body)
		}
	})
}

func TestServiceBusNodeOfflineIsAClear503NotAHang(t *testing.T) {
	started := make(chan struct{}, 1)
	b := newBusLink(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-r.Context().Done() // answers only when the edge gives up
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))

	// A request in flight when the node drops off: answered 503 when the link goes, not after the
	// cloud's 2-minute timeout.
	type result struct {
		code   int
		reason string
		body   string
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", b.endpoint+b.svc("/slow"), nil)
		req.Header.Set("Authorization", "Bearer "+busToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, resp.Header.Get(cloudbus.ReasonHeader), string(body)}
	}()
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("the slow request never reached the edge service")
	}
	b.proxy.Refuse(true)
	b.proxy.Cut()
	select {
	case r := <-done:
		if r.code != http.StatusServiceUnavailable || r.reason != "node_offline" || !strings.Contains(r.body, "disconnected before it answered") {
			t.Fatalf("in-flight request: %+v, want 503 node_offline", r)
		}
	case <-time.After(time.Minute):
		t.Fatal("the in-flight request hangs after the node went offline")
	}

	// While offline: refused at once with 503.
	resp, body := b.call("GET", b.svc("/"), nil, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "is not connected to this cloudcore") {
		t.Fatalf("offline node: status %d body %q, want 503 not connected", resp.StatusCode, body)
	}

	// Back online: served again.
	b.proxy.Refuse(false)
	b.waitOnline()
	resp, body = b.call("GET", b.svc("/"), nil, nil)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("after reconnect: status %d body %q, want 200 ok", resp.StatusCode, body)
	}
}

// A slow edge service holds up neither the node's objects nor other service calls: edgehub hands
// servicebus requests over beside its other messages, and servicebus makes calls concurrently.
func TestSlowEdgeServiceHoldsUpNeitherObjectsNorOtherCalls(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	b := newBusLink(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	}))
	slowDone := make(chan int, 1)
	go func() {
		resp, _ := b.call("GET", b.svc("/slow"), nil, nil)
		slowDone <- resp.StatusCode
	}()
	select { // the slow call is in the edge service before anything else is sent
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the slow call never reached the edge service")
	}
	ctx := context.Background()
	if err := b.cloud.rt.Send(ctx, "cloudhub", object("test", nodeName, "default/item/while-slow", 1)); err != nil {
		t.Fatal(err)
	}
	b.waitEdge("the object stored while the slow call is still running", func() bool { return b.edged.count("") >= 1 })
	resp, body := b.call("GET", b.svc("/fast"), nil, nil)
	if resp.StatusCode != http.StatusOK || string(body) != "done /fast" {
		t.Fatalf("a fast call while the slow one runs: %d %q", resp.StatusCode, body)
	}
	select {
	case code := <-slowDone:
		t.Fatalf("the slow call finished (%d) before it was released: the test proves nothing", code)
	default:
	}
	close(release)
	if code := <-slowDone; code != http.StatusOK {
		t.Fatalf("the slow call: %d", code)
	}
}
