package cloudhub

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// answerer is a cloud module that answers every message with OK, after gate is closed when gate is
// set; it records the resources it was given, in order.
type answerer struct {
	h         sdk.Host
	startGate chan struct{} // Start waits for it when set (a controller listing its informers)
	gate      chan struct{}
	stopGate  chan struct{} // Stop waits for it when set
	mu        sync.Mutex
	seen      []string
}

func (a *answerer) Start(_ context.Context, h sdk.Host) error {
	a.h = h
	if a.startGate != nil {
		<-a.startGate
	}
	return nil
}
func (a *answerer) Stop(context.Context) error {
	if a.stopGate != nil {
		<-a.stopGate
	}
	return nil
}
func (a *answerer) Handle(ctx context.Context, m sdk.Message) error {
	if a.gate != nil {
		select {
		case <-a.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	a.mu.Lock()
	a.seen = append(a.seen, m.Route.Resource)
	a.mu.Unlock()
	r, err := m.Reply(a.h.Name(), "OK")
	if err != nil {
		return err
	}
	return a.h.Reply(ctx, r)
}

func (a *answerer) resources() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen)
}

// startWhileStarting starts cloudhub and others in the background and returns once cloudhub
// listens, while slow (one of others) is still starting: until the test closes slow.startGate.
// Cleanup lets slow finish starting, then stops everything.
func startWhileStarting(t *testing.T, configure func(*Module), slow *answerer, others ...modules.Planned) *cloud {
	t.Helper()
	c, start, err := newCloud(t, configure, others...)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- start() }()
	t.Cleanup(func() {
		select {
		case <-slow.startGate:
		default:
			close(slow.startGate)
		}
		if <-started == nil {
			c.stop()
		}
		c.db.Close()
	})
	eventually(t, "cloudhub to listen", func() bool { return slices.Contains(c.mgr.Running(), Name) })
	return c
}

func planned(name string, m sdk.Module) modules.Planned {
	return modules.Planned{Info: sdk.Info{Name: name, Group: name}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: m}
}

func TestASlowCloudModuleHoldsUpOnlyTheEdgesMessagesForItAndEachModuleGetsThemInOrder(t *testing.T) {
	for _, tc := range []struct {
		name, node string
		twin       func(i int) message.Message // a twin report as this peer sends it
		wantTwin   []string                    // the resources devicecontroller gets, in order
	}{
		{"Kedge edge", "edge-1", func(i int) message.Message {
			return message.New("devicetwin", "twin", message.OpUpdate, "default/devicetwin/d"+string(rune('0'+i)))
		}, []string{"node/edge-1/default/devicetwin/d1", "node/edge-1/default/devicetwin/d2"}},
		{"KubeEdge edge (its devicetwin paths are renamed before they are sorted into lanes)", "ke-1", func(i int) message.Message {
			return message.New("twin", "resource", message.OpUpdate, "device/default/d"+string(rune('0'+i))+"/twin/edge_updated")
		}, []string{"node/ke-1/default/twin_edge_updated/d1", "node/ke-1/default/twin_edge_updated/d2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			twins := &answerer{gate: make(chan struct{})}
			ctl := &answerer{}
			c := startCloud(t, func(m *Module) {
				m.Dispatch = map[string]string{"resource": "ctl", "twin": "twins"}
			}, planned("ctl", ctl), planned("twins", twins))
			edge := newRawNode(t, c, tc.node)
			edge.dial(c)
			send := func(m message.Message) string {
				t.Helper()
				if err := edge.conn.Send(context.Background(), m); err != nil {
					t.Fatal(err)
				}
				return m.Header.ID
			}
			t1, t2 := send(tc.twin(1)), send(tc.twin(2))
			s1 := send(message.New("edged", "resource", message.OpUpdate, "default/nodestatus/"+tc.node))
			s2 := send(message.New("edged", "resource", message.OpUpdate, "default/pod/p1"))
			// The twin module answers nothing until the gate opens: the node's status and pod must
			// not wait for it.
			if got := []string{edge.receive().Header.ParentID, edge.receive().Header.ParentID}; !slices.Equal(got, []string{s1, s2}) {
				t.Fatalf("answers while the twin module is stuck: %v; want the status's and the pod's, in order %v", got, []string{s1, s2})
			}
			if got := twins.resources(); len(got) != 0 {
				t.Fatalf("the twin module handled %v before its gate opened", got)
			}
			close(twins.gate)
			if got := []string{edge.receive().Header.ParentID, edge.receive().Header.ParentID}; !slices.Equal(got, []string{t1, t2}) {
				t.Fatalf("answers after the gate opened: %v; want the twin reports', in the order sent %v", got, []string{t1, t2})
			}
			if got := twins.resources(); !slices.Equal(got, tc.wantTwin) {
				t.Errorf("twin module got %v; want %v", got, tc.wantTwin)
			}
			want := []string{"node/" + tc.node + "/default/nodestatus/" + tc.node, "node/" + tc.node + "/default/pod/p1"}
			if got := ctl.resources(); !slices.Equal(got, want) {
				t.Errorf("controller got %v; want %v", got, want)
			}
		})
	}
}

// TestAnEdgeMessageForAModuleStoppedWithCloudcoreIsLeftUnansweredForTheEdgeToResend proves a graceful
// shutdown loses nothing: the controllers stop before cloudhub, and a message an edge sends in between
// is not refused (an error answer makes the edge drop it) — the session ends unanswered and the edge's
// resend on its next connection is handled as new.
func TestAnEdgeMessageForAModuleStoppedWithCloudcoreIsLeftUnansweredForTheEdgeToResend(t *testing.T) {
	ctl := &answerer{stopGate: make(chan struct{})}
	c := startCloud(t, func(m *Module) { m.Dispatch = map[string]string{"resource": "ctl"} }, planned("ctl", ctl))
	edge := newRawNode(t, c, "edge-1")
	edge.dial(c)
	stopped := make(chan struct{})
	go func() { c.stop(); close(stopped) }()
	t.Cleanup(func() {
		select {
		case <-ctl.stopGate:
		default:
			close(ctl.stopGate)
		}
		<-stopped
	})
	// ctl stops first and is held in its Stop; cloudhub still serves the edge.
	eventually(t, "ctl to stop receiving", func() bool {
		return errors.Is(c.rt.Send(context.Background(), "ctl", message.New("test", "resource", message.OpUpdate, "node/edge-1/default/pod/probe")), sdk.ErrUnknownModule)
	})
	msg := message.New("edged", "resource", message.OpUpdate, "default/pod/p1")
	if err := edge.conn.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := edge.conn.Receive(ctx)
	if err == nil {
		t.Fatalf("the edge got %s for a message no module took; want the session closed unanswered", got.String())
	}
	if n := testutil.ToFloat64(c.hub.metrics.up.WithLabelValues("stopping")); n != 1 {
		t.Errorf("kedge_cloudhub_upstream_total{result=stopping} = %v, want 1", n)
	}
	c.hub.mu.Lock()
	n := c.hub.nodes["edge-1"]
	c.hub.mu.Unlock()
	if !n.recent.Claim(msg.Header.ID) {
		t.Error("the unanswered message is still remembered as taken: its resend would be acknowledged as a repeat and never handled")
	}
}

// TestAnEdgeMessageArrivingWhileCloudcoreStartsWaitsForItsModuleInsteadOfBeingRefused proves the other
// end of a restart: cloudhub starts first and edges connect at once, while a controller after it is
// still starting (and the next one has no mailbox yet). The edge's message is answered by its module
// once it runs — not refused with "not running", which the edge would take as final.
func TestAnEdgeMessageArrivingWhileCloudcoreStartsWaitsForItsModuleInsteadOfBeingRefused(t *testing.T) {
	slow := &answerer{startGate: make(chan struct{})}
	ctl := &answerer{}
	c := startWhileStarting(t, func(m *Module) { m.Dispatch = map[string]string{"resource": "ctl"} }, slow, planned("aslow", slow), planned("ctl", ctl))
	edge := newRawNode(t, c, "edge-1")
	edge.dial(c)
	msg := message.New("edged", "resource", message.OpUpdate, "default/pod/p1")
	if err := edge.conn.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message to wait for ctl", func() bool { return testutil.ToFloat64(c.hub.metrics.startWaits) == 1 })
	close(slow.startGate)
	got := edge.receive()
	if got.Header.ParentID != msg.Header.ID || got.Route.Operation == message.OpError {
		t.Fatalf("the edge got %s; want ctl's answer to its message", got.String())
	}
	if got := ctl.resources(); !slices.Equal(got, []string{"node/edge-1/default/pod/p1"}) {
		t.Errorf("ctl handled %v, want the edge's pod", got)
	}
}

// eventsLog records the node events the hub's events group gets, as "<op> <resource>".
type eventsLog struct {
	answerer
}

func (e *eventsLog) Handle(_ context.Context, m sdk.Message) error {
	e.mu.Lock()
	e.seen = append(e.seen, m.Route.Operation+" "+m.Route.Resource)
	e.mu.Unlock()
	return nil
}

// A controller that follows node events and is still starting when an edge connects (cloudhub
// starts first, edges connect at once) would otherwise never hear of the connection or the
// inventory, and send the node nothing until it reconnected.
func TestNodeEventsWhileCloudcoreStartsAreHeldAndDeliveredInOrderOnceItsModulesHaveStarted(t *testing.T) {
	events := &eventsLog{answerer{startGate: make(chan struct{})}}
	c := startWhileStarting(t, nil, &events.answerer, modules.Planned{Info: sdk.Info{Name: "ctl", Group: "hubevents"}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: events})
	edge := newRawNode(t, c, "edge-1")
	edge.dial(c)
	inv := message.New("edgehub", "hub", message.OpInventory, "")
	if err := edge.conn.Send(context.Background(), inv); err != nil {
		t.Fatal(err)
	}
	if got := edge.receive(); got.Header.ParentID != inv.Header.ID || got.Route.Operation == message.OpError {
		t.Fatalf("the edge got %s; want its inventory acknowledged", got.String())
	}
	eventually(t, "the connection and the inventory to be held", func() bool { return testutil.ToFloat64(c.hub.metrics.eventsHeld) == 2 })
	if got := events.resources(); len(got) != 0 {
		t.Fatalf("a module still starting got %v", got)
	}
	close(events.startGate)
	res := "node/edge-1/-/connection/edge-1"
	want := []string{message.OpConnected + " " + res, message.OpInventory + " " + res}
	eventually(t, "the held events to arrive", func() bool { return len(events.resources()) == 2 })
	if got := events.resources(); !slices.Equal(got, want) {
		t.Fatalf("the events group got %v, want %v", got, want)
	}
	_ = edge.conn.Close()
	eventually(t, "the disconnection to arrive after them", func() bool { return len(events.resources()) == 3 })
	if got := events.resources(); got[2] != message.OpDisconnected+" "+res {
		t.Fatalf("the events group got %v, want the disconnection last", got)
	}
	if v := testutil.ToFloat64(c.hub.metrics.eventsHeld); v != 2 {
		t.Fatalf("%v events held, want 2 (none once every module had started)", v)
	}
}

// A cloud module that answers an edge's message after cloudhub stopped waiting (handleTimeout) has
// its answer delivered to the edge once; edgecore takes an answer as the acknowledgement of its own
// message and answers nothing back, so the answer must not wait in the node's window for an
// acknowledgement: it was resent forever and, 64 of them later, held the whole window.
func TestALateAnswerFromACloudModuleReachesTheEdgeOnceAndLeavesTheNodesQueue(t *testing.T) {
	ctl := &answerer{gate: make(chan struct{})}
	c := startCloud(t, func(m *Module) {
		m.Dispatch = map[string]string{"resource": "ctl"}
		m.HandleTimeout, m.Window = 200*time.Millisecond, 1 // ackTimeout stays long: the edge acknowledges nothing here
	}, planned("ctl", ctl))
	edge := newRawNode(t, c, "edge-1")
	edge.dial(c)
	msg := message.New("edged", "resource", message.OpUpdate, "default/podstatus/p1")
	if err := edge.conn.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cloudhub to stop waiting for ctl", func() bool {
		return testutil.ToFloat64(c.hub.metrics.up.WithLabelValues("slow")) == 1
	})
	close(ctl.gate)
	if got := edge.receive(); got.Header.ParentID != msg.Header.ID || got.Route.Operation != message.OpResponse {
		t.Fatalf("the edge got %s; want ctl's late answer to its message", got.String())
	}
	eventually(t, "the answer to leave the node's queue", func() bool {
		n := c.hub.node("edge-1")
		n.mu.Lock()
		defer n.mu.Unlock()
		return len(n.entries) == 0 && len(n.byID) == 0 && n.onWire == 0
	})
	// The window (1) is free: an object for the node goes out, and the answer is not sent again.
	c.send(t, "edge-1", "cm", 7)
	got := edge.receive()
	if got.IsReply() || got.Route.Operation == message.OpResponse {
		t.Fatalf("the edge got %s again; want the object queued after it", got.String())
	}
	if v := testutil.ToFloat64(c.hub.metrics.resent); v != 0 {
		t.Fatalf("%v resends, want none", v)
	}
}
