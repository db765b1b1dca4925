package cloudhub

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/hub/quichub"
	"github.com/kedge-io/kedge/sdk/message"
)

func TestQUICIsOffByDefaultOnKubeEdgesPort(t *testing.T) {
	m := New()
	if m.QUIC.Enable || m.QUIC.Address != "0.0.0.0:10001" {
		t.Fatalf("default quic %+v, want off on 0.0.0.0:10001", m.QUIC)
	}
}

// A node joined with a token reaches cloudhub on QUIC with the certificate it got for the websocket
// hub: it is served as that node on the Kedge lane, what is queued for it arrives in order, an
// acknowledgement takes it off the queue, and what it sends reaches the cloud module of its group.
// Another node's certificate cannot pose as it.
func TestQUICLaneServesAJoinedNodeWithItsCertificateAndAcknowledgedDelivery(t *testing.T) {
	c := startCloud(t, func(m *Module) { m.QUIC = QUIC{Enable: true, Address: "127.0.0.1:0"} })
	if strings.HasSuffix(c.hub.QUIC.Address, ":0") {
		t.Fatalf("bound address not reported: %s", c.hub.QUIC.Address)
	}
	edge := newRawNode(t, c, "edge-q")
	c.send(t, "edge-q", "a", 1)
	c.send(t, "edge-q", "b", 1)
	conn, err := quichub.Dial(context.Background(), hub.DialOptions{URL: "quic://" + c.hub.QUIC.Address, TLS: edge.tls, NodeID: "edge-q",
		Options: hub.Options{Heartbeat: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if conn.Lane() != hub.LaneKedge {
		t.Fatalf("lane %s, want kedge", conn.Lane())
	}
	edge.conn = conn
	eventually(t, "the node to be connected", func() bool { return c.connected("edge-q") })
	var got []string
	for range 2 {
		m := edge.receive()
		got = append(got, m.Route.Resource+"@"+m.Header.ResourceVersion)
		ack, err := m.Reply("edgehub", "OK")
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Send(context.Background(), ack); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != "[default/pod/a@1 default/pod/b@1]" {
		t.Fatalf("received %v", got)
	}
	eventually(t, "the acknowledged messages to leave the queue", func() bool { return len(c.pending("edge-q")) == 0 })

	// Upstream: a message of a group nobody handles is answered with an error naming the group.
	up := message.New("edged", "nosuchgroup", message.OpUpdate, "default/pod/a")
	if err := conn.Send(context.Background(), up); err != nil {
		t.Fatal(err)
	}
	for {
		m := edge.receive()
		if m.Header.ParentID == up.Header.ID {
			if m.Route.Operation != message.OpError || !strings.Contains(string(m.Content), "nosuchgroup") {
				t.Fatalf("answer %s %s", m, m.Content)
			}
			break
		}
	}

	// Another node's certificate cannot claim edge-q.
	other := newRawNode(t, c, "edge-r")
	if _, err := quichub.Dial(context.Background(), hub.DialOptions{URL: "quic://" + c.hub.QUIC.Address, TLS: other.tls, NodeID: "edge-q"}); err == nil ||
		!strings.Contains(err.Error(), `certificate is for node "edge-r" but the node_id header says "edge-q"`) {
		t.Fatalf("posing as another node: %v", err)
	}
}
