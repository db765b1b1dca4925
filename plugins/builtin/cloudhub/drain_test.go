package cloudhub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-io/kedge/host/hub"
)

// A stopping replica hands its nodes over one at a time, spread over the drain period: when the
// first session is closed the others are still connected, new connections are no longer accepted,
// and in the end every session was closed by the drain.
func TestStopDrainsTheNodesOneAtATimeSpreadOverTheDrainPeriod(t *testing.T) {
	c := startCloud(t, func(m *Module) { m.DrainPeriod = 4 * time.Second })
	var nodes []*rawNode
	for i := range 4 {
		r := newRawNode(t, c, fmt.Sprintf("drain-%d", i))
		r.dial(c)
		nodes = append(nodes, r)
	}
	hubAddr := c.hub.Address
	drained := c.hub.metrics.drained
	stopped := make(chan struct{})
	go func() { // as the host on SIGTERM: Drain while every module runs, then Stop
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c.mgr.Drain(ctx)
		c.stop()
		close(stopped)
	}()
	eventually(t, "the first node's session closed", func() bool { return !c.connected("drain-0") })
	still := 0
	for _, r := range nodes[1:] {
		if c.connected(r.name) {
			still++
		}
	}
	if still < 2 {
		t.Fatalf("when the first node was let go only %d of the other 3 were still connected: the drain is not spread", still)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if conn, err := hub.Dial(ctx, hub.DialOptions{URL: "wss://" + hubAddr, TLS: nodes[0].tls, NodeID: "drain-0"}); err == nil {
		_ = conn.Close()
		t.Fatal("a draining replica accepted a node's new connection")
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("stop did not finish")
	}
	if got := testutil.ToFloat64(drained); got != 4 {
		t.Fatalf("kedge_cloudhub_drained_total %v, want 4", got)
	}
}
