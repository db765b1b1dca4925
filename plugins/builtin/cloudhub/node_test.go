package cloudhub

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk/message"
)

func testNode(t *testing.T, window int) *node {
	t.Helper()
	m := New()
	m.Window, m.AckTimeout = window, time.Second
	var err error
	if m.metrics, err = newMetrics(prometheus.NewRegistry(), m); err != nil {
		t.Fatal(err)
	}
	return newNode("edge-1", m)
}

func update(name string, rv int) message.Message {
	msg := message.New("test", "resource", message.OpUpdate, "default/pod/"+name)
	msg.Header.ResourceVersion = fmt.Sprint(rv)
	return msg
}

func ids(ms []message.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Route.Resource + "@" + m.Header.ResourceVersion
	}
	return out
}

func TestQueueKeepsOnlyTheLatestVersionOfAnObjectInFirstQueuedOrder(t *testing.T) {
	n := testNode(t, 10)
	n.enqueue(update("a", 1))
	n.enqueue(update("b", 1))
	n.enqueue(update("a", 2))
	got := ids(n.next(time.Now()))
	if fmt.Sprint(got) != "[default/pod/a@2 default/pod/b@1]" {
		t.Fatalf("sent %v, want a@2 then b@1", got)
	}
}

func TestMessagesNotAboutAnObjectAreNeverCoalesced(t *testing.T) {
	n := testNode(t, 10)
	for range 3 {
		n.enqueue(message.New("test", "resource", message.OpQuery, "default/pod/a"))
	}
	if got := len(n.next(time.Now())); got != 3 {
		t.Fatalf("sent %d queries, want all 3", got)
	}
}

func TestWindowBoundsWhatIsUnacknowledged(t *testing.T) {
	n := testNode(t, 2)
	for i := range 5 {
		n.enqueue(update(fmt.Sprint("o", i), 1))
	}
	now := time.Now()
	first := n.next(now)
	if len(first) != 2 || len(n.next(now)) != 0 {
		t.Fatalf("window 2 sent %d, then more before any ack", len(first))
	}
	if _, ok := n.ack(first[0].Header.ID); !ok {
		t.Fatal("ack of a message on the wire not matched")
	}
	if got := ids(n.next(now)); fmt.Sprint(got) != "[default/pod/o2@1]" {
		t.Fatalf("after one ack sent %v, want the next object only", got)
	}
}

func TestOneVersionPerObjectOnTheWireAndANewerOneFollowsItsAck(t *testing.T) {
	n := testNode(t, 10)
	n.enqueue(update("a", 1))
	now := time.Now()
	v1 := n.next(now)[0]
	n.enqueue(update("a", 2)) // arrives while v1 is on the wire
	if got := n.next(now); len(got) != 0 {
		t.Fatalf("sent %v while another version of the object is on the wire", ids(got))
	}
	n.ack(v1.Header.ID)
	got := n.next(now)
	if fmt.Sprint(ids(got)) != "[default/pod/a@2]" {
		t.Fatalf("after v1's ack sent %v, want a@2", ids(got))
	}
	n.ack(got[0].Header.ID)
	if len(n.entries) != 0 {
		t.Fatalf("entries left after the latest version was acknowledged: %d", len(n.entries))
	}
}

func TestResendsBackOffExponentiallyOnOneConnection(t *testing.T) {
	n := testNode(t, 10)
	n.enqueue(update("a", 1))
	t0 := time.Now()
	n.next(t0)
	// Step a fake clock in 100 ms ticks and note how long each resend waited since the previous send.
	var resentAt []time.Duration
	for d := 100 * time.Millisecond; len(resentAt) < 6 && d <= 40*time.Second; d += 100 * time.Millisecond {
		if len(n.next(t0.Add(d))) > 0 {
			resentAt = append(resentAt, d)
			t0, d = t0.Add(d), 0
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 16 * time.Second}
	if len(resentAt) < len(want) {
		t.Fatalf("resent after %v, want at least %v", resentAt, want)
	}
	for i, w := range want {
		if resentAt[i] != w {
			t.Fatalf("resend %d after %v, want %v (all: %v)", i+1, resentAt[i], w, resentAt)
		}
	}
}

func TestReconnectMakesEverythingUnacknowledgedSendableAtOnce(t *testing.T) {
	n := testNode(t, 10)
	n.enqueue(update("a", 1))
	n.enqueue(update("b", 1))
	now := time.Now()
	sent := n.next(now)
	n.mu.Lock()
	n.resetWire() // what attach/detach do when a connection ends
	n.mu.Unlock()
	if got := n.next(now); len(got) != 2 {
		t.Fatalf("after the connection ended, %d entries were sendable, want both", len(got))
	}
	if _, ok := n.ack(sent[0].Header.ID); !ok { // an ack for the same ID from the old connection still settles it
		t.Fatal("a late ack of a resent version was not matched")
	}
}

// twinUpdate is a message KubeEdge's edge does not answer (another group than resource).
func twinUpdate(name string, rv int) message.Message {
	msg := update(name, rv)
	msg.Route.Group = "twin"
	return msg
}

func TestKubeEdgePeerUnansweredEntryLeavesWhenWrittenUnlessANewerVersionArrivedMeanwhile(t *testing.T) {
	n := testNode(t, 1)
	n.kubeedge = true
	n.enqueue(twinUpdate("a", 1))
	n.enqueue(twinUpdate("b", 1))
	now := time.Now()
	batch := n.next(now)
	if fmt.Sprint(ids(batch)) != "[default/pod/a@1 default/pod/b@1]" {
		t.Fatalf("handed out %v, want both in order (no window: nothing will be acknowledged)", ids(batch))
	}
	n.enqueue(twinUpdate("a", 2)) // while a@1 is being written
	n.written(batch[0])
	n.written(batch[1])
	if got := ids(n.next(now.Add(time.Hour))); fmt.Sprint(got) != "[default/pod/a@2]" {
		t.Fatalf("after writing, an hour later, handed out %v, want only the newer a@2 (never a resend)", got)
	}
	if len(n.entries) != 1 {
		t.Fatalf("%d entries left, want a@2 only", len(n.entries))
	}
}

func TestKubeEdgePeerObjectsWaitInTheWindowForTheEdgesResponseAndAreResentUntilThen(t *testing.T) {
	n := testNode(t, 1)
	n.kubeedge = true
	n.enqueue(update("a", 1))     // an object its metamanager stores and answers: ACK mode
	n.enqueue(update("b", 1))     // waits for the window
	n.enqueue(twinUpdate("t", 1)) // not answered by the edge: outside the window, once
	now := time.Now()
	batch := n.next(now)
	if fmt.Sprint(ids(batch)) != "[default/pod/a@1 default/pod/t@1]" {
		t.Fatalf("handed out %v, want a@1 (window 1) and t@1 (no window)", ids(batch))
	}
	n.written(batch[0])
	n.written(batch[1])
	if _, ok := n.entries["obj/default/pod/a"]; !ok {
		t.Fatal("a@1 left the queue when written; it waits for the edge's response")
	}
	if got := ids(n.next(now.Add(n.m.AckTimeout))); fmt.Sprint(got) != "[default/pod/a@1]" {
		t.Fatalf("after ackTimeout without a response handed out %v, want a@1 again", got)
	}
	if _, ok := n.ack(batch[0].Header.ID); !ok { // a resend keeps the message's ID
		t.Fatal("the edge's response to a@1 matched nothing")
	}
	if got := ids(n.next(now.Add(n.m.AckTimeout))); fmt.Sprint(got) != "[default/pod/b@1]" {
		t.Fatalf("after the response handed out %v, want b@1 (the window freed)", got)
	}
	if len(n.entries) != 1 {
		t.Fatalf("%d entries left, want b@1 only", len(n.entries))
	}
}

func TestIdleNodesAreForgottenOnlyWhenDisconnectedWithAnEmptyQueueForForgetAfter(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     func(*node)
		idleFor   time.Duration
		forgotten bool
	}{
		{"disconnected with an empty queue for forgetAfter", func(*node) {}, 10 * time.Minute, true},
		{"disconnected with an empty queue for less", func(*node) {}, 9 * time.Minute, false},
		{"disconnected with a message queued", func(n *node) { n.enqueue(update("a", 1)) }, time.Hour, false},
		{"connected with an empty queue", func(n *node) { n.sess = &session{n: n} }, time.Hour, false},
		{"disconnected after its queue was delivered", func(n *node) {
			n.enqueue(update("a", 1))
			n.ack(n.next(time.Now())[0].Header.ID)
		}, 10 * time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testNode(t, 10)
			m := n.m
			m.ForgetAfter = 10 * time.Minute
			m.nodes[n.name] = n
			tc.setup(n)
			m.forget(time.Now().Add(tc.idleFor))
			_, kept := m.nodes[n.name]
			if kept == tc.forgotten {
				t.Fatalf("forgotten=%v, want %v", !kept, tc.forgotten)
			}
		})
	}
}

func TestAMessageForAForgottenNodeGoesToAFreshQueue(t *testing.T) {
	n := testNode(t, 10)
	m := n.m
	m.nodes[n.name] = n
	m.forget(time.Now().Add(m.ForgetAfter))
	if n.enqueue(update("a", 1)) {
		t.Fatal("a forgotten node took a message (it would never be sent)")
	}
	msg := update("a", 2)
	msg.Route.Resource = "node/edge-1/default/pod/a"
	if err := m.Handle(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	fresh := m.nodes["edge-1"]
	if fresh == nil || fresh == n || fmt.Sprint(ids(fresh.next(time.Now()))) != "[default/pod/a@2]" {
		t.Fatal("the message did not land in a fresh queue for the node")
	}
}
