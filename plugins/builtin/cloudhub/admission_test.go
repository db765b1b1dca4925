package cloudhub

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-io/kedge/host/hub"
)

// TestConnectionsPastMaxHandshakesWaitInTheAcceptQueueAndAreAdmittedWhenASlotFrees proves the
// admission bound of a reconnect storm: while maxHandshakes connections are being admitted (here one
// that never starts its TLS handshake), a node's dial is not accepted — and not refused either: it
// waits, and connects as soon as the slot is free, without redialing; a connected node does not hold
// a slot (a second node connects beside it).
func TestConnectionsPastMaxHandshakesWaitInTheAcceptQueueAndAreAdmittedWhenASlotFrees(t *testing.T) {
	c := startCloud(t, func(m *Module) { m.MaxHandshakes = 1 })
	a, b := newRawNode(t, c, "edge-a"), newRawNode(t, c, "edge-b")

	hold, err := net.Dial("tcp", c.hub.Address) // accepted, never says hello: holds the only slot
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the holding connection to be accepted", func() bool {
		l := c.hub.admitted()
		return l != nil && l.pending() == 1
	})
	dialed := make(chan error, 1)
	go func() {
		conn, err := hub.Dial(context.Background(), hub.DialOptions{URL: "wss://" + c.hub.Address, TLS: a.tls, NodeID: "edge-a",
			HandshakeTimeout: 2 * time.Minute, Options: hub.Options{Heartbeat: 5 * time.Second}})
		if err == nil {
			t.Cleanup(func() { _ = conn.Close() })
		}
		dialed <- err
	}()
	select {
	case err := <-dialed:
		t.Fatalf("a dial past maxHandshakes finished while the slot was held (err %v); want it to wait", err)
	case <-time.After(300 * time.Millisecond): // it waits (how long it would wait is not asserted)
	}
	if c.connected("edge-a") {
		t.Fatal("edge-a was admitted past maxHandshakes")
	}
	_ = hold.Close()
	if err := <-dialed; err != nil {
		t.Fatalf("the waiting dial, once the slot was free: %v; want it admitted", err)
	}
	eventually(t, "edge-a to be connected", func() bool { return c.connected("edge-a") })
	if n := testutil.ToFloat64(c.hub.metrics.admissionFull); n < 1 {
		t.Errorf("kedge_cloudhub_admission_full_total = %v, want at least 1", n)
	}
	eventually(t, "edge-a's slot to be free", func() bool { return c.hub.admitted().pending() == 0 })
	b.dial(c) // edge-a's session does not hold the slot
}
