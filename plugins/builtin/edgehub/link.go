package edgehub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// serve runs one connection: a reader, a worker for what the cloud sends, and the upstream sender.
// It returns when the connection breaks or ctx ends; unacknowledged upstream messages stay in the
// outbox and are sent again on the next connection.
func (m *Module) serve(ctx context.Context, conn *hub.Conn) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer conn.Close()
	m.online.Store(true)
	m.metrics.online.Set(1)
	m.host.Logger().Info("connected to the cloud", "server", m.Server)
	m.event(ctx, message.OpConnected)
	defer func() {
		m.online.Store(false)
		m.metrics.online.Set(0)
		m.event(context.WithoutCancel(ctx), message.OpDisconnected)
	}()

	up := &upstream{m: m, conn: conn, inflight: map[string]*flight{}, acked: map[int64]bool{}, wake: make(chan struct{}, 1),
		sendOnce: conn.Lane() == hub.LaneKubeEdge, asked: map[string]*flight{}}
	if up.sendOnce {
		up.ke = newKubeEdgeCloud(m.host.NodeName())
		up.lease = &kubeEdgeLease{node: m.host.NodeName(), duration: m.LeaseDuration}
	}
	down := make(chan *message.Message, 256) // ≥ the cloud's window, so the reader never stalls behind the worker
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			msg, err := conn.Receive(ctx)
			if err != nil {
				cancel(err)
				return
			}
			m.proven.Store(true)
			if msg.IsReply() && up.ack(ctx, msg) {
				continue
			}
			select {
			case down <- &msg:
			case <-ctx.Done():
				return
			}
		}
	})
	async := make(chan struct{}, max(m.AsyncLimit, 1)) // slots for groups handled beside the others
	wg.Go(func() {
		for {
			select {
			case msg := <-down:
				if m.async[msg.Route.Group] {
					// A request/answer group (servicebus calls): its messages are independent, so a
					// slow one must not hold up this node's objects behind it.
					select {
					case async <- struct{}{}:
					case <-ctx.Done():
						return
					}
					wg.Go(func() {
						defer func() { <-async }()
						if err := m.handleDown(ctx, conn, *msg); err != nil {
							cancel(err)
						}
					})
					continue
				}
				if err := m.handleDown(ctx, conn, *msg); err != nil {
					cancel(err)
					return
				}
			case <-ctx.Done():
				return
			}
		}
	})
	kubeedge := conn.Lane() == hub.LaneKubeEdge
	if kubeedge {
		// KubeEdge's cloudcore: no inventory (it keeps ObjectSync records instead), and it expects the
		// keepalive message its own edgehub sends every heartbeat.
		m.host.Logger().Info("the cloud is KubeEdge's cloudcore (it selected no kedge.hub.v1): KubeEdge's JSON lane, upstream messages sent once", "server", m.Server)
		wg.Go(func() { m.keepalive(ctx, conn) })
		if m.LeaseDuration > 0 {
			wg.Go(func() { m.renewLease(ctx, conn, up) })
		}
	} else if m.SendInventory {
		if err := m.sendInventory(ctx, conn); err != nil {
			m.host.Logger().Warn("inventory not sent; the cloud resends from its own records", "err", err)
		}
	}
	cancel(up.run(ctx))
	return context.Cause(ctx)
}

// keepalive sends KubeEdge's keepalive message every heartbeat, as KubeEdge's edgehub does (its
// cloudhub closes a node's session when they stop).
func (m *Module) keepalive(ctx context.Context, conn *hub.Conn) {
	tick := time.NewTicker(m.Heartbeat)
	defer tick.Stop()
	for {
		ka, _ := message.New("websocket", "resource", message.OpKeepalive, "node").WithContent("ping")
		if err := conn.Send(ctx, ka); err != nil {
			return // the connection is gone; serve notices through Receive
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// handleDown gives a message from the cloud to the module that owns its group and acknowledges it
// with that module's answer — for metamanager, once the object is on disk. A repeat of a message
// already handled is acknowledged again without being handled twice.
func (m *Module) handleDown(ctx context.Context, conn *hub.Conn, msg message.Message) error {
	if msg.IsReply() {
		m.metrics.down.WithLabelValues("late_ack").Inc() // an answer to something already acknowledged
		return nil
	}
	if !m.recent.Claim(msg.Header.ID) {
		m.metrics.down.WithLabelValues("repeat").Inc()
		ack, _ := msg.Reply(Name, "OK")
		return conn.Send(ctx, ack)
	}
	target, ok := m.Dispatch[msg.Route.Group]
	if !ok {
		m.metrics.down.WithLabelValues("no_handler").Inc()
		return conn.Send(ctx, msg.ErrorReply(Name, fmt.Errorf("no edge module handles group %q (edgehub dispatch)", msg.Route.Group)))
	}
	resp, err := m.host.SendSync(ctx, target, msg, m.HandleTimeout)
	switch {
	case errors.Is(err, sdk.ErrUnknownModule):
		m.metrics.down.WithLabelValues("no_handler").Inc()
		return conn.Send(ctx, msg.ErrorReply(Name, fmt.Errorf("edge module %s is not running", target)))
	case err != nil:
		// Not answered in time, but queued for the module, which will handle it (the router never
		// drops): keep the claim, so the cloud's resend is acknowledged as a repeat, not handled twice.
		m.metrics.down.WithLabelValues("slow").Inc()
		m.host.Logger().Warn("edge module slow to answer a message from the cloud", "msg", msg.String(), "to", target, "err", err)
		return nil
	}
	m.metrics.down.WithLabelValues("ok").Inc()
	resp.Header.ParentID = msg.Header.ID
	return conn.Send(ctx, resp)
}

// sendInventory tells the cloud which objects this node holds at which versions.
func (m *Module) sendInventory(ctx context.Context, conn *hub.Conn) error {
	resp, err := m.host.SendSync(ctx, m.MetaManager, message.New(Name, "meta", message.OpInventory, ""), m.HandleTimeout)
	if err != nil {
		return err
	}
	if resp.Route.Operation == message.OpError {
		return fmt.Errorf("%s: %s", m.MetaManager, resp.Content)
	}
	inv := message.New(Name, "hub", message.OpInventory, "")
	inv.Content = resp.Content
	return conn.Send(ctx, inv)
}

// upstream sends the outbox in order with at most Window messages unacknowledged, resends what is
// not acknowledged in time, and removes from the outbox the prefix that is acknowledged.
type upstream struct {
	m    *Module
	conn *hub.Conn

	mu       sync.Mutex
	inflight map[string]*flight // by message ID
	order    []int64            // sent, not yet removed from the outbox, ascending
	acked    map[int64]bool     // acknowledged out of order, waiting for the prefix
	lastSent int64
	wake     chan struct{}
	// sendOnce: the cloud is KubeEdge's cloudcore, which acknowledges nothing but answers sync
	// messages. Each message is done once written (at most once, as KubeEdge's own edgehub sends);
	// a sync one waits in asked (bounded) for its answer, which goes to the module that asked.
	sendOnce   bool
	asked      map[string]*flight
	askedOrder []string
	// ke adapts what Kedge's edge modules send to what KubeEdge's cloudcore expects (sendOnce only).
	ke *kubeEdgeCloud
	// lease is the node Lease kept through KubeEdge's cloudcore (sendOnce only; kubeedge_lease.go).
	lease *kubeEdgeLease
}

// maxAsked bounds the sync messages sent to a KubeEdge cloud whose answers are still routed.
const maxAsked = 1024

type flight struct {
	seq   int64
	sent  time.Time
	tries int // resends on this connection: each waits twice as long, up to 16 times ackTimeout
	msg   message.Message
}

func (u *upstream) run(ctx context.Context) error {
	tick := time.NewTicker(max(u.m.AckTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		if err := u.trim(ctx); err != nil {
			return err
		}
		if err := u.fill(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-u.m.kick:
		case <-u.wake:
		case <-tick.C:
			if err := u.resend(ctx); err != nil {
				return err
			}
		}
	}
}

// fill sends outbox entries not yet sent until the window is full.
func (u *upstream) fill(ctx context.Context) error {
	u.mu.Lock()
	room, held := u.m.Window-len(u.inflight), len(u.order)
	u.mu.Unlock()
	if room <= 0 {
		return nil
	}
	entries, err := u.m.outbox.Peek(ctx, held+room)
	if err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	for _, e := range entries {
		if e.Seq <= u.lastSent {
			continue
		}
		msg, err := message.Decode(e.Payload)
		if err != nil { // cannot happen for what Handle wrote; never let it block the queue
			u.m.host.Logger().Error("outbox entry is damaged and is dropped", "seq", e.Seq, "err", err)
			u.m.metrics.damaged.Inc()
			u.mu.Lock()
			u.order, u.acked[e.Seq], u.lastSent = append(u.order, e.Seq), true, e.Seq
			u.mu.Unlock()
			continue
		}
		if u.sendOnce {
			u.mu.Lock()
			outs, err := u.ke.translateAll(msg, time.Now())
			u.mu.Unlock()
			if err != nil {
				u.m.host.Logger().Error("upstream message cannot be put in KubeEdge's form and is dropped", "msg", msg.String(), "err", err)
				u.m.metrics.damaged.Inc()
				u.mu.Lock()
				u.order, u.acked[e.Seq], u.lastSent = append(u.order, e.Seq), true, e.Seq
				u.mu.Unlock()
				continue
			}
			for _, out := range outs {
				if err := u.conn.Send(ctx, out); err != nil {
					return err
				}
			}
			u.mu.Lock()
			u.order, u.acked[e.Seq], u.lastSent = append(u.order, e.Seq), true, e.Seq
			if len(outs) > 0 && outs[0].Header.Sync {
				msg = outs[0]
				u.asked[msg.Header.ID] = &flight{seq: e.Seq, msg: msg}
				u.askedOrder = append(u.askedOrder, msg.Header.ID)
				if len(u.askedOrder) > maxAsked {
					delete(u.asked, u.askedOrder[0])
					u.askedOrder = u.askedOrder[1:]
				}
			}
			u.mu.Unlock()
			u.m.metrics.sent.Inc()
			continue
		}
		u.mu.Lock()
		u.inflight[msg.Header.ID] = &flight{seq: e.Seq, sent: time.Now(), msg: msg}
		u.order = append(u.order, e.Seq)
		u.lastSent = e.Seq
		u.mu.Unlock()
		if err := u.conn.Send(ctx, msg); err != nil {
			return err
		}
		u.m.metrics.sent.Inc()
	}
	return nil
}

// ack records the cloud's answer to an upstream message; false if it answers nothing in flight.
func (u *upstream) ack(ctx context.Context, resp message.Message) bool {
	u.mu.Lock()
	if u.ke != nil && u.ke.answered(resp) {
		delete(u.asked, resp.Header.ParentID)
		u.mu.Unlock()
		answer := string(resp.Content)
		if len(answer) > 300 {
			answer = answer[:300] + "…"
		}
		u.m.host.Logger().Info("KubeEdge's cloudcore answered the node's registration; node status follows", "answer", answer)
		return true
	}
	if u.lease != nil {
		if mine, err := u.lease.answered(resp); mine {
			u.mu.Unlock()
			if err != nil {
				u.m.metrics.leases.WithLabelValues("error").Inc()
				u.m.host.Logger().Warn("node lease not renewed through KubeEdge's cloudcore; trying again", "err", err)
			}
			return true
		}
	}
	f, ok := u.inflight[resp.Header.ParentID]
	if ok {
		delete(u.inflight, resp.Header.ParentID)
		u.acked[f.seq] = true
	} else if f, ok = u.asked[resp.Header.ParentID]; ok {
		delete(u.asked, resp.Header.ParentID) // done when written; only its answer was awaited
	}
	u.mu.Unlock()
	if !ok {
		return false
	}
	u.m.metrics.acked.Inc()
	select {
	case u.wake <- struct{}{}:
	default:
	}
	if resp.Route.Operation == message.OpError {
		u.m.metrics.refused.Inc()
		u.m.host.Logger().Error("the cloud refused an upstream message; it is not sent again", "msg", f.msg.String(), "reason", string(resp.Content))
	}
	if f.msg.Header.Sync { // a module waits for this answer
		resp.Route.Destination = f.msg.Route.Source
		if err := u.m.host.Reply(ctx, resp); err != nil && !errors.Is(err, sdk.ErrNoWaiter) && !errors.Is(err, sdk.ErrUnknownModule) {
			u.m.host.Logger().Warn("answer from the cloud not delivered", "to", f.msg.Route.Source, "err", err)
		}
	}
	return true
}

// trim removes the acknowledged prefix from the outbox.
func (u *upstream) trim(ctx context.Context) error {
	u.mu.Lock()
	var upTo int64
	n := 0
	for n < len(u.order) && u.acked[u.order[n]] {
		upTo = u.order[n]
		delete(u.acked, upTo)
		n++
	}
	u.order = slices.Delete(u.order, 0, n)
	u.mu.Unlock()
	if n == 0 {
		return nil
	}
	if _, err := u.m.outbox.Ack(ctx, upTo); err != nil {
		return fmt.Errorf("remove acknowledged messages from the outbox: %w", err)
	}
	return nil
}

// resend sends again, in order, what was not acknowledged within AckTimeout.
func (u *upstream) resend(ctx context.Context) error {
	u.mu.Lock()
	var due []*flight
	now := time.Now()
	for _, f := range u.inflight {
		if now.Sub(f.sent) >= u.m.AckTimeout<<min(f.tries, 4) {
			f.sent = now
			f.tries++
			due = append(due, f)
		}
	}
	u.mu.Unlock()
	slices.SortFunc(due, func(a, b *flight) int { return int(a.seq - b.seq) })
	for _, f := range due {
		if err := u.conn.Send(ctx, f.msg); err != nil {
			return err
		}
		u.m.metrics.resent.Inc()
	}
	return nil
}
