package cloudhub

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// upMu serializes the upstream handling of each lane (see laneOf) across the node's sessions: a
	// replaced session may still be handling a message when the new one receives its resend, and
	// order must hold across both. One per lane, so a slow module holds up only its own messages.
	upMu []sync.Mutex

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

// noAck says whether the edge acknowledges msg: never an answer (a cloud module's answer to the
// edge's message, arriving after cloudhub stopped waiting for it: edgecore takes it as the
// acknowledgement of its own message and answers nothing), and for a KubeEdge peer only what
// kubeEdgeAck lists. Such entries are written once, in order, outside the window — waiting for an
// acknowledgement that never comes held a window slot and resent the answer forever.
func noAck(kubeedge bool, msg message.Message) bool {
	return msg.IsReply() || (kubeedge && !kubeEdgeAck(msg))
}

// resendAfter is how long an entry on the wire waits for its acknowledgement before it is sent again:
// ackTimeout, then twice that, up to 16 times.
func resendAfter(ack time.Duration, tries int) time.Duration { return ack << min(tries, 4) }

func newNode(name string, m *Module) *node {
	return &node{
		name: name, m: m,
		limiter: rate.NewLimiter(rate.Limit(m.QPS), m.Burst),
		recent:  hub.NewRecent(4096),
		upMu:    make([]sync.Mutex, m.laneCount()),
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

// poke wakes the node's sender, starting it if its session has none running (poke takes n.mu;
// pokeLocked is for callers that hold it).
func (n *node) poke() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pokeLocked()
}

func (n *node) pokeLocked() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
	if n.sess != nil {
		n.sess.kick()
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
		if !e.inWindow && noAck(n.kubeedge, e.msg) {
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
	n.pokeLocked()
	return sent, true
}

// written settles an entry that gets no acknowledgement (noAck) once its version id was written to
// the connection: it leaves the queue, unless a newer version arrived meanwhile, which is sent next.
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
	if msg.Header.Sync && !msg.IsReply() {
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
	n.pokeLocked()
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
	s := &session{n: n, conn: conn, kubeedge: kubeedge}
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
	// lanes hold the messages from the edge waiting to be handled, one queue and worker per lane
	// (see laneOf); allocated at the first message (an idle session holds none). Only the reader
	// touches the slice.
	lanes []*lane
	// kubeedge: the peer is KubeEdge's edgecore (see node.kubeedge), fixed for the session.
	kubeedge bool

	// The sender runs only while there is something to send or to wait an acknowledgement for: an
	// idle node costs one goroutine (its reader), not two. smu guards its start and end.
	smu         sync.Mutex
	startSender func() // set by run; nil until then (a kick meanwhile is remembered in again)
	sending     bool   // a sender goroutine runs
	again       bool   // kicked while the sender ran: it looks once more before it ends
	closed      bool   // the session ended: no sender starts
}

// upQueueMax bounds the messages from one edge waiting in one lane for its worker: the reader waits
// (and so does the edge) beyond it. It is above edgehub's window (64), so a Kedge edge never makes the
// reader wait, and acknowledgements keep flowing while a worker is busy.
const upQueueMax = 256

// A lane is the messages of one session that go to one cloud module, handled in order by a worker
// that runs only while messages wait. Messages to different modules are independent (a node's status
// does not wait behind its twin reports when devicecontroller is slow); within a lane the edge's
// order holds.
type lane struct {
	idx     int
	q       upQueue
	working atomic.Bool
}

// laneHub is the lane of what cloudhub answers itself (keepalives, inventories, messages no module
// takes); lanes 1.. are the dispatch targets, in name order.
const laneHub = 0

// laneCount is the number of lanes of a session: the hub's own and one per dispatch target.
func (m *Module) laneCount() int { return len(m.laneTargets) + 1 }

// setLanes numbers the dispatch targets (called at Start; Dispatch does not change after it).
func (m *Module) setLanes() {
	var targets []string
	for _, t := range m.Dispatch {
		if !slices.Contains(targets, t) {
			targets = append(targets, t)
		}
	}
	slices.Sort(targets)
	m.laneTargets = targets
}

// laneOf says which lane msg from s is handled in. On a KubeEdge session it renames KubeEdge's
// devicetwin messages first (they go to the twin dispatch).
func (m *Module) laneOf(s *session, msg *message.Message) int {
	switch msg.Route.Operation {
	case message.OpKeepalive, message.OpInventory:
		return laneHub
	}
	if s.kubeedge {
		kubeEdgeDeviceUp(msg, s.n.name)
	}
	if t, ok := m.Dispatch[msg.Route.Group]; ok {
		if i, found := slices.BinarySearch(m.laneTargets, t); found {
			return i + 1
		}
	}
	return laneHub
}

// upQueue holds the messages from the edge waiting for the upstream worker, in order. Its buffer is
// allocated only while messages wait (an idle node holds none; a channel of upQueueMax held 2 KiB).
type upQueue struct {
	mu    sync.Mutex
	items []message.Message
	room  chan struct{} // signalled when a full queue is popped
}

// push appends msg, waiting while the queue is full; false when ctx ended first.
func (q *upQueue) push(ctx context.Context, msg message.Message) bool {
	for {
		q.mu.Lock()
		if len(q.items) < upQueueMax {
			q.items = append(q.items, msg)
			q.mu.Unlock()
			return true
		}
		if q.room == nil {
			q.room = make(chan struct{}, 1)
		}
		room := q.room
		q.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return false
		}
	}
}

func (q *upQueue) pop() (message.Message, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return message.Message{}, false
	}
	msg := q.items[0]
	q.items[0] = message.Message{}
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // the buffer goes with the burst
	}
	if q.room != nil {
		select {
		case q.room <- struct{}{}:
		default:
		}
	}
	return msg, true
}

func (q *upQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// kick makes sure a sender runs and looks at the queue (again) before it ends. It never blocks and
// takes no node lock (it is called with n.mu held).
func (s *session) kick() {
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.closed {
		return
	}
	if s.sending || s.startSender == nil {
		s.again = true
		return
	}
	s.sending, s.again = true, false
	s.startSender()
}

// run serves a session until its connection ends: it reads (in this goroutine), and starts an
// upstream worker while messages from the edge wait and a sender while messages for the edge do.
func (m *Module) run(s *session) error {
	ctx, cancel := context.WithCancelCause(m.life)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer func() {
		s.smu.Lock()
		s.closed = true // no sender starts after this, so the Wait below is not raced by an Add
		s.smu.Unlock()
		cancel(nil)
		wg.Wait()
	}()
	// A lane's worker runs only while messages from the edge wait in it (one at a time, so they are
	// handled in order): an idle node costs no goroutine for it (10,000 idle nodes: ~80 MB of stacks).
	startWorker := func(l *lane) {
		if !l.working.CompareAndSwap(false, true) {
			return // the running worker takes it
		}
		wg.Go(func() {
			for {
				if ctx.Err() != nil {
					return
				}
				if msg, ok := l.q.pop(); ok {
					if err := m.upstream(ctx, s, l.idx, msg); err != nil {
						cancel(err)
						return
					}
					continue
				}
				l.working.Store(false)
				// A message queued between the empty check and the store found the flag still set.
				if l.q.len() == 0 || !l.working.CompareAndSwap(false, true) {
					return
				}
			}
		})
	}
	s.smu.Lock()
	s.startSender = func() { wg.Go(func() { m.send(ctx, cancel, s) }) } // called with s.smu held, before closed
	s.smu.Unlock()
	s.kick() // what was queued while the node was away
	for {
		msg, err := s.conn.Receive(ctx)
		if err != nil {
			cancel(err)
			return context.Cause(ctx)
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
		if s.lanes == nil {
			s.lanes = make([]*lane, m.laneCount())
		}
		i := m.laneOf(s, &msg)
		l := s.lanes[i]
		if l == nil {
			l = &lane{idx: i}
			s.lanes[i] = l
		}
		if !l.q.push(ctx, msg) {
			return context.Cause(ctx)
		}
		startWorker(l)
	}
}

// send writes queued entries to the node, paced by the node's rate limit, and waits for their
// acknowledgements (resending what falls due); it ends when nothing is queued or on the wire (the
// next kick starts it again), or ends the session on an error.
func (m *Module) send(ctx context.Context, cancel context.CancelCauseFunc, s *session) {
	// The resend check runs only while something is on the wire: an idle node has no sender at all
	// (10,000 idle nodes ticking every ackTimeout/4 were ~2,700 wakeups a second; their senders'
	// stacks ~8 KiB each).
	period := max(m.AckTimeout/4, 10*time.Millisecond)
	var tick *time.Timer
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		s.smu.Lock()
		s.again = false
		s.smu.Unlock()
		if !s.n.current(s) {
			cancel(errors.New("replaced by a newer connection from the same node"))
			return
		}
		for _, msg := range s.n.next(time.Now()) {
			if err := s.n.limiter.Wait(ctx); err != nil {
				cancel(err)
				return
			}
			if err := s.conn.Send(ctx, msg); err != nil {
				cancel(err)
				return
			}
			if s.kubeedge || msg.IsReply() {
				s.n.written(msg)
			}
			m.metrics.sent.Inc()
		}
		if s.n.awaiting() {
			if tick == nil {
				tick = time.NewTimer(period)
			} else {
				tick.Reset(period)
			}
			select {
			case <-ctx.Done():
				return
			case <-s.conn.Done():
				cancel(s.conn.Err())
				return
			case <-s.n.wake:
			case <-tick.C:
			}
			continue
		}
		s.smu.Lock()
		if s.again {
			s.smu.Unlock()
			continue
		}
		s.sending = false
		s.smu.Unlock()
		return
	}
}

// upstream hands one message from the edge, taken from lane, to the cloud module owning its group,
// and acknowledges it with that module's answer. A repeat (the edge resent it) is acknowledged without
// being handled.
func (m *Module) upstream(ctx context.Context, s *session, lane int, msg message.Message) error {
	s.n.upMu[lane].Lock()
	defer s.n.upMu[lane].Unlock()
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
	if errors.Is(err, sdk.ErrUnknownModule) && !errors.Is(err, sdk.ErrHostStopping) {
		// cloudhub starts first and edges connect at once: a controller may still be starting. Its
		// message waits for it instead of being refused (the edge takes an error answer as final).
		if sw, ok := m.host.(sdk.StartWaiter); ok && sw.Planned(target) {
			m.metrics.startWaits.Inc()
			select {
			case <-sw.Started():
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			resp, err = m.host.SendSync(ctx, target, msg, m.HandleTimeout)
		}
	}
	switch {
	case errors.Is(err, sdk.ErrHostStopping):
		// cloudcore is shutting down and the module has stopped before cloudhub: the message was not
		// handled. It stays unanswered (an error would make the edge drop it) and the session ends;
		// the edge resends it on its next connection, to this cloudcore restarted or another replica.
		s.n.recent.Release(msg.Header.ID)
		m.metrics.up.WithLabelValues("stopping").Inc()
		return fmt.Errorf("cloud module %s stopped with cloudcore: %w", target, err)
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
