package hub

import (
	"hash/fnv"
	"sync"
	"time"
)

// Bounds of Recent besides its count: an ID older than RecentKeep is forgotten unless it is among
// the newest RecentFloor. A peer resends an unacknowledged message after its ackTimeout (edgehub:
// 15 s; a further resend on the same connection waits up to 16× that, 4 minutes) and at once after
// a reconnect; what it can have in flight is its window (edgehub: 64), which are the newest messages
// it sent, so the newest RecentFloor IDs cover resends after a disconnect of any length (an edgehub
// window set above RecentFloor is covered for RecentKeep only). Without the age bound an idle node,
// sending one message every few seconds, filled all n slots within hours: ~100 bytes an ID, ~400 KiB
// a node at n = 4,096; now it holds ~RecentFloor hashes, 2–3 KiB.
const (
	RecentKeep  = 5 * time.Minute
	RecentFloor = 64
)

// Recent remembers the IDs of the messages taken lately, so a message the peer sends again (its
// acknowledgement was lost) is recognised and acknowledged instead of handled twice. It keeps at
// most n IDs, and forgets those older than RecentKeep beyond the newest RecentFloor.
type Recent struct {
	mu    sync.Mutex
	max   int
	floor int
	now   func() time.Time // time.Now; a test's clock
	q     []recentEntry    // oldest first; grows as IDs arrive, so an idle peer costs little
	set   map[recentKey]struct{}
}

// recentKey is a 128-bit FNV-1a hash of an ID: 16 bytes whatever the ID's length (a UUID string is
// 36), and an accidental collision (a new message taken for a repeat) is as likely as guessing a
// random UUID. IDs are per peer, so a peer that crafted a collision would only drop its own message.
type recentKey [16]byte

type recentEntry struct {
	key recentKey
	at  int64 // unix nanoseconds
}

// NewRecent returns a Recent holding up to n IDs.
func NewRecent(n int) *Recent {
	return &Recent{max: n, floor: min(RecentFloor, n), now: time.Now, set: map[recentKey]struct{}{}}
}

func keyOf(id string) recentKey {
	h := fnv.New128a()
	_, _ = h.Write([]byte(id))
	var k recentKey
	h.Sum(k[:0])
	return k
}

// Claim records id and reports whether it was new — check and record in one step, so two
// connections of the same peer can never both take the same message.
func (r *Recent) Claim(id string) bool {
	k := keyOf(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[k]; ok {
		return false
	}
	now := r.now().UnixNano()
	old := now - int64(RecentKeep)
	drop := 0
	for drop < len(r.q) {
		left := len(r.q) - drop
		if left < r.max && (left < r.floor || r.q[drop].at > old) {
			break
		}
		delete(r.set, r.q[drop].key)
		drop++
	}
	// Dropping from the front and appending at the back: when append outgrows the array it copies
	// what is left into a new one, so the memory follows what is kept.
	r.q = append(r.q[drop:], recentEntry{key: k, at: now})
	r.set[k] = struct{}{}
	if len(r.q) < cap(r.q)/4 && cap(r.q) > 2*r.floor { // after a burst: give the array back
		r.q = append(make([]recentEntry, 0, 2*len(r.q)), r.q...)
	}
	return true
}

// Release forgets id, claimed but not handled after all (nobody took it): the peer's resend of it is
// then taken as new. Its slot in the queue stays until it ages out (a later Claim of id records it
// again).
func (r *Recent) Release(id string) {
	k := keyOf(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.set, k)
}

// Len is how many IDs are remembered.
func (r *Recent) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.q)
}
