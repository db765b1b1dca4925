package hub

import "sync"

// Recent remembers the IDs of the last n messages taken, so a message the peer sends again (its
// acknowledgement was lost) is recognised and acknowledged instead of handled twice.
type Recent struct {
	mu   sync.Mutex
	max  int
	ring []string // grows to max as IDs arrive, so an idle peer costs nothing
	next int
	set  map[string]struct{}
}

// NewRecent returns a Recent holding up to n IDs.
func NewRecent(n int) *Recent {
	return &Recent{max: n, set: map[string]struct{}{}}
}

// Claim records id and reports whether it was new — check and record in one step, so two
// connections of the same peer can never both take the same message.
func (r *Recent) Claim(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[id]; ok {
		return false
	}
	r.set[id] = struct{}{}
	if len(r.ring) < r.max {
		r.ring = append(r.ring, id)
		return true
	}
	delete(r.set, r.ring[r.next])
	r.ring[r.next] = id
	r.next = (r.next + 1) % r.max
	return true
}
