package cloudhub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/sdk/message"
)

// rawNode is an edge that speaks the hub protocol and does only what the test tells it: like
// KubeEdge's edgecore, it sends no acknowledgements of its own. A node named ke-* dials as KubeEdge's
// edgecore does (no Kedge subprotocol: KubeEdge's JSON lane); others offer the Kedge lane.
type rawNode struct {
	t    *testing.T
	name string
	tls  *tls.Config
	conn *hub.Conn
}

func newRawNode(t *testing.T, c *cloud, name string) *rawNode {
	t.Helper()
	res := c.join(t, name)
	pair, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(res.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &rawNode{t: t, name: name, tls: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}}
}

func (r *rawNode) dial(c *cloud) {
	r.t.Helper()
	conn, err := hub.Dial(context.Background(), hub.DialOptions{URL: "wss://" + c.hub.Address, TLS: r.tls, NodeID: r.name,
		KubeEdgeLane: strings.HasPrefix(r.name, "ke-"), Options: hub.Options{Heartbeat: 5 * time.Second}})
	if err != nil {
		r.t.Fatal(err)
	}
	r.conn = conn
	r.t.Cleanup(func() { _ = conn.Close() })
	eventually(r.t, "the node to be connected", func() bool { return c.connected(r.name) })
}

func (r *rawNode) receive() message.Message {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := r.conn.Receive(ctx)
	if err != nil {
		r.t.Fatalf("node %s: %v", r.name, err)
	}
	return m
}

// receiveN returns the next n messages as resource@resourceVersion.
func (r *rawNode) receiveN(n int) []string {
	r.t.Helper()
	var out []string
	for range n {
		m := r.receive()
		out = append(out, m.Route.Resource+"@"+m.Header.ResourceVersion)
	}
	return out
}

func (c *cloud) send(t *testing.T, node, name string, rv int) {
	t.Helper()
	m := message.New("test", "resource", message.OpUpdate, message.Resource{Node: node, Namespace: "default", Type: "pod", Name: name}.Cloud())
	m.Header.ResourceVersion = fmt.Sprint(rv)
	if err := c.rt.Send(context.Background(), Name, m); err != nil {
		t.Fatal(err)
	}
}

// pending lists a node's queue (resource@resourceVersion, first-queued first).
func (c *cloud) pending(node string) []string {
	c.hub.mu.Lock()
	n := c.hub.nodes[node]
	c.hub.mu.Unlock()
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, e := range n.order {
		if !e.done {
			out = append(out, e.msg.Route.Resource+"@"+e.msg.Header.ResourceVersion)
		}
	}
	return out
}

func (c *cloud) connected(node string) bool {
	c.hub.mu.Lock()
	n := c.hub.nodes[node]
	c.hub.mu.Unlock()
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sess != nil
}

// sendGroup queues an update of pod name at rv for node in group (send's is resource).
func (c *cloud) sendGroup(t *testing.T, node, group, name string, rv int) {
	t.Helper()
	m := message.New("test", group, message.OpUpdate, message.Resource{Node: node, Namespace: "default", Type: "pod", Name: name}.Cloud())
	m.Header.ResourceVersion = fmt.Sprint(rv)
	if err := c.rt.Send(context.Background(), Name, m); err != nil {
		t.Fatal(err)
	}
}

func TestPeerKindAndMessageDecideWhetherUnacknowledgedMessagesStayAndAreResent(t *testing.T) {
	for _, tc := range []struct {
		name, node, group string
		wantPending       []string // the queue once both were written and nothing was acknowledged
		wantNext          string   // what the node gets next without acknowledging or anything new queued
	}{
		{"a Kedge peer keeps them until acknowledged and resends", "kedge-1", "resource", []string{"default/pod/a@2", "default/pod/b@1"}, "default/pod/a@2"},
		{"a KubeEdge peer keeps the objects its edge answers until it does and resends", "ke-1", "resource", []string{"default/pod/a@2", "default/pod/b@1"}, "default/pod/a@2"},
		{"a KubeEdge peer gets what its edge does not answer once and the queue forgets it", "ke-2", "twin", nil, "default/pod/c@1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No kubeedgeNodes list: the handshake tells a KubeEdge edgecore from a Kedge one.
			c := startCloud(t, func(m *Module) { m.AckTimeout = 50 * time.Millisecond })
			edge := newRawNode(t, c, tc.node)
			// Queued while the node is offline: coalesced to the latest version of each object.
			c.sendGroup(t, tc.node, tc.group, "a", 1)
			c.sendGroup(t, tc.node, tc.group, "b", 1)
			c.sendGroup(t, tc.node, tc.group, "a", 2)
			eventually(t, "the offline queue", func() bool { return fmt.Sprint(c.pending(tc.node)) == "[default/pod/a@2 default/pod/b@1]" })
			edge.dial(c)
			if got := edge.receiveN(2); fmt.Sprint(got) != "[default/pod/a@2 default/pod/b@1]" {
				t.Fatalf("received %v, want a@2 then b@1", got)
			}
			eventually(t, fmt.Sprintf("queue %v", tc.wantPending), func() bool { return fmt.Sprint(c.pending(tc.node)) == fmt.Sprint(tc.wantPending) })
			if tc.wantPending == nil {
				c.sendGroup(t, tc.node, tc.group, "c", 1)
			}
			if got := edge.receiveN(1)[0]; got != tc.wantNext {
				t.Fatalf("next received %s, want %s", got, tc.wantNext)
			}
			if resent := testutil.ToFloat64(c.hub.metrics.resent); (resent > 0) != (tc.wantPending != nil) {
				t.Fatalf("resent %v messages", resent)
			}
		})
	}
}

// kubeEdgeResponse is what KubeEdge v1.23.1's metamanager sends once it stored an object from the
// cloud (observed on the wire: test/e2e): a response naming the message, content "OK".
func kubeEdgeResponse(t *testing.T, got message.Message) message.Message {
	t.Helper()
	r, err := got.Reply("metaManager", "OK")
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Sync, r.Header.ResourceVersion = false, ""
	return r
}

func TestKubeEdgePeerGetsUnansweredObjectsAgainAfterAReconnectItsResponsesSettleThemAndSyncRequestsAreAnswered(t *testing.T) {
	c := startCloud(t, func(m *Module) { m.AckTimeout = time.Hour }) // no resend on a timer in this test
	edge := newRawNode(t, c, "ke-1")
	edge.dial(c)
	c.send(t, "ke-1", "a", 1)
	if got := edge.receiveN(1); fmt.Sprint(got) != "[default/pod/a@1]" {
		t.Fatalf("received %v", got)
	}
	_ = edge.conn.Close() // before answering it
	eventually(t, "the cloud to see the node go", func() bool { return !c.connected("ke-1") })
	c.send(t, "ke-1", "b", 1)
	c.send(t, "ke-1", "b", 2)
	eventually(t, "the queue: a@1 unanswered, b coalesced", func() bool { return fmt.Sprint(c.pending("ke-1")) == "[default/pod/a@1 default/pod/b@2]" })

	edge.dial(c)
	// a@1 was written on the first connection but never answered: it comes again, then b at its latest.
	var got []message.Message
	for range 2 {
		got = append(got, edge.receive())
	}
	if s := fmt.Sprint(ids(got)); s != "[default/pod/a@1 default/pod/b@2]" {
		t.Fatalf("after reconnecting received %v, want a@1 again and b@2", s)
	}
	for _, m := range got {
		if err := edge.conn.Send(context.Background(), kubeEdgeResponse(t, m)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the edge's responses to empty the queue", func() bool { return len(c.pending("ke-1")) == 0 })
	if acked := testutil.ToFloat64(c.hub.metrics.acked); acked != 2 {
		t.Fatalf("%v acknowledgements counted, want the 2 responses", acked)
	}

	// A cloud module's sync request still gets the KubeEdge node's answer.
	q := message.New("test", "resource", message.OpQuery, message.Resource{Node: "ke-1", Namespace: "default", Type: "configmap", Name: "cm"}.Cloud())
	answer := make(chan error, 1)
	go func() {
		resp, err := c.rt.SendSync(context.Background(), Name, q, 30*time.Second)
		if err == nil && string(resp.Content) != `"here"` {
			err = fmt.Errorf("answer %s, want \"here\"", resp.Content)
		}
		answer <- err
	}()
	gotQ := edge.receive()
	if gotQ.Header.ID != q.Header.ID {
		t.Fatalf("received %s, want the query", gotQ.String())
	}
	reply, err := gotQ.Reply("edged", "here")
	if err != nil {
		t.Fatal(err)
	}
	if err := edge.conn.Send(context.Background(), reply); err != nil {
		t.Fatal(err)
	}
	if err := <-answer; err != nil {
		t.Fatal(err)
	}
	eventually(t, "an empty queue", func() bool { return len(c.pending("ke-1")) == 0 })
}

func TestKubeEdgeNodesPatternMustBeValid(t *testing.T) {
	_, err := tryStartCloud(t, func(m *Module) { m.KubeEdgeNodes = []string{"ke-["} })
	if err == nil || !strings.Contains(err.Error(), `kubeedgeNodes: "ke-["`) {
		t.Fatalf("got %v, want an error naming the bad pattern", err)
	}
}

func (c *cloud) known(node string) bool {
	c.hub.mu.Lock()
	defer c.hub.mu.Unlock()
	_, ok := c.hub.nodes[node]
	return ok
}

func TestChurnedNodesAreForgottenWhileANodeWithQueuedMessagesStays(t *testing.T) {
	c := startCloud(t, func(m *Module) { m.ForgetAfter = 100 * time.Millisecond })
	c.send(t, "waiting", "a", 1) // for a node that never connects
	eventually(t, "the queue of the waiting node", func() bool { return len(c.pending("waiting")) == 1 })
	churned := []string{"gone-1", "gone-2", "gone-3"}
	var edges []*rawNode
	for _, name := range churned {
		edge := newRawNode(t, c, name)
		edge.dial(c)
		_ = edge.conn.Close()
		edges = append(edges, edge)
	}
	// Each churned node went idle after the waiting node's last change, so once they are all
	// forgotten, the waiting node has been idle for longer than forgetAfter too.
	eventually(t, "the churned nodes to be forgotten", func() bool {
		for _, name := range churned {
			if c.known(name) {
				return false
			}
		}
		return true
	})
	if got := c.pending("waiting"); fmt.Sprint(got) != "[default/pod/a@1]" {
		t.Fatalf("the node with a queued message kept %v, want a@1", got)
	}
	if got := testutil.ToFloat64(c.hub.metrics.forgotten); got != float64(len(churned)) {
		t.Fatalf("forgotten %v nodes, want %d", got, len(churned))
	}
	// A forgotten node that comes back is served as a new one.
	edges[0].dial(c)
	c.send(t, "gone-1", "b", 1)
	if got := edges[0].receiveN(1); fmt.Sprint(got) != "[default/pod/b@1]" {
		t.Fatalf("the returning node received %v", got)
	}
}

func TestHubRefusesACertificateRevokedByAReplacingJoin(t *testing.T) {
	c := startCloud(t, nil)
	old := newRawNode(t, c, "edge-1")
	old.dial(c)
	_ = old.conn.Close()
	eventually(t, "edge-1 to be disconnected", func() bool { return !c.connected("edge-1") })

	tok, err := c.hub.CreateToken(context.Background(), pki.TokenOptions{Node: "edge-1", Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := pki.Join(context.Background(), pki.JoinOptions{CertServer: c.hub.CertServerAddress, Token: tok.String(), NodeName: "edge-1", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(c.hub.metrics.rejected)
	_, err = hub.Dial(context.Background(), hub.DialOptions{URL: "wss://" + c.hub.Address, TLS: old.tls, NodeID: "edge-1", Options: hub.Options{Heartbeat: 5 * time.Second}})
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("dial with the replaced certificate: %v; want 403, revoked", err)
	}
	if got := testutil.ToFloat64(c.hub.metrics.rejected); got != before+1 {
		t.Errorf("kedge_cloudhub_rejected_total moved by %v; want 1", got-before)
	}
	pair, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	replacement := &rawNode{t: t, name: "edge-1", tls: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: old.tls.RootCAs, MinVersion: tls.VersionTLS12}}
	replacement.dial(c)
}

func TestAnswersToTheEdgeNameItsResourceAndUseAGroupItsEdgehubTakes(t *testing.T) {
	for _, tc := range []struct {
		name, node, wantGroup string
	}{
		{"a KubeEdge edge gets group resource (its edgehub drops group meta)", "ke-1", "resource"},
		{"a Kedge edge gets the request's group", "kedge-1", "meta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Group meta goes to a module that is not running: cloudhub itself answers, with an error.
			c := startCloud(t, func(m *Module) { m.Dispatch = map[string]string{"meta": "nobody"} })
			edge := newRawNode(t, c, tc.node)
			edge.dial(c)
			q := message.New("edged", "meta", message.OpQuery, "kube-node-lease/lease/"+tc.node)
			q.Header.Sync = true
			if err := edge.conn.Send(context.Background(), q); err != nil {
				t.Fatal(err)
			}
			got := edge.receive()
			if got.Header.ParentID != q.Header.ID || got.Route.Operation != message.OpError {
				t.Fatalf("got %s, want the error answer to %s", got.String(), q.Header.ID)
			}
			if got.Route.Group != tc.wantGroup || got.Route.Resource != q.Route.Resource {
				t.Fatalf("answer has group %q resource %q, want group %q and the edge's resource %q", got.Route.Group, got.Route.Resource, tc.wantGroup, q.Route.Resource)
			}
		})
	}
}
