package hub

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kedge-io/kedge/host/hub/internal/testca"
	"github.com/kedge-io/kedge/host/message"
)

// capturedFrame is one line of testdata/kubeedge/*.jsonl: what a listener recorded of a real
// KubeEdge v1.23.1 edgecore dialing it (the handshake request, then each websocket frame).
type capturedFrame struct {
	Kind    string `json:"kind"` // handshake, text, binary, ping, pong, close, end
	Request string `json:"request"`
	Data    string `json:"data"`
}

// upstreamEdgeFrames reads the frames KubeEdge v1.23.1's edgecore sent on connecting (node capnode):
// captured by running the upstream binary against a TLS websocket listener that answers nothing.
func upstreamEdgeFrames(t *testing.T) (handshake string, texts []string) {
	t.Helper()
	f, err := os.Open("testdata/kubeedge/edgecore-v1.23.1-upstream-ws.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c capturedFrame
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		switch c.Kind {
		case "handshake":
			handshake = c.Request
		case "text":
			texts = append(texts, c.Data)
		case "binary":
			t.Fatalf("upstream edgecore sent a binary frame on websockets; the capture says it sends JSON text only")
		}
	}
	if handshake == "" || len(texts) < 4 {
		t.Fatalf("capture holds handshake %v and %d text frames, want a handshake and at least 4", handshake != "", len(texts))
	}
	return handshake, texts
}

func TestUpstreamEdgecoreHandshakeOffersNoSubprotocolSoItIsAKubeEdgePeer(t *testing.T) {
	hs, _ := upstreamEdgeFrames(t)
	for _, want := range []string{"GET /" + DefaultProjectID + "/capnode/events ", "Node_id: capnode", "Project_id: " + DefaultProjectID, "Connectionuse: msg"} {
		if !strings.Contains(hs, want) {
			t.Errorf("captured handshake lacks %q:\n%s", want, hs)
		}
	}
	if strings.Contains(strings.ToLower(hs), "sec-websocket-protocol") {
		t.Fatalf("upstream edgecore offered a subprotocol; lane selection assumes it offers none:\n%s", hs)
	}
}

func TestGoldenFramesFromUpstreamEdgecoreDecodeAsKubeEdgeMeantThem(t *testing.T) {
	_, texts := upstreamEdgeFrames(t)
	byOp := map[string]message.Message{}
	for i, raw := range texts {
		m, err := UnmarshalJSONLane([]byte(raw))
		if err != nil {
			t.Fatalf("frame %d: %v\n%s", i, err, raw)
		}
		byOp[m.Route.Operation+" "+m.Route.Resource] = m
		// What we decode, we can send back: re-encoding and decoding gives the same message.
		again, err := MarshalJSONLane(m)
		if err != nil {
			t.Fatalf("frame %d: re-encode: %v", i, err)
		}
		back, err := UnmarshalJSONLane(again)
		if err != nil {
			t.Fatalf("frame %d: decode our encoding: %v\n%s", i, err, again)
		}
		assertSameMessage(t, back, m)
	}
	tests := []struct {
		key, source, group string
		content            func(json.RawMessage) bool
		what               string
	}{
		{"keepalive node", "websocket", "resource", func(c json.RawMessage) bool { return string(c) == `"ping"` }, `the string "ping"`},
		{"get membership/detail", "twin", "resource", func(c json.RawMessage) bool {
			var v struct {
				EventType string `json:"event_type"`
				GroupID   string `json:"group_id"`
			}
			return json.Unmarshal(c, &v) == nil && v.EventType == "group_membership_event" && v.GroupID == "capnode"
		}, "the membership request as a JSON object (sent as a string holding JSON)"},
		{"query kube-node-lease/lease/capnode", "edged", "meta", func(c json.RawMessage) bool { return c == nil }, "none (null)"},
		{"insert null/node/capnode", "edged", "meta", func(c json.RawMessage) bool {
			var n struct {
				Metadata struct{ Name string } `json:"metadata"`
			}
			return json.Unmarshal(c, &n) == nil && n.Metadata.Name == "capnode"
		}, "the Node object"},
	}
	for _, tt := range tests {
		m, ok := byOp[tt.key]
		if !ok {
			t.Errorf("no %q message among the captured frames", tt.key)
			continue
		}
		if m.Route.Source != tt.source || m.Route.Group != tt.group || m.Header.ID == "" || m.Header.Timestamp == 0 {
			t.Errorf("%s: source %q group %q id %q ts %d, want source %q group %q and an ID and timestamp", tt.key, m.Route.Source, m.Route.Group, m.Header.ID, m.Header.Timestamp, tt.source, tt.group)
		}
		if !tt.content(m.Content) {
			t.Errorf("%s: content %.120s, want %s", tt.key, m.Content, tt.what)
		}
	}
}

func TestJSONLaneWritesKubeEdgeFieldNames(t *testing.T) {
	m, _ := message.New("cloudhub", "resource", "response", "default/pod/p").WithContent("OK")
	m.Header.ParentID, m.Header.Sync, m.Header.ResourceVersion = "parent-1", true, "42"
	b, err := MarshalJSONLane(m)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Header, Route map[string]any
		Content       any
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	for _, k := range []string{"msg_id", "parent_msg_id", "timestamp", "resourceversion", "sync"} {
		if _, ok := v.Header[k]; !ok {
			t.Errorf("header lacks %q: %s", k, b)
		}
	}
	for _, k := range []string{"source", "group", "operation", "resource"} {
		if _, ok := v.Route[k]; !ok {
			t.Errorf("route lacks %q: %s", k, b)
		}
	}
	if v.Content != "OK" {
		t.Errorf("content = %#v, want the JSON string OK (KubeEdge's receivers read a string's text)", v.Content)
	}
	none, _ := MarshalJSONLane(message.New("cloudhub", "resource", "query", "default/pod/p"))
	if !strings.Contains(string(none), `"content":null`) {
		t.Errorf("a message without content is written %s, want content null as KubeEdge writes it", none)
	}
}

func TestUnmarshalJSONLaneRefusesBadFramesWithTypedErrors(t *testing.T) {
	for _, tt := range []struct {
		name, frame string
		want        error
	}{
		{"not JSON", `{"header":`, ErrMalformed},
		{"header of the wrong type", `{"header":"x","route":{"operation":"insert"}}`, ErrMalformed},
		{"no message ID", `{"header":{"timestamp":1},"route":{"operation":"insert"}}`, ErrInvalid},
		{"no operation", `{"header":{"msg_id":"a","timestamp":1},"route":{}}`, ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UnmarshalJSONLane([]byte(tt.frame))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestKedgeEdgeAndKedgeCloudChooseTheKedgeLane(t *testing.T) {
	edge, cloud, _ := pair(t, Options{}, Options{})
	if edge.Lane() != LaneKedge || cloud.Lane() != LaneKedge {
		t.Fatalf("lanes edge %s cloud %s, want both kedge", edge.Lane(), cloud.Lane())
	}
}

func TestClientOfferingNoSubprotocolIsServedOnTheJSONLaneBothWays(t *testing.T) {
	ca := testca.New(t)
	h := startHub(t, ca, AcceptOptions{})
	edge, err := Dial(context.Background(), DialOptions{URL: h.url("edge-1"), TLS: ca.NodeTLS(t, ca, "edge-1"), NodeID: "edge-1", KubeEdgeLane: true, Options: Options{Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	cloud := h.accepted(t)
	if edge.Lane() != LaneKubeEdge || cloud.Lane() != LaneKubeEdge {
		t.Fatalf("lanes edge %s cloud %s, want both kubeedge-json", edge.Lane(), cloud.Lane())
	}
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
	if s := h.metrics.Stats(); s.Frames[0] != uint64(len(sampleMessages)) {
		t.Errorf("cloud counted %d frames in for %d messages, want one frame per message", s.Frames[0], len(sampleMessages))
	}
}

func TestUpstreamEdgecoreFramesReplayedToTheHubAreReadWithoutAnyNodeList(t *testing.T) {
	_, texts := upstreamEdgeFrames(t)
	ca := testca.New(t)
	h := startHub(t, ca, AcceptOptions{})
	// A plain websocket client, as KubeEdge's edgecore dials: no subprotocol.
	d := websocket.Dialer{TLSClientConfig: ca.NodeTLS(t, ca, "capnode"), HandshakeTimeout: 10 * time.Second}
	raw, _, err := d.Dial(h.url("capnode"), http.Header{HeaderNodeID: {"capnode"}, HeaderProjectID: {DefaultProjectID}, HeaderConnectionUse: {"msg"}})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cloud := h.accepted(t)
	for _, f := range texts {
		if err := raw.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			t.Fatal(err)
		}
		want, _ := UnmarshalJSONLane([]byte(f))
		assertSameMessage(t, receive(t, cloud), want)
	}
	// What the cloud answers is one JSON text frame the upstream edge can read.
	ans, _ := message.New("cloudhub", "meta", "response", "kube-node-lease/lease/capnode").WithContent(map[string]string{"kind": "Lease"})
	ans.Header.ParentID = "q-1"
	if err := cloud.Send(context.Background(), ans); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(20 * time.Second))
	typ, b, err := raw.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Header struct {
			ParentID string `json:"parent_msg_id"`
		} `json:"header"`
		Route struct {
			Operation string `json:"operation"`
		} `json:"route"`
		Content map[string]string `json:"content"`
	}
	if typ != websocket.TextMessage || json.Unmarshal(b, &got) != nil || got.Header.ParentID != "q-1" || got.Route.Operation != "response" || got.Content["kind"] != "Lease" {
		t.Fatalf("upstream edge got frame type %d: %s", typ, b)
	}
	// A binary frame on this lane breaks KubeEdge's format: refused, named, connection closed.
	_ = raw.WriteMessage(websocket.BinaryMessage, []byte{1, 1, 1, 0, 1, 0, 0, 0, 0, 0})
	if err := receiveErr(t, cloud); !errors.Is(err, ErrHeader) {
		t.Fatalf("Receive after a binary frame = %v, want ErrHeader", err)
	}
}

func TestKedgeEdgeFallsBackToTheJSONLaneWhenTheCloudDoesNotSelectItsSubprotocol(t *testing.T) {
	ca := testca.New(t)
	// A cloud like KubeEdge's cloudcore: a websocket server that selects no subprotocol and speaks JSON.
	got := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		typ, b, err := ws.ReadMessage()
		if err != nil || typ != websocket.TextMessage {
			got <- "not a text frame"
			return
		}
		got <- string(b)
	}))
	srv.TLS = ca.ServerTLS(t)
	srv.StartTLS()
	defer srv.Close()
	edge, err := Dial(context.Background(), DialOptions{URL: "wss://" + srv.Listener.Addr().String(), TLS: ca.NodeTLS(t, ca, "edge-1"), NodeID: "edge-1", Options: Options{Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	if edge.Lane() != LaneKubeEdge {
		t.Fatalf("lane %s against a cloud that selected no subprotocol, want kubeedge-json", edge.Lane())
	}
	m, _ := message.New("edged", "meta", "insert", "default/node/edge-1").WithContent(map[string]any{"metadata": map[string]string{"name": "edge-1"}})
	if err := edge.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		back, err := UnmarshalJSONLane([]byte(s))
		if err != nil {
			t.Fatalf("cloud got %q: %v", s, err)
		}
		assertSameMessage(t, back, m)
	case <-time.After(20 * time.Second):
		t.Fatal("the cloud received nothing")
	}
}
