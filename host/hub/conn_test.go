package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/kedge-io/kedge/host/hub/internal/testca"
	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/test/faultproxy"
)

// quiet keeps expected warnings (rejected frames, dead peers) out of the test output.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testHub is a real TLS server on 127.0.0.1 whose handler is Accept.
type testHub struct {
	srv     *httptest.Server
	ca      *testca.CA
	conns   chan *Conn
	errs    chan error
	metrics *Metrics
}

func startHub(t testing.TB, ca *testca.CA, o AcceptOptions) *testHub {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet
	}
	if o.Metrics == nil {
		o.Metrics, _ = NewMetrics(nil)
	}
	h := &testHub{ca: ca, conns: make(chan *Conn, 64), errs: make(chan error, 64), metrics: o.Metrics}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, o)
		if err != nil {
			h.errs <- err
			return
		}
		h.conns <- c
	}))
	h.srv.TLS = ca.ServerTLS(t)
	h.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused TLS handshakes are expected here
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	return h
}

func (h *testHub) addr() string { return h.srv.Listener.Addr().String() }

func (h *testHub) url(node string) string {
	return "wss://" + h.addr() + EventsPath(DefaultProjectID, node)
}

func (h *testHub) accepted(t testing.TB) *Conn {
	t.Helper()
	select {
	case c := <-h.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case err := <-h.errs:
		t.Fatalf("accept: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted within 10s")
	}
	return nil
}

// pair connects node "edge-1" to a fresh hub and returns both ends.
func pair(t testing.TB, edgeOpts, cloudOpts Options) (edge, cloud *Conn, h *testHub) {
	t.Helper()
	ca := testca.New(t)
	h = startHub(t, ca, AcceptOptions{Options: cloudOpts})
	edge = dialNode(t, h, h.url("edge-1"), "edge-1", edgeOpts)
	return edge, h.accepted(t), h
}

func dialNode(t testing.TB, h *testHub, url, node string, o Options) *Conn {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet
	}
	c, err := Dial(context.Background(), DialOptions{URL: url, TLS: h.ca.NodeTLS(t, h.ca, node), NodeID: node, Options: o})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t testing.TB, c *Conn) message.Message {
	t.Helper()
	type result struct {
		m   message.Message
		err error
	}
	ch := make(chan result, 1)
	go func() { m, err := c.Receive(context.Background()); ch <- result{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("receive: %v", r.err)
		}
		return r.m
	case <-time.After(20 * time.Second):
		t.Fatal("nothing received within 20s")
	}
	return message.Message{}
}

// receiveErr waits for Receive to fail, within a generous bound.
func receiveErr(t testing.TB, c *Conn) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Receive(context.Background()); err != nil {
				ch <- err
				return
			}
		}
	}()
	select {
	case err := <-ch:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Receive did not fail within 20s")
	}
	return nil
}

func TestMessagesFlowBothWaysOverMutualTLS(t *testing.T) {
	edge, cloud, h := pair(t, Options{}, Options{})
	ctx := context.Background()
	for _, m := range sampleMessages {
		if err := edge.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
		assertSameMessage(t, receive(t, cloud), m)
		if err := cloud.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
		assertSameMessage(t, receive(t, edge), m)
	}
	if cloud.Node() != "edge-1" || cloud.ProjectID() != DefaultProjectID {
		t.Errorf("cloud side sees node %q project %q", cloud.Node(), cloud.ProjectID())
	}
	if cn := cloud.PeerCertificates()[0].Subject.CommonName; cn != "system:node:edge-1" {
		t.Errorf("cloud side peer certificate CN %q", cn)
	}
	if cn := edge.PeerCertificates()[0].Subject.CommonName; cn != "cloudcore" {
		t.Errorf("edge side peer certificate CN %q", cn)
	}
	s := h.metrics.Stats()
	n := uint64(len(sampleMessages))
	if s.Messages != [2]uint64{n, n} || s.Frames != [2]uint64{2 * n, 2 * n} || s.Bytes[0] == 0 || s.Bytes[0] != s.Bytes[1] || s.Connections != 1 {
		t.Errorf("cloud metrics = %+v, want %d messages and equal bytes each way, 1 connection", s, n)
	}
}

func TestAcceptRefusesWhatTheCertificateDoesNotProve(t *testing.T) {
	ca := testca.New(t)
	h := startHub(t, ca, AcceptOptions{})
	other := testca.New(t)
	node := func(name string) *tls.Config { return ca.NodeTLS(t, ca, name) }
	for _, tc := range []struct {
		name   string
		tls    *tls.Config
		path   string
		header http.Header
		status int    // 0: the TLS handshake itself fails
		reason string // kedge_hub_rejected_total label
	}{
		{"node A's cert dialing as node B", node("edge-a"), EventsPath(DefaultProjectID, "edge-b"), nil, 403, "identity"},
		{"node_id header naming another node", node("edge-a"), EventsPath(DefaultProjectID, "edge-a"), http.Header{"node_id": {"edge-b"}}, 403, "identity"},
		{"CN is not a node", ca.ClientTLS(t, ca, pkix.Name{CommonName: "admin", Organization: []string{"system:nodes"}}), EventsPath(DefaultProjectID, "admin"), nil, 403, "cert"},
		{"O lacks system:nodes", ca.ClientTLS(t, ca, pkix.Name{CommonName: "system:node:edge-a", Organization: []string{"ops"}}), EventsPath(DefaultProjectID, "edge-a"), nil, 403, "cert"},
		{"path is not /<project>/<node>/events", node("edge-a"), "/edge-a/events", nil, 404, "path"},
		{"project_id header disagrees with the path", node("edge-a"), EventsPath("p1", "edge-a"), http.Header{"project_id": {"p2"}}, 400, "header"},
		{"stream connection use", node("edge-a"), EventsPath(DefaultProjectID, "edge-a"), http.Header{"ConnectionUse": {"str"}}, 400, "header"},
		{"certificate from another CA", other.NodeTLS(t, ca, "edge-a"), EventsPath(DefaultProjectID, "edge-a"), nil, 0, ""},
		{"no client certificate", &tls.Config{RootCAs: ca.Pool}, EventsPath(DefaultProjectID, "edge-a"), nil, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.metrics.Stats().Rejected[tc.reason]
			d := websocket.Dialer{TLSClientConfig: tc.tls, HandshakeTimeout: 10 * time.Second}
			ws, resp, err := d.Dial("wss://"+h.addr()+tc.path, tc.header)
			if err == nil {
				ws.Close()
				t.Fatal("handshake succeeded, want a refusal")
			}
			if tc.status == 0 {
				if resp != nil {
					t.Fatalf("got HTTP %d, want the TLS handshake to fail", resp.StatusCode)
				}
				return
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("response %v (err %v), want HTTP %d", resp, err, tc.status)
			}
			select {
			case err := <-h.errs:
				if !errors.Is(err, ErrRejected) {
					t.Fatalf("Accept error %v does not wrap ErrRejected", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Accept reported no error")
			}
			if got := h.metrics.Stats().Rejected[tc.reason]; got != before+1 {
				t.Fatalf("rejected{reason=%q} = %d, want %d", tc.reason, got, before+1)
			}
		})
	}
}

func TestDialChecksTheURLAgainstTheNodeBeforeConnecting(t *testing.T) {
	ca := testca.New(t)
	for _, tc := range []struct{ url, node string }{
		{"wss://127.0.0.1:1/p/edge-b/events", "edge-a"},
		{"ws://127.0.0.1:1/" + DefaultProjectID + "/edge-a/events", "edge-a"},
		{"wss://127.0.0.1:1/x/edge-a", "edge-a"},
		{"wss://127.0.0.1:1/", "Not_A_Node"},
	} {
		_, err := Dial(context.Background(), DialOptions{URL: tc.url, NodeID: tc.node, TLS: ca.NodeTLS(t, ca, "edge-a")})
		if err == nil || strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Dial(%s as %s) = %v, want a configuration error before any connection", tc.url, tc.node, err)
		}
	}
}

func TestDialBuildsTheEventsPathWhenTheURLHasNone(t *testing.T) {
	ca := testca.New(t)
	h := startHub(t, ca, AcceptOptions{})
	dialNode(t, h, "wss://"+h.addr(), "edge-7", Options{})
	if c := h.accepted(t); c.Node() != "edge-7" || c.ProjectID() != DefaultProjectID {
		t.Fatalf("accepted node %q project %q", c.Node(), c.ProjectID())
	}
}

// sizedMessage returns a message whose payload is exactly size bytes.
func sizedMessage(t testing.TB, size int) message.Message {
	m := message.Message{Header: message.Header{ID: "big", Timestamp: 1}, Route: message.Route{Operation: "update", Resource: "r"}}
	base, err := MarshalMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	// Content is a JSON string of n letters: a 1-byte tag, a k-byte length, n+2 bytes.
	for k := 1; k <= 5; k++ {
		n := size - len(base) - 1 - k - 2
		if n >= 0 && protowire.SizeVarint(uint64(n+2)) == k {
			m.Content = json.RawMessage(`"` + strings.Repeat("k", n) + `"`)
			return m
		}
	}
	t.Fatalf("cannot build a %d-byte payload", size)
	return m
}

func TestMessageAtTheSizeLimitIsDelivered(t *testing.T) {
	limit := 1 << 20
	if !testing.Short() {
		limit = MaxPayload // the real 32 MiB limit
	}
	edge, cloud, _ := pair(t, Options{MaxPayload: limit}, Options{MaxPayload: limit})
	m := sizedMessage(t, limit)
	if p, _ := MarshalMessage(nil, m); len(p) != limit {
		t.Fatalf("test message payload is %d bytes, want %d", len(p), limit)
	}
	sent := make(chan error, 1)
	go func() { sent <- edge.Send(context.Background(), m) }() // the receiver must read while it is written
	got := receive(t, cloud)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if len(got.Content) != len(m.Content) || got.Header.ID != "big" {
		t.Fatalf("received %d content bytes, want %d", len(got.Content), len(m.Content))
	}
}

func TestOversizedPayloadIsRefusedAndTheConnectionClosed(t *testing.T) {
	const limit = 64 << 10
	edge, cloud, h := pair(t, Options{}, Options{MaxPayload: limit})
	if err := edge.Send(context.Background(), sizedMessage(t, limit+1)); err != nil {
		t.Fatal(err) // the edge's own limit is the default 32 MiB
	}
	err := receiveErr(t, cloud)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("cloud Receive = %v, want ErrTooLarge", err)
	}
	if !errors.Is(cloud.Err(), ErrClosed) {
		t.Fatalf("cloud connection not closed: Err() = %v", cloud.Err())
	}
	if err := receiveErr(t, edge); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "1009") {
		t.Fatalf("edge Receive = %v, want closed by the peer with 1009 (message too big)", err)
	}
	if n := h.metrics.Stats().DecodeErrors["too_large"]; n != 1 {
		t.Fatalf("decode_errors{too_large} = %d, want 1", n)
	}
}

func TestSendRefusesAPayloadOverItsOwnLimitAndStaysUsable(t *testing.T) {
	edge, cloud, _ := pair(t, Options{MaxPayload: 1024}, Options{})
	if err := edge.Send(context.Background(), sizedMessage(t, 2048)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("Send of 2 KiB with a 1 KiB limit = %v, want a size error", err)
	}
	if err := edge.Send(context.Background(), sampleMessages[0]); err != nil {
		t.Fatalf("Send after a refused one: %v", err)
	}
	assertSameMessage(t, receive(t, cloud), sampleMessages[0])
}

func TestHalfOpenLinkIsDetectedWithinTwoHeartbeats(t *testing.T) {
	const hb = 300 * time.Millisecond
	ca := testca.New(t)
	metrics, _ := NewMetrics(nil)
	h := startHub(t, ca, AcceptOptions{Options: Options{Heartbeat: hb, Metrics: metrics}})
	proxy, err := faultproxy.New(h.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	edge := dialNode(t, h, "wss://"+proxy.Addr()+EventsPath(DefaultProjectID, "edge-1"), "edge-1", Options{Heartbeat: hb})
	cloud := h.accepted(t)
	if err := edge.Send(context.Background(), sampleMessages[0]); err != nil {
		t.Fatal(err)
	}
	receive(t, cloud)

	errs := make(chan error, 2)
	for _, c := range []*Conn{edge, cloud} {
		go func() { _, err := c.Receive(context.Background()); errs <- err }()
	}
	start := time.Now()
	proxy.HalfOpen(true)
	for range 2 {
		select {
		case err := <-errs:
			took := time.Since(start)
			if !errors.Is(err, ErrHeartbeat) {
				t.Fatalf("Receive = %v, want ErrHeartbeat", err)
			}
			// The deadline is 2 heartbeats after the last frame received, which came before the cut; one
			// more heartbeat of slack absorbs scheduling on a loaded machine.
			if took > 3*hb {
				t.Fatalf("half-open link noticed after %v, want within 2 heartbeats (%v)", took, 2*hb)
			}
			t.Logf("half-open link noticed after %v (heartbeat %v)", took, hb)
		case <-time.After(20 * time.Second):
			t.Fatal("half-open link not noticed within 20s")
		}
	}
	if n := metrics.Stats().HeartbeatTimeouts; n != 1 {
		t.Fatalf("cloud heartbeat timeouts = %d, want 1", n)
	}
}

func TestIdleConnectionStaysUpOnHeartbeatsAlone(t *testing.T) {
	const hb = 250 * time.Millisecond
	edge, cloud, h := pair(t, Options{Heartbeat: hb}, Options{Heartbeat: hb})
	got := make(chan message.Message, 1)
	errs := make(chan error, 2)
	go func() {
		m, err := cloud.Receive(context.Background())
		if err != nil {
			errs <- err
			return
		}
		got <- m
	}()
	go func() { _, err := edge.Receive(context.Background()); errs <- err }()
	time.Sleep(8 * hb) // four times the read deadline with no messages at all
	select {
	case err := <-errs:
		t.Fatalf("idle connection failed: %v", err)
	default:
	}
	if err := edge.Send(context.Background(), sampleMessages[1]); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		assertSameMessage(t, m, sampleMessages[1])
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("message not received")
	}
	if n := h.metrics.Stats().HeartbeatTimeouts; n != 0 {
		t.Fatalf("heartbeat timeouts = %d, want 0", n)
	}
}

func TestBadFramesFromARawPeerAreRejectedAndClosed(t *testing.T) {
	ca := testca.New(t)
	h := startHub(t, ca, AcceptOptions{Options: Options{MaxPayload: MaxPayload}})
	type frame struct {
		typ  int
		data []byte
	}
	type bad struct {
		name   string
		frames []frame
		want   error
	}
	var cases []bad
	for _, tc := range badFrames(t) {
		fs := []frame{{websocket.BinaryMessage, tc.header}}
		if tc.payload != nil {
			fs = append(fs, frame{websocket.BinaryMessage, tc.payload})
		}
		cases = append(cases, bad{tc.name, fs, tc.want})
	}
	good, _ := MarshalMessage(nil, sampleMessages[1])
	goodHeader := hdr(Version, TypeMessage, 0, uint32(len(good)))
	cases = append(cases,
		bad{"header as a text frame", []frame{{websocket.TextMessage, goodHeader}}, ErrHeader},
		bad{"payload as a text frame", []frame{{websocket.BinaryMessage, goodHeader}, {websocket.TextMessage, good}}, ErrLength},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := websocket.Dialer{TLSClientConfig: ca.NodeTLS(t, ca, "raw"), HandshakeTimeout: 10 * time.Second, Subprotocols: []string{Subprotocol}}
			raw, _, err := d.Dial(h.url("raw"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			cloud := h.accepted(t)
			for _, f := range tc.frames {
				if err := raw.WriteMessage(f.typ, f.data); err != nil {
					t.Fatal(err)
				}
			}
			err = receiveErr(t, cloud)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Receive = %v, want %v", err, tc.want)
			}
			var fe *FrameError
			errors.As(err, &fe)
			if n := h.metrics.Stats().DecodeErrors[fe.Reason()]; n == 0 {
				t.Fatalf("decode_errors{reason=%q} not counted", fe.Reason())
			}
			_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, _, err = raw.ReadMessage(); err != nil {
					break
				}
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Text != fe.Reason() {
				t.Fatalf("raw peer got %v, want a close frame naming %q", err, fe.Reason())
			}
		})
	}
}

func TestAFrameOverTheReadLimitIsRefusedBeforeItIsRead(t *testing.T) {
	ca := testca.New(t)
	h := startHub(t, ca, AcceptOptions{Options: Options{MaxPayload: 1024}})
	d := websocket.Dialer{TLSClientConfig: ca.NodeTLS(t, ca, "raw"), HandshakeTimeout: 10 * time.Second, Subprotocols: []string{Subprotocol}}
	raw, _, err := d.Dial(h.url("raw"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cloud := h.accepted(t)
	// The header announces a small payload, the payload frame is 4 KiB: the frame header alone gives it away.
	_ = raw.WriteMessage(websocket.BinaryMessage, hdr(Version, TypeMessage, 0, 100))
	_ = raw.WriteMessage(websocket.BinaryMessage, make([]byte, 4096))
	if err := receiveErr(t, cloud); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Receive = %v, want ErrTooLarge", err)
	}
}

func TestConcurrentSendersKeepEachStreamInOrder(t *testing.T) {
	edge, cloud, _ := pair(t, Options{}, Options{})
	const senders, each = 8, 250
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m := message.Message{Header: message.Header{ID: fmt.Sprintf("%d-%d", s, i), Timestamp: int64(i)},
					Route: message.Route{Source: fmt.Sprint(s), Operation: "update"}, Content: json.RawMessage(fmt.Sprint(i))}
				if err := edge.Send(context.Background(), m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make(map[string]int64)
	for range senders * each {
		m := receive(t, cloud)
		if m.Header.Timestamp != next[m.Route.Source] {
			t.Fatalf("sender %s: got message %d, want %d", m.Route.Source, m.Header.Timestamp, next[m.Route.Source])
		}
		next[m.Route.Source]++
	}
	wg.Wait()
}

func TestCloseEndsReceiveAndSendWithErrClosed(t *testing.T) {
	edge, cloud, _ := pair(t, Options{}, Options{})
	errs := make(chan error, 1)
	go func() { _, err := cloud.Receive(context.Background()); errs <- err }()
	time.Sleep(20 * time.Millisecond) // let Receive block (the test holds either way)
	cloud.Close()
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Fatalf("Receive after Close = %v, want ErrClosed", err)
	}
	if err := cloud.Send(context.Background(), sampleMessages[0]); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
	if err := receiveErr(t, edge); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "peer") {
		t.Fatalf("edge Receive = %v, want closed by the peer", err)
	}
	select {
	case <-cloud.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
}

func TestReceiveContextEndClosesTheConnection(t *testing.T) {
	_, cloud, _ := pair(t, Options{}, Options{})
	// A ctx that is already done when Receive starts only fails that call; one that ends while
	// Receive waits closes the connection. Give Receive longer each round to get into its read.
	for _, wait := range []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second} {
		ctx, cancel := context.WithCancel(context.Background())
		errs := make(chan error, 1)
		go func() { _, err := cloud.Receive(ctx); errs <- err }()
		time.Sleep(wait)
		cancel()
		err := <-errs
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Receive = %v, want it to wrap context.Canceled", err)
		}
		if !errors.Is(err, ErrClosed) {
			if cloud.Err() != nil {
				t.Fatalf("connection closed (%v) by a ctx that was done before Receive started", cloud.Err())
			}
			continue
		}
		if _, err := cloud.Receive(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Receive after the context ended mid-read = %v, want ErrClosed", err)
		}
		return
	}
	t.Fatal("Receive never got into its read")
}

func TestCompressionWhenAskedForIsReadByTheOtherSide(t *testing.T) {
	edge, cloud, h := pair(t, Options{CompressMin: 1}, Options{})
	m := sampleMessages[1]
	m.Content = json.RawMessage(`"` + strings.Repeat("compressible ", 1000) + `"`)
	if err := edge.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	assertSameMessage(t, receive(t, cloud), m)
	if in := h.metrics.Stats().Bytes[0]; in >= uint64(len(m.Content)) {
		t.Fatalf("%d bytes crossed the wire for %d bytes of content, want the payload compressed", in, len(m.Content))
	}
}

func TestMetricsRegisterOnceAndExportTheSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m1, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := NewMetrics(reg)
	if err != nil || m1 != m2 {
		t.Fatalf("second NewMetrics on one registry = %p, %v; want the first (%p)", m2, err, m1)
	}
	edge, cloud, _ := pair(t, Options{Metrics: m1}, Options{})
	if err := edge.Send(context.Background(), sampleMessages[0]); err != nil {
		t.Fatal(err)
	}
	receive(t, cloud)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, f := range families {
		found[f.GetName()] = true
		if f.GetName() == "kedge_hub_messages_total" {
			for _, s := range f.GetMetric() {
				if s.GetLabel()[0].GetValue() == "out" && s.GetCounter().GetValue() != 1 {
					t.Errorf("messages_total{direction=out} = %v, want 1", s.GetCounter().GetValue())
				}
			}
		}
	}
	for _, name := range []string{"kedge_hub_connections", "kedge_hub_messages_total", "kedge_hub_frames_total",
		"kedge_hub_bytes_total", "kedge_hub_decode_errors_total", "kedge_hub_heartbeat_timeouts_total", "kedge_hub_rejected_total"} {
		if !found[name] {
			t.Errorf("metric %s not exported", name)
		}
	}
}

func TestCloseIsPromptWhileASendIsStuckOnADeadLink(t *testing.T) {
	for _, size := range []int{60 << 10, 4 << 20} { // coalesced into one write, and written frame by frame
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			ca := testca.New(t)
			h := startHub(t, ca, AcceptOptions{})
			proxy, err := faultproxy.New(h.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			edge := dialNode(t, h, "wss://"+proxy.Addr()+EventsPath(DefaultProjectID, "edge-1"), "edge-1",
				Options{WriteTimeout: time.Minute})
			h.accepted(t)
			proxy.HalfOpen(true)
			sendErr := make(chan error, 1)
			go func() {
				m := sizedMessage(t, size)
				for {
					if err := edge.Send(context.Background(), m); err != nil {
						sendErr <- err
						return
					}
				}
			}()
			time.Sleep(500 * time.Millisecond) // socket buffers fill within milliseconds; then Send blocks
			start := time.Now()
			edge.Close()
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("Close took %v with a stuck Send, want about a second at most", took)
			}
			select {
			case err := <-sendErr:
				if !errors.Is(err, ErrClosed) {
					t.Fatalf("stuck Send returned %v, want ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("stuck Send still blocked 10s after Close")
			}
		})
	}
}

// TestALinkCarryingMessagesSendsNoPingsAndAQuietOneStillDoes proves the heartbeat costs nothing on a
// busy link (each side pings only after a heartbeat interval without hearing from its peer) and still
// keeps a quiet link alive and watched.
func TestALinkCarryingMessagesSendsNoPingsAndAQuietOneStillDoes(t *testing.T) {
	const hb = 2 * time.Second
	edgeM, _ := NewMetrics(nil)
	cloudM, _ := NewMetrics(nil)
	edge, cloud, _ := pair(t, Options{Heartbeat: hb, Metrics: edgeM}, Options{Heartbeat: hb, Metrics: cloudM})
	pings := func() uint64 { return edgeM.Stats().Pings + cloudM.Stats().Pings }
	errs := receiveAll(edge, cloud)
	// Both ways, every 100 ms, for 2.5 heartbeats: the old heartbeat pinged every interval on both
	// sides (4 or more pings); at most one is allowed for a scheduling stall of a whole interval.
	for end := time.Now().Add(5 * hb / 2); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, c := range []*Conn{edge, cloud} {
			if err := c.Send(context.Background(), sampleMessages[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := pings(); n > 1 {
		t.Errorf("%d pings on a link that carried messages every 100 ms (heartbeat %s), want none", n, hb)
	}
	// Quiet: pings keep it up.
	before := pings()
	deadline := time.Now().Add(30 * time.Second)
	for pings() < before+2 {
		select {
		case err := <-errs:
			t.Fatalf("quiet link failed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("a quiet link sent %d pings in 30 s, want them every heartbeat (%s)", pings()-before, hb)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case err := <-errs:
		t.Fatalf("quiet link failed: %v", err)
	default:
	}
}

// TestOnAQuietKedgeLinkTheEdgePingsAndTheCloudOnlyAnswers proves a quiet link costs the cloud no
// pings of its own: the accepting side waits one and a half heartbeats before it pings, so the edge,
// which pings after one, is always first. The cloud's heartbeat here is a little shorter than the
// edge's (both sides pinging after one heartbeat, the cloud would be first every time).
func TestOnAQuietKedgeLinkTheEdgePingsAndTheCloudOnlyAnswers(t *testing.T) {
	const edgeHB, cloudHB = 2 * time.Second, 1800 * time.Millisecond
	edgeM, _ := NewMetrics(nil)
	cloudM, _ := NewMetrics(nil)
	edge, cloud, _ := pair(t, Options{Heartbeat: edgeHB, Metrics: edgeM}, Options{Heartbeat: cloudHB, Metrics: cloudM})
	errs := receiveAll(edge, cloud)
	deadline := time.Now().Add(60 * time.Second)
	for edgeM.Stats().Pings < 4 {
		select {
		case err := <-errs:
			t.Fatalf("quiet link failed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edge sent %d pings in 60 s, want one every heartbeat (%s)", edgeM.Stats().Pings, edgeHB)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One is allowed for a stall of the edge's timer of half a heartbeat on a busy machine.
	if n := cloudM.Stats().Pings; n > 1 {
		t.Errorf("the cloud sent %d pings of its own while the edge pinged %d times, want none", n, edgeM.Stats().Pings)
	}
}

// receiveAll reads and drops every message of each connection; the first error of each arrives on
// the channel.
func receiveAll(conns ...*Conn) <-chan error {
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			for {
				if _, err := c.Receive(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	return errs
}
