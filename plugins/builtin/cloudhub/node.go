package cloudhub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// node is one edge node's downstream queue, which outlives its connections.
//
// Each entry holds the latest version of one object (or one message that is not about an object).
// At most one version per entry is on the wire: when its acknowledgement comes and the entry has not
// changed meanwhile, the entry is done; if a newer version arrived, that one is sent next. A node that
// reconnects is sent every unacknowledged entry once, at its latest version.
type node struct {
	name    string
	m       *Module
	limiter *rate.Limiter
	recent  *hub.Recent // upstream message IDs already handled or being handled
	// upMu serializes upstream handling across the node's sessions: a replaced session may still be
	// handling a message when the new one receives its resend, and order must hold across both.
	upMu sync.Mutex

	mu      sync.Mutex
	entries map[string]*entry // by key
	order   []*entry          // first-queued first
	byID    map[string]*entry // the version on the wire, by message ID
	onWire  int
	sess    *session
	wake    chan struct{}
	// idleSince is when the node last became disconnected or had its queue change; forgotten is set
	// when the module dropped it from its map (it then takes no message or session).
	idleSince time.Time
	forgotten bool

	// kubeedge: the node's current connection is KubeEdge's edgecore (it did not offer Kedge's
	// subprotocol, so it speaks KubeEdge's JSON lane; or it is listed in kubeedgeNodes). It answers
	// the objects it stores with a response, which acknowledges them as upstream cloudhub's ACK mode
	// expects (kubeEdgeAck): those entries are kept and resent until answered, as for a Kedge peer.
	// Every other entry is sent once, in order, and leaves the queue once written (at most once over
	// the wire). Set at each attach: the node may switch edgecore.
	kubeedge bool
	// asked remembers the sources of sync messages written to a KubeEdge peer, by message ID, so that
	// its answer reaches them; bounded (oldest forgotten first).
	asked      map[string]string
	askedOrder []string
}

// maxAsked bounds the sync messages of a KubeEdge peer whose answers are still routed.
const maxAsked = 1024

type entry struct {
	key    string
	msg    message.Message // latest version
	sentID string          // ID of the version on the wire; "" when none
	sentAt time.Time
	tries  int // resends of it on this connection: each waits twice as long (a slow node is not flooded)
	done   bool
	// inWindow: the version on the wire waits for its acknowledgement and counts in the window
	// (always for a Kedge peer; for a KubeEdge peer, when kubeEdgeAck says so).
	inWindow bool
}

// resendAfter is how long an entry on the wire waits for its acknowledgement before it is sent again:
// ackTimeout, then twice that, up to 16 times.
func resendAfter(ack time.Duration, tries int) time.Duration { return ack << min(tries, 4) }

func newNode(name string, m *Module) *node {
	return &node{
		name: name, m: m,
		limiter: rate.NewLimiter(rate.Limit(m.QPS), m.Burst),
		recent:  hub.NewRecent(4096),
		entries: map[string]*entry{}, byID: map[string]*entry{}, asked: map[string]string{},
		wake: make(chan struct{}, 1), idleSince: time.Now(),
	}
}

// key coalesces writes to one object; anything else (queries, events) is its own entry.
func key(msg message.Message) string {
	switch msg.Route.Operation {
	case message.OpInsert, message.OpUpdate, message.OpPatch, message.OpDelete:
		if r, err := message.ParseEdge(msg.Route.Resource); err == nil && r.Name != "" {
			return "obj/" + msg.Route.Resource
		}
	}
	return "msg/" + msg.Header.ID
}

// enqueue queues msg; false when the node was forgotten (the caller takes a fresh one).
func (n *node) enqueue(msg message.Message) bool {
	k := key(msg)
	n.mu.Lock()
	if n.forgotten {
		n.mu.Unlock()
		return false
	}
	n.idleSince = time.Now()
	if e, ok := n.entries[k]; ok {
		e.msg = msg // the older version is never sent again
		n.m.metrics.coalesced.Inc()
	} else {
		e := &entry{key: k, msg: msg}
		n.entries[k] = e
		n.order = append(n.order, e)
	}
	n.mu.Unlock()
	n.m.metrics.queued.Inc()
	n.poke()
	return true
}

// forgettable says whether the node has been disconnected with an empty queue for after, as of now;
// if so it is marked forgotten.
func (n *node) forgettable(now time.Time, after time.Duration) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sess != nil || len(n.entries) > 0 || now.Sub(n.idleSince) < after {
		return false
	}
	n.forgotten = true
	return true
}

func (n *node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// next returns the next entries to send (oldest first) while the window has room, marking them on
// the wire; due also returns entries whose version on the wire was not acknowledged in time.
func (n *node) next(now time.Time) []message.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []message.Message
	for _, e := range n.order {
		if e.done {
			continue
		}
		if n.kubeedge && !e.inWindow && !kubeEdgeAck(e.msg) {
			// No acknowledgement will come for it: hand it out once, in order, outside the window; the
			// sender reports it written (and so done) with written.
			if e.sentID == "" {
				e.sentID, e.sentAt = e.msg.Header.ID, now
				n.byID[e.sentID] = e
				out = append(out, e.msg)
			}
			continue
		}
		if e.sentID != "" && now.Sub(e.sentAt) >= resendAfter(n.m.AckTimeout, e.tries) { // resend, at the latest version
			delete(n.byID, e.sentID)
			e.sentID, e.sentAt = e.msg.Header.ID, now
			e.tries++
			n.byID[e.sentID] = e
			out = append(out, e.msg)
			n.m.metrics.resent.Inc()
			continue
		}
		if e.sentID == "" && n.onWire < n.m.Window {
			e.sentID, e.sentAt, e.tries = e.msg.Header.ID, now, 0
			n.byID[e.sentID] = e
			if !e.inWindow {
				e.inWindow = true
				n.onWire++
			}
			out = append(out, e.msg)
		}
	}
	return out
}

// ack settles the entry whose version on the wire is id; it returns that version (for a waiting
// sender) and whether anything matched.
func (n *node) ack(id string) (message.Message, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.byID[id]
	if !ok {
		return message.Message{}, false
	}
	delete(n.byID, id)
	if e.inWindow {
		e.inWindow = false
		n.onWire--
	}
	sent := e.msg
	if e.msg.Header.ID == id {
		e.done = true
		delete(n.entries, e.key)
		n.compact()
	} else {
		e.sentID = "" // a newer version waits: send it next
	}
	n.poke()
	return sent, true
}

// written settles an entry of a KubeEdge peer once its version id was written to the connection: it
// leaves the queue, unless a newer version arrived meanwhile, which is sent next.
func (n *node) written(msg message.Message) {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := msg.Header.ID
	e, ok := n.byID[id]
	if !ok {
		return // the connection was reset meanwhile: the entry is sent again on the next one
	}
	if e.inWindow {
		return // KubeEdge's ACK mode: the edge's response settles it (ack), or it is resent
	}
	delete(n.byID, id)
	if msg.Header.Sync {
		n.asked[id] = msg.Route.Source
		n.askedOrder = append(n.askedOrder, id)
		if len(n.askedOrder) > maxAsked {
			delete(n.asked, n.askedOrder[0])
			n.askedOrder = n.askedOrder[1:]
		}
	}
	if e.msg.Header.ID == id {
		e.done = true
		delete(n.entries, e.key)
		n.compact()
		return
	}
	e.sentID = ""
	n.poke()
}

// answered returns the module that asked the sync message id of a KubeEdge peer, forgetting it.
func (n *node) answered(id string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	src, ok := n.asked[id]
	delete(n.asked, id)
	return src, ok
}

// compact drops finished entries from the front of the order (the rest are skipped until then).
func (n *node) compact() {
	i := 0
	for i < len(n.order) && n.order[i].done {
		i++
	}
	if i > len(n.order)/2 || i > 64 {
		kept := n.order[:0]
		for _, e := range n.order {
			if !e.done {
				kept = append(kept, e)
			}
		}
		clear(n.order[len(kept):])
		n.order = kept
	}
}

// attach makes conn the node's connection, closing any previous one; what was on the wire there is
// sent again on the new one. It returns nil when the node was forgotten (the caller takes a fresh one).
func (n *node) attach(conn *hub.Conn) *session {
	n.mu.Lock()
	if n.forgotten {
		n.mu.Unlock()
		return nil
	}
	old := n.sess
	kubeedge := conn.Lane() == hub.LaneKubeEdge || n.m.isKubeEdge(n.name)
	s := &session{n: n, conn: conn, up: make(chan *message.Message, 256), kubeedge: kubeedge}
	n.sess = s
	n.kubeedge = kubeedge
	n.resetWire()
	n.mu.Unlock()
	if old != nil {
		n.m.metrics.replaced.Inc()
		_ = old.conn.Close()
	}
	n.poke()
	return s
}

// detach forgets s if it is still the node's connection (nil: whatever connection it has).
func (n *node) detach(s *session) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sess == nil || (s != nil && n.sess != s) {
		return
	}
	_ = n.sess.conn.Close()
	n.sess = nil
	n.idleSince = time.Now()
	n.resetWire()
}

func (n *node) resetWire() {
	for id, e := range n.byID {
		e.sentID, e.inWindow = "", false
		delete(n.byID, id)
	}
	n.onWire = 0
}

// awaiting says whether messages are on the wire waiting for an acknowledgement (so a resend may fall due).
func (n *node) awaiting() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.byID) > 0
}

func (n *node) current(s *session) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sess == s
}

// session is one connection of a node.
type session struct {
	n    *node
	conn *hub.Conn
	up   chan *message.Message // from the edge, handled in order (pointers: an idle session holds a small buffer)
	// kubeedge: the peer is KubeEdge's edgecore (see node.kubeedge), fixed for the session.
	kubeedge bool
}

// run serves a session until its connection ends: a reader, an upstream worker and the sender.
func (m *Module) run(s *session) error {
	ctx, cancel := context.WithCancelCause(m.life)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	// The upstream worker runs only while messages from the edge wait (one at a time, so they are
	// handled in order): an idle node costs no goroutine for it (10,000 idle nodes: ~80 MB of stacks).
	var working atomic.Bool
	startWorker := func() {
		if !working.CompareAndSwap(false, true) {
			return // the running worker takes it
		}
		wg.Go(func() {
			for {
				select {
				case msg := <-s.up:
					if err := m.upstream(ctx, s, *msg); err != nil {
						cancel(err)
						return
					}
					continue
				case <-ctx.Done():
					return
				default:
				}
				working.Store(false)
				// A message queued between the empty check and the store found the flag still set.
				if len(s.up) == 0 || !working.CompareAndSwap(false, true) {
					return
				}
			}
		})
	}
	wg.Go(func() {
		for {
			msg, err := s.conn.Receive(ctx)
			if err != nil {
				cancel(err)
				return
			}
			if msg.IsReply() {
				if sent, ok := s.n.ack(msg.Header.ParentID); ok {
					m.metrics.acked.Inc()
					if sent.Header.Sync { // a cloud module waits for the edge's answer
						msg.Route.Destination = sent.Route.Source
						if err := m.host.Reply(ctx, msg); err != nil && !errors.Is(err, sdk.ErrNoWaiter) && !errors.Is(err, sdk.ErrUnknownModule) {
							m.host.Logger().Warn("edge answer not delivered", "node", s.n.name, "err", err)
						}
					}
					if msg.Route.Operation == message.OpError {
						m.host.Logger().Warn("edge refused a message", "node", s.n.name, "msg", sent.String(), "reason", string(msg.Content))
					}
				} else if src, ok := s.n.answered(msg.Header.ParentID); ok {
					// A KubeEdge peer's answer to a sync message: to the module that asked.
					msg.Route.Destination = src
					if err := m.host.Reply(ctx, msg); err != nil && !errors.Is(err, sdk.ErrNoWaiter) && !errors.Is(err, sdk.ErrUnknownModule) {
						m.host.Logger().Warn("edge answer not delivered", "node", s.n.name, "err", err)
					}
				} else if !s.kubeedge {
					m.metrics.lateAcks.Inc()
				}
				continue
			}
			select {
			case s.up <- &msg:
			case <-ctx.Done():
				return
			}
			startWorker()
		}
	})
	cancel(m.send(ctx, s))
	return context.Cause(ctx)
}

// send writes queued entries to the node, paced by the node's rate limit, until ctx ends.
func (m *Module) send(ctx context.Context, s *session) error {
	// The resend check runs only while something is on the wire: an idle node's sender sleeps until
	// something is queued (10,000 idle nodes ticking every ackTimeout/4 were ~2,700 wakeups a second).
	period := max(m.AckTimeout/4, 10*time.Millisecond)
	tick := time.NewTimer(period)
	defer tick.Stop()
	for {
		if !s.n.current(s) {
			return errors.New("replaced by a newer connection from the same node")
		}
		for _, msg := range s.n.next(time.Now()) {
			if err := s.n.limiter.Wait(ctx); err != nil {
				return err
			}
			if err := s.conn.Send(ctx, msg); err != nil {
				return err
			}
			if s.kubeedge {
				s.n.written(msg)
			}
			m.metrics.sent.Inc()
		}
		var tickC <-chan time.Time
		if s.n.awaiting() {
			tick.Reset(period)
			tickC = tick.C
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-s.conn.Done():
			return s.conn.Err()
		case <-s.n.wake:
		case <-tickC:
		}
	}
}

// upstream hands one message from the edge to the cloud module owning its group, and acknowledges
// it with that module's answer. A repeat (the edge resent it) is acknowledged without being handled.
func (m *Module) upstream(ctx context.Context, s *session, msg message.Message) error {
	s.n.upMu.Lock()
	defer s.n.upMu.Unlock()
	edgeResource := msg.Route.Resource
	reply := func(r message.Message) error {
		if r.Route.Resource != "" && r.Route.Resource != edgeResource {
			// The answer names the request's resource as the edge sent it, not in the cloud's form
			// (node/<node>/...): KubeEdge's metamanager stores answers under that resource.
			if node, edge, err := message.ToEdge(r.Route.Resource); err == nil && node == s.n.name {
				r.Route.Resource = edge
			}
		}
		if s.kubeedge && r.Route.Group == "meta" {
			// KubeEdge's edgehub takes from the cloud only the groups resource, twin, func and user
			// (an answer in any other is dropped: "no handler found"); its metamanager's queries and
			// writes are in group meta and are answered in group resource, as KubeEdge's cloud does.
			r.Route.Group = "resource"
		}
		return s.conn.Send(ctx, r)
	}
	if msg.Route.Operation == message.OpKeepalive {
		// KubeEdge edges send these beside websocket pings; liveness is the heartbeat's job here.
		m.metrics.up.WithLabelValues("keepalive").Inc()
		return nil
	}
	if !s.n.recent.Claim(msg.Header.ID) {
		m.metrics.up.WithLabelValues("repeat").Inc()
		ack, _ := msg.Reply(Name, "OK")
		return reply(ack)
	}
	if msg.Route.Operation == message.OpInventory {
		m.metrics.up.WithLabelValues("inventory").Inc()
		if s.kubeedge && s.conn.Lane() == hub.LaneKedge {
			m.host.Logger().Warn("node is listed in kubeedgeNodes but runs Kedge's edgehub (it sent an inventory): it gets KubeEdge's delivery, at most once outside the edge controller's objects; remove it from the list", "node", s.n.name)
		}
		m.event(s.n.name, message.OpInventory, msg.Content)
		ack, _ := msg.Reply(Name, "OK")
		return reply(ack)
	}
	if s.kubeedge { // KubeEdge devicetwin's paths, for devicecontroller (kubeedge_devices.go)
		kubeEdgeDeviceUp(&msg, s.n.name)
	}
	if msg.Route.Resource != "" {
		r, err := message.ParseEdge(msg.Route.Resource)
		if err != nil {
			m.metrics.up.WithLabelValues("invalid").Inc()
			return reply(msg.ErrorReply(Name, err))
		}
		r.Node = s.n.name // the node is the certificate's, never the message's
		msg.Route.Resource = r.Cloud()
	}
	target, ok := m.Dispatch[msg.Route.Group]
	if !ok {
		m.metrics.up.WithLabelValues("no_handler").Inc()
		return reply(msg.ErrorReply(Name, fmt.Errorf("no cloud module handles group %q (cloudhub dispatch)", msg.Route.Group)))
	}
	resp, err := m.host.SendSync(ctx, target, msg, m.HandleTimeout)
	switch {
	case errors.Is(err, sdk.ErrUnknownModule):
		m.metrics.up.WithLabelValues("no_handler").Inc()
		return reply(msg.ErrorReply(Name, fmt.Errorf("cloud module %s is not running", target)))
	case err != nil:
		// Not answered in time, but queued for the module, which will handle it (the router never
		// drops): keep the claim so the edge's resend is acknowledged as a repeat, not handled twice.
		m.metrics.up.WithLabelValues("slow").Inc()
		m.host.Logger().Warn("cloud module slow to answer a message from the edge", "node", s.n.name, "msg", msg.String(), "to", target, "err", err)
		return nil
	}
	m.metrics.up.WithLabelValues("ok").Inc()
	resp.Header.ParentID = msg.Header.ID
	return reply(resp)
}
