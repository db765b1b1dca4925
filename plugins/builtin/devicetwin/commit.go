package devicetwin

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/kedge-io/kedge/sdk"
)

// Group commit. Handle checks an MQTT request and applies it to the in-memory twins at once (so the
// next request is checked against it), but its store writes, its answers on MQTT and the reply to a
// sync request wait in the queue. One committer goroutine takes everything queued, writes it in one
// SQLite transaction (one fsync for the whole group) and only then publishes the answers and replies:
// a reply to a sync twin/update (what eventbus waits for before it PUBACKs) means "on disk". While a
// transaction runs, Handle queues the next group, so the group grows with the load and the commit
// latency.

// write is one request's share of a group commit.
type write struct {
	kind   string        // metric label of the request
	objs   []sdk.Object  // stored in the group's transaction
	msgs   []sdk.Message // published after the commit, in order
	answer any           // the answer to publish on the result topic (set by the request's handler)
	result *sdk.Message  // the answer on the result topic, published last
	topic  string        // the result topic (for the error answer when the commit fails)
	event  string        // the request's event_id
	after  func()        // runs after a successful commit (the upstream batch)
	reply  *sdk.Message  // the sync request to answer: response when decided, error when not stored
	values int           // twin values the objs carry (metric)
	failed *requestError // refused before the commit (answered, nothing stored)
}

// batch is a group of writes committed together.
type batch struct {
	writes    []*write
	committed chan struct{} // closed when the batch's transaction ended (either way)
}

// commitTimeout bounds one group's transaction; a stopping module still finishes it.
const commitTimeout = 30 * time.Second

// enqueue hands a write to the committer (called from Handle only).
func (m *Module) enqueue(w *write) {
	m.qMu.Lock()
	if m.queued == nil {
		m.queued = &batch{committed: make(chan struct{})}
	}
	m.queued.writes = append(m.queued.writes, w)
	m.qMu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// commitLoop commits what is queued, one group at a time, until the module stops (Stop commits the
// rest).
func (m *Module) commitLoop() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
			m.commitOnce()
		}
	}
}

// commitOnce writes the queued group in one transaction, then answers every request in it in order.
func (m *Module) commitOnce() {
	m.commitMu.Lock() // the loop and Stop's final commit never overlap
	defer m.commitMu.Unlock()
	m.qMu.Lock()
	b := m.queued
	m.queued = nil
	m.inflight = b
	m.qMu.Unlock()
	if b == nil {
		return
	}
	defer func() {
		m.qMu.Lock()
		m.inflight = nil
		m.qMu.Unlock()
		close(b.committed)
	}()

	// Later writes of a key replace earlier ones: the transaction writes each key once.
	var objs []sdk.Object
	at := map[sdk.Key]int{}
	values := 0
	for _, w := range b.writes {
		values += w.values
		for _, o := range w.objs {
			if i, ok := at[o.Key]; ok {
				objs[i] = o
				continue
			}
			at[o.Key] = len(objs)
			objs = append(objs, o)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), commitTimeout)
	defer cancel()
	var err error
	if len(objs) > 0 {
		began := time.Now()
		_, err = m.host.Store().PutBatch(ctx, objs)
		m.metrics.commitSeconds.Observe(time.Since(began).Seconds())
		m.metrics.commitWrites.Observe(float64(len(b.writes)))
		if err != nil {
			m.metrics.commitFailures.Inc()
			m.log.Error("twin writes not stored; their requests are answered with an error and the twins are read again from the store",
				"requests", len(b.writes), "objects", len(objs), "err", err)
			m.reload.Store(true)
		} else {
			m.metrics.updates.Add(float64(values))
		}
	}
	for _, w := range b.writes {
		m.finish(ctx, w, err)
	}
}

// finish answers one request of a committed (or failed) group.
func (m *Module) finish(ctx context.Context, w *write, err error) {
	if err != nil && len(w.objs) > 0 {
		m.metrics.requests.WithLabelValues(w.kind, "error").Inc()
		if w.topic != "" {
			if msg, ok := m.build(w.topic, errorResult{baseMessage: baseMessage{EventID: w.event, Timestamp: nowMS()},
				Code: http.StatusInternalServerError, Reason: "not stored: " + err.Error()}); ok {
				m.send(ctx, msg)
			}
		}
		if w.reply != nil {
			m.replyTo(ctx, w.reply.ErrorReply(Name, err))
		}
		return
	}
	result := "ok"
	if w.failed != nil {
		result = "error"
	}
	m.metrics.requests.WithLabelValues(w.kind, result).Inc()
	for _, msg := range w.msgs {
		m.send(ctx, msg)
	}
	if w.result != nil {
		m.send(ctx, *w.result)
	}
	if w.after != nil {
		w.after()
	}
	if w.reply != nil {
		var content any = map[string]any{"code": http.StatusOK}
		if w.failed != nil {
			content = map[string]any{"code": w.failed.code, "reason": w.failed.reason}
		}
		r, rerr := w.reply.Reply(Name, content)
		if rerr == nil {
			m.replyTo(ctx, r)
		}
	}
}

func (m *Module) replyTo(ctx context.Context, r sdk.Message) {
	if err := m.host.Reply(ctx, r); err != nil {
		m.metrics.dropped.WithLabelValues(r.Route.Destination).Inc()
		m.log.Warn("reply not delivered", "to", r.Route.Destination, "request", r.Header.ParentID, "err", err)
	}
}

// drainCommits waits until everything queued so far is committed and answered (called from Handle
// before a direct store write or publication, so those never overtake queued ones).
func (m *Module) drainCommits(ctx context.Context) error {
	m.qMu.Lock()
	b := m.queued
	if b == nil {
		b = m.inflight
	}
	m.qMu.Unlock()
	if b == nil {
		return nil
	}
	select {
	case m.kick <- struct{}{}:
	default:
	}
	select {
	case <-b.committed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reloadIfFailed reads the twins and states again from the store after a failed group commit, so the
// memory holds only what is on disk (called from Handle).
func (m *Module) reloadIfFailed(ctx context.Context) {
	if !m.reload.Load() {
		return
	}
	if err := m.drainCommits(ctx); err != nil {
		return
	}
	m.reload.Store(false)
	twins, states := map[string]map[string]*msgTwin{}, map[string]deviceState{}
	for _, typ := range []string{typeTwin, typeDeviceState} {
		objs, err := m.host.Store().List(ctx, sdk.Query{Type: typ})
		if err != nil {
			m.log.Error("reload after a failed commit: store unreadable; trying again at the next message", "err", err)
			m.reload.Store(true)
			return
		}
		for _, o := range objs {
			m.loadObject(o, twins, states)
		}
	}
	m.twins, m.states = twins, states
}

// rereport puts the latest stored value of every twin and state into the upstream batch. The batch
// lives in memory until it is sent, so after a restart this is what gets values the cloud may not have
// received there; sending the latest value again is harmless.
func (m *Module) rereport() {
	n := 0
	for k, props := range m.twins {
		ns, name, _ := strings.Cut(k, "/")
		m.pend(ns, name, func(ps *pendingStatus) {
			for p, t := range props {
				if t.Actual != nil && t.Actual.Value != nil {
					ps.twin(p).Reported = reportedOf(t)
				}
				if t.Expected != nil && t.Expected.Value != nil {
					ps.twin(p).ObservedDesired = &statusProperty{Value: t.Expected.value(),
						Metadata: map[string]string{"timestamp": msString(t.Expected.ts())}}
				}
			}
		})
		n++
	}
	for k, s := range m.states {
		ns, name, _ := strings.Cut(k, "/")
		m.pend(ns, name, func(ps *pendingStatus) {
			ps.state = s.State
			ps.lastOnlineTime = s.LastOnlineTime
		})
	}
	if n > 0 || len(m.states) > 0 {
		m.log.Info("re-reporting the stored twins and states to the cloud", "devices_with_twins", n, "states", len(m.states))
	}
}

// reportedOf is the upstream form of a twin's actual value.
func reportedOf(t *msgTwin) *statusProperty {
	typ := ""
	if t.Metadata != nil {
		typ = t.Metadata.Type
	}
	return &statusProperty{Value: t.Actual.value(), Metadata: map[string]string{
		"timestamp": msString(t.Actual.ts()), "type": strings.ToUpper(typ)}}
}
