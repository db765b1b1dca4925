package cloudhub

import (
	"context"
	"slices"
	"time"
)

// Drain hands this replica's nodes over before it stops (SIGTERM; the host calls it before stopping
// any module, so their last reports are still handled): the hub stops accepting connections, and the
// sessions of the nodes connected here are closed
// one at a time, spread evenly over the drain period (bounded by what is left of the shutdown), so
// the nodes reconnect — through the load balancer, to the other replicas — without stampeding them.
// Each closed session releases the node's ownership Lease (ownership on), and the replica that takes
// the node reconciles it from its inventory. A node reconnects within its redial backoff, far inside
// the node grace period, so it never turns NotReady.
func (m *Module) Drain(ctx context.Context) {
	if m.DrainPeriod <= 0 || len(m.servers) == 0 {
		return
	}
	_ = m.servers[0].Close() // the hub's listener (listened first): reconnects go to the other replicas
	m.stopQUIC()             // and the QUIC lane's, when it is on
	m.mu.Lock()
	var held []*node
	for _, n := range m.nodes {
		n.mu.Lock()
		if n.sess != nil {
			held = append(held, n)
		}
		n.mu.Unlock()
	}
	m.mu.Unlock()
	if len(held) == 0 {
		return
	}
	slices.SortFunc(held, func(a, b *node) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	period := m.DrainPeriod
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) - time.Second; left < period {
			period = max(left, 0)
		}
	}
	step := period / time.Duration(len(held))
	m.host.Logger().Info("draining: closing the nodes' sessions so they reconnect to the other replicas", "nodes", len(held), "over", period)
	for i, n := range held {
		n.detach(nil)
		m.metrics.drained.Inc()
		if i == len(held)-1 || step <= 0 {
			continue
		}
		select {
		case <-ctx.Done():
			step = 0 // out of time: close the rest at once
		case <-time.After(step):
		}
	}
}
