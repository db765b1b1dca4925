package cloudhub

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-io/kedge/host/hub"
)

// TestConnectionsPastMaxHandshakesAreClosedAtOnceAndCounted proves the admission bound of a reconnect
// storm: while maxHandshakes connections are being admitted (here one that never starts its TLS
// handshake), a node's dial is closed at accept and counted as busy; once the slot is free the same
// node connects, and a connected node does not hold a slot (a second node connects beside it).
func TestConnectionsPastMaxHandshakesAreClosedAtOnceAndCounted(t *testing.T) {
	c := startCloud(t, func(m *Module) { m.MaxHandshakes = 1 })
	a, b := newRawNode(t, c, "edge-a"), newRawNode(t, c, "edge-b")

	hold, err := net.Dial("tcp", c.hub.Address) // accepted, never says hello: holds the only slot
	if err != nil {
		t.Fatal(err)
	}
	busy := func() float64 { return testutil.ToFloat64(c.hub.metrics.rejectedBy.WithLabelValues("busy")) }
	eventually(t, "the holding connection to be accepted", func() bool {
		l := c.hub.admitted()
		return l != nil && l.pending.Load() == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if conn, err := hub.Dial(ctx, hub.DialOptions{URL: "wss://" + c.hub.Address, TLS: a.tls, NodeID: "edge-a", Options: hub.Options{Heartbeat: 5 * time.Second}}); err == nil {
		_ = conn.Close()
		t.Fatal("a dial past maxHandshakes was admitted")
	}
	if got := busy(); got != 1 {
		t.Fatalf("kedge_cloudhub_rejected_total{reason=busy} = %v, want 1", got)
	}
	_ = hold.Close()
	eventually(t, "the slot to be free", func() bool { return c.hub.admitted().pending.Load() == 0 })
	a.dial(c)
	b.dial(c) // edge-a's session does not hold the slot
	if got := busy(); got != 1 {
		t.Fatalf("kedge_cloudhub_rejected_total{reason=busy} = %v after the slot was freed, want still 1", got)
	}
}
