package metaserver

import (
	"encoding/json"

	"github.com/kedge-io/kedge/sdk"
)

// event is one applied change, stamped with the server's sequence number.
type event struct {
	seq      uint64
	res      resource
	key      sdk.Key
	deleted  bool
	existed  bool // the object was known before this change (MODIFIED rather than ADDED)
	object   json.RawMessage
	cur      meta // the object after the change (for a delete: its last state)
	prev     meta // before the change, when existed
	hasPrevM bool
}

// watchType is what a watcher with selector s sees of e, and whether it sees anything: an object
// that moves into the selection is ADDED, one that moves out is DELETED (as kube-apiserver does).
func (e *event) watchType(s selector) (string, bool) {
	now := s.matches(e.cur)
	before := e.existed && e.hasPrevM && s.matches(e.prev)
	switch {
	case e.deleted:
		return "DELETED", now || before
	case now && before:
		return "MODIFIED", true
	case now:
		return "ADDED", true
	case before:
		return "DELETED", true
	}
	return "", false
}

// ring keeps the most recent events in order; sequence numbers are consecutive, so the event after
// sequence x is found by arithmetic. base is the sequence from which the ring is complete: a watch
// from x ≥ base can be replayed, an older one cannot.
type ring struct {
	buf   []*event
	start int // index of the oldest event in buf
	n     int
	base  uint64
	seq   uint64 // the newest sequence handed out
	wake  chan struct{}
}

func newRing(size int, seq uint64) *ring {
	return &ring{buf: make([]*event, size), base: seq, seq: seq, wake: make(chan struct{})}
}

func (r *ring) push(e *event) {
	r.seq++
	e.seq = r.seq
	if r.n == len(r.buf) {
		r.base = r.buf[r.start].seq // the oldest is forgotten: a watch from before it cannot replay
		r.buf[r.start] = e
		r.start = (r.start + 1) % len(r.buf)
	} else {
		r.buf[(r.start+r.n)%len(r.buf)] = e
		r.n++
	}
	close(r.wake)
	r.wake = make(chan struct{})
}

// since returns the events after sequence x, or gone when some of them are no longer held (or x is
// from the future: another process's sequence), and the channel closed at the next push.
func (r *ring) since(x uint64) (evs []*event, gone bool, wake <-chan struct{}) {
	if x < r.base || x > r.seq {
		return nil, true, r.wake
	}
	first := r.seq - uint64(r.n) + 1 // sequence of the oldest held event
	for s := max(x+1, first); s <= r.seq; s++ {
		evs = append(evs, r.buf[(r.start+int(s-first))%len(r.buf)])
	}
	return evs, false, r.wake
}
