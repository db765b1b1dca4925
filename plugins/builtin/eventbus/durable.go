package eventbus

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Durable acknowledgement on the embedded broker.
//
// mochi-mqtt (v2.7.9, server.go processPublish) calls the OnPublish hooks in the publishing client's
// read loop, then writes the PUBACK (PUBREC for QoS 2), then hands the message to the subscribers.
// So a QoS 1/2 publish on $hw/events/device/<id>/twin/update is taken in OnPublish instead: it goes
// to twinModule (devicetwin) at once, in arrival order, as a sync message, and the hook tells mochi to
// drop the packet (ErrRejectPacket: no PUBACK, no delivery). The read loop goes on with the client's
// next packet, so one client may have many updates in flight and devicetwin commits them in groups.
// When devicetwin replies — after its SQLite transaction committed, or after it refused the update
// (the refusal is on the result topic) — the packet is injected back into mochi from the same client
// (Server.InjectPacket), which now lets it through: mochi writes the PUBACK and delivers the message
// to the other subscribers like any publish. Acknowledgements are released in the order the
// publishes arrived on each connection (MQTT 3.1.1 §4.6). An error reply (not stored), no reply
// within ackTimeout, or no room for more in-flight updates closes the client's connection without
// the PUBACK: an MQTT client then publishes again, so nothing acknowledged is lost.
//
// QoS 0 twin updates are handed to devicetwin in the hook too (fire and forget), so every twin update
// keeps its arrival order; eventbus's own subscription ignores twin/update on the embedded broker.

// maxDurableInFlight bounds the twin updates taken from clients and not yet acknowledged.
const maxDurableInFlight = 16384

// isTwinUpdate reports whether topic is a twin update request: $hw/events/device/<name>/twin/update
// or KubeEdge v1.23's namespaced $hw/events/device/<namespace>/<name>/twin/update.
func isTwinUpdate(topic string) bool {
	return MatchTopic("$hw/events/device/+/twin/update", topic) || MatchTopic("$hw/events/device/+/+/twin/update", topic)
}

type durableHook struct {
	mochi.HookBase
	m      *Module
	server *mochi.Server
	slots  chan struct{}

	mu      sync.Mutex
	pending map[string]*durableEntry   // router message ID -> update waiting for devicetwin
	conns   map[*mochi.Client]*ackLine // per connection, the updates in arrival order
	passing map[passKey]struct{}       // packets injected back: let through once
}

type passKey struct {
	cl *mochi.Client
	id uint16
}

// ackLine is one connection's updates waiting for their acknowledgement, oldest first.
type ackLine struct {
	mu      sync.Mutex
	entries []*durableEntry
	closed  bool // the connection ended or was closed for a failure: nothing more is acknowledged
}

type durableEntry struct {
	cl    *mochi.Client
	pk    packets.Packet
	line  *ackLine
	timer *time.Timer
	done  bool
	err   error // why it is not acknowledged
}

func newDurableHook(m *Module) *durableHook {
	return &durableHook{m: m, slots: make(chan struct{}, maxDurableInFlight), pending: map[string]*durableEntry{},
		conns: map[*mochi.Client]*ackLine{}, passing: map[passKey]struct{}{}}
}

func (h *durableHook) ID() string { return "kedge-durable-twin-ack" }

func (h *durableHook) Provides(b byte) bool {
	return b == mochi.OnPublish || b == mochi.OnDisconnect || b == mochi.OnSubscribe
}

// OnSubscribe gives eventbus's own subscriptions MQTT 5's "no local": the broker does not send
// eventbus back what eventbus published (its answers on $hw/events/...), nor the twin updates the
// hook already handed to devicetwin (released with eventbus as their origin). That saves a delivery
// and its PUBACK per message on the hot path.
func (h *durableHook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if cl.ID == h.m.ClientID && !cl.Net.Inline {
		for i := range pk.Filters {
			pk.Filters[i].NoLocal = true
		}
	}
	return pk
}

// OnPublish takes twin updates from clients (see the package comment above).
func (h *durableHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || cl.ID == h.m.ClientID || !isTwinUpdate(pk.TopicName) {
		return pk, nil
	}
	if pk.FixedHeader.Qos > 0 && h.takePass(cl, pk.PacketID) {
		pk.Origin = h.m.ClientID // stored: mochi acknowledges it now and delivers it to all but eventbus
		return pk, nil
	}
	msg := h.m.routerMessage(pk.TopicName, pk.Payload)
	if pk.FixedHeader.Qos == 0 {
		h.m.metrics.received.WithLabelValues(classTwin).Inc()
		h.m.send(h.m.TwinModule, false, pk.TopicName, msg)
		pk.Origin = h.m.ClientID // not to eventbus's own subscription: it is handed over already
		return pk, nil
	}

	wait := time.NewTimer(h.m.AckTimeout)
	select {
	case h.slots <- struct{}{}:
		wait.Stop()
	case <-wait.C:
		h.m.metrics.durable.WithLabelValues("no_room").Inc()
		h.m.log.Warn("twin update not taken: too many updates wait for the store; closing the connection so the client publishes again",
			"client", cl.ID, "topic", pk.TopicName, "in_flight", maxDurableInFlight)
		cl.Stop(errors.New("too many twin updates waiting for the store"))
		return pk, packets.ErrRejectPacket
	}
	h.m.metrics.received.WithLabelValues(classTwin).Inc()
	msg.Header.Sync = true
	e := &durableEntry{cl: cl, pk: pk}
	id := msg.Header.ID
	h.mu.Lock()
	line := h.conns[cl]
	if line == nil {
		line = &ackLine{}
		h.conns[cl] = line
	}
	e.line = line
	h.mu.Unlock()
	line.mu.Lock() // never under h.mu: complete holds line.mu and then takes h.mu
	line.entries = append(line.entries, e)
	line.mu.Unlock()
	h.mu.Lock()
	h.pending[id] = e
	e.timer = time.AfterFunc(h.m.AckTimeout, func() { // complete takes h.mu: it sees e.timer
		h.complete(id, fmt.Errorf("%w: %w: devicetwin did not confirm the update within ackTimeout %s", errNotStored, errAckTimeout, h.m.AckTimeout))
	})
	h.mu.Unlock()
	if !h.m.send(h.m.TwinModule, false, pk.TopicName, msg) {
		h.complete(id, fmt.Errorf("%w: not handed to %s", errNotStored, h.m.TwinModule))
	}
	return pk, packets.ErrRejectPacket
}

var (
	errNotStored  = errors.New("twin update not stored")
	errAckTimeout = errors.New("timed out")
)

// stop gives up on every update still waiting (eventbus stops; the broker closes the connections).
func (h *durableHook) stop() {
	h.mu.Lock()
	ids := make([]string, 0, len(h.pending))
	for id := range h.pending {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	for _, id := range ids {
		h.complete(id, fmt.Errorf("%w: eventbus stopped", errNotStored))
	}
}

// OnDisconnect forgets a connection: what it still waits for is never acknowledged.
func (h *durableHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	h.mu.Lock()
	line := h.conns[cl]
	delete(h.conns, cl)
	for k := range h.passing {
		if k.cl == cl {
			delete(h.passing, k)
		}
	}
	h.mu.Unlock()
	if line != nil {
		line.mu.Lock()
		line.closed = true
		line.mu.Unlock()
	}
}

func (h *durableHook) takePass(cl *mochi.Client, id uint16) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := passKey{cl, id}
	if _, ok := h.passing[k]; ok {
		delete(h.passing, k)
		return true
	}
	return false
}

// answer takes devicetwin's reply to a sync twin update; false when it answers nothing waiting.
func (h *durableHook) answer(msg sdk.Message) bool {
	var err error
	if msg.Route.Operation == message.OpError {
		err = fmt.Errorf("%w: %s", errNotStored, bytes.Trim(msg.Content, `"`))
	}
	h.mu.Lock()
	_, ok := h.pending[msg.Header.ParentID]
	h.mu.Unlock()
	if ok {
		// Not on eventbus's Handle goroutine: writing a PUBACK blocks while the client does not read
		// (mochi sets no write deadline), and that must hold up only that client.
		go h.complete(msg.Header.ParentID, err)
	}
	return ok
}

// complete settles one update and releases, in arrival order, the acknowledgements now due on its
// connection.
func (h *durableHook) complete(id string, err error) bool {
	h.mu.Lock()
	e := h.pending[id]
	delete(h.pending, id)
	var timer *time.Timer
	if e != nil {
		timer = e.timer
	}
	h.mu.Unlock()
	if e == nil {
		return false
	}
	timer.Stop()
	line := e.line
	line.mu.Lock()
	defer line.mu.Unlock()
	e.done, e.err = true, err
	for len(line.entries) > 0 && line.entries[0].done {
		head := line.entries[0]
		line.entries[0] = nil
		line.entries = line.entries[1:]
		<-h.slots // held until acknowledged or given up: a client that stops reading runs out of room
		switch {
		case line.closed:
			h.m.metrics.durable.WithLabelValues("disconnected").Inc()
		case head.err != nil:
			line.closed = true
			reason := "not_stored"
			if errors.Is(head.err, errAckTimeout) {
				reason = "timeout"
			}
			h.m.metrics.durable.WithLabelValues(reason).Inc()
			h.m.log.Warn("twin update not acknowledged; closing the connection so the client publishes again",
				"client", head.cl.ID, "topic", head.pk.TopicName, "err", head.err)
			head.cl.Stop(head.err)
		default:
			h.release(head)
		}
	}
	return true
}

// release lets mochi acknowledge and deliver a stored update (called in arrival order).
func (h *durableHook) release(e *durableEntry) {
	k := passKey{e.cl, e.pk.PacketID}
	h.mu.Lock()
	h.passing[k] = struct{}{}
	h.mu.Unlock()
	err := h.server.InjectPacket(e.cl, e.pk)
	h.mu.Lock()
	delete(h.passing, k) // normally taken by OnPublish already
	h.mu.Unlock()
	if err != nil {
		h.m.metrics.durable.WithLabelValues("disconnected").Inc()
		return
	}
	h.m.metrics.durable.WithLabelValues("acknowledged").Inc()
}
