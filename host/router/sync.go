package router

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/kedge-io/kedge/host/message"
)

// waiter is one pending SendSync. Waiters are pooled so a round trip allocates neither a channel
// nor a timer.
type waiter struct {
	ch    chan message.Message // capacity 1: the single hand-over from Reply never blocks
	timer *time.Timer
}

var waiterPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{ch: make(chan message.Message, 1), timer: t}
}}

func getWaiter(timeout time.Duration) *waiter {
	w := waiterPool.Get().(*waiter)
	w.timer.Reset(timeout)
	return w
}

// putWaiter recycles w; its channel is empty by then (SendSync either took the reply or removed
// the waiter before any Reply could find it).
func putWaiter(w *waiter) {
	if !w.timer.Stop() {
		// Since Go 1.23 a stopped timer never delivers a stale tick; this only matters if the
		// program runs with GODEBUG=asynctimerchan=1.
		select {
		case <-w.timer.C:
		default:
		}
	}
	waiterPool.Put(w)
}

const waiterShards = 16 // a power of two

// waiters maps pending request IDs to their waiter. It is sharded so concurrent SendSync and
// Reply calls on different IDs rarely share a lock.
type waiters [waiterShards]shard

type shard struct {
	mu sync.Mutex
	m  map[string]*waiter
	_  [48]byte // one shard per cache line
}

var waiterSeed = maphash.MakeSeed()

func (ws *waiters) shard(id string) *shard {
	return &ws[maphash.String(waiterSeed, id)&(waiterShards-1)]
}

// add registers w for id; false if id already has a waiter.
func (ws *waiters) add(id string, w *waiter) bool {
	s := ws.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.m[id]; dup {
		return false
	}
	if s.m == nil {
		s.m = make(map[string]*waiter)
	}
	s.m[id] = w
	return true
}

// remove unregisters w for id; false if it is gone, meaning a Reply already handed it a response.
func (ws *waiters) remove(id string, w *waiter) bool {
	s := ws.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[id] != w {
		return false
	}
	delete(s.m, id)
	return true
}

// handOver gives resp to the waiter for id, if any. The send happens under the shard lock so that
// a waiter that finds itself removed knows the response is already in its channel.
func (ws *waiters) handOver(id string, resp message.Message) bool {
	s := ws.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.m[id]
	if ok {
		delete(s.m, id)
		w.ch <- resp
	}
	return ok
}

// pending counts the waiters, for tests.
func (ws *waiters) pending() int {
	n := 0
	for i := range ws {
		ws[i].mu.Lock()
		n += len(ws[i].m)
		ws[i].mu.Unlock()
	}
	return n
}
