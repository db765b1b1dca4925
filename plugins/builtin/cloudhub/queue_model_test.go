package cloudhub

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kedge-io/kedge/sdk/message"
)

// A node's queue under random enqueues (objects coalescing, messages of their own, a message queued
// twice), sends, resends, acknowledgements (current, stale, unknown, repeated) and reconnects keeps
// its bookkeeping consistent: every version on the wire belongs to a live entry of the queue, so a
// sender waiting for acknowledgements always has something that can be acknowledged or resent.
func TestNodeQueueBookkeepingStaysConsistentUnderRandomTraffic(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		n := testNode(t, 1+rng.IntN(4))
		now := time.Now()
		var sent []string // IDs handed to the wire, acknowledged in any order (some never)
		var queued []message.Message
		for step := range 400 {
			switch op := rng.IntN(10); {
			case op < 3:
				msg := update(string(rune('a'+rng.IntN(3))), step)
				if rng.IntN(4) == 0 {
					msg = message.New("test", "resource", message.OpQuery, "default/pod/x")
				}
				if len(queued) > 0 && rng.IntN(8) == 0 {
					msg = queued[rng.IntN(len(queued))] // the same message queued again (a retry)
				}
				queued = append(queued, msg)
				n.enqueue(msg)
			case op < 5:
				for _, m := range n.next(now) {
					sent = append(sent, m.Header.ID)
				}
			case op < 8 && len(sent) > 0:
				i := rng.IntN(len(sent))
				n.ack(sent[i])
				if rng.IntN(3) > 0 {
					sent = append(sent[:i], sent[i+1:]...)
				}
			case op == 8:
				now = now.Add(time.Duration(rng.IntN(40)) * time.Second)
			default:
				if rng.IntN(5) == 0 {
					n.mu.Lock()
					n.resetWire() // a reconnect
					n.mu.Unlock()
				}
			}
			n.mu.Lock()
			for id, e := range n.byID {
				if e.done || e.sentID != id || n.entries[e.key] != e {
					n.mu.Unlock()
					t.Fatalf("seed %d step %d: message %s on the wire belongs to entry %s (done %v, sentID %s, queued %v)",
						seed, step, id, e.key, e.done, e.sentID, n.entries[e.key] == e)
				}
			}
			n.mu.Unlock()
		}
	}
}
