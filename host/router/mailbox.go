package router

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedge-io/kedge/host/message"
)

// keepCap is the queue capacity (in messages) a mailbox always keeps once it has drained. A buffer
// grown beyond it by a burst is kept while the bursts go on and given back when the mailbox drains
// after using less than a quarter of it. (A buffer preallocated at the full capacity cost 184 KiB
// per module at the default 1024: about 5 MiB of a full edgecore's heap, issue 22.)
const keepCap = 32

// Mailbox is one module's bounded queue. The module reads it with Receive; others fill it through
// the Router. Its memory follows what is queued, not its capacity.
type Mailbox struct {
	name, group string
	policy      FullPolicy
	capacity    int
	done        chan struct{} // closed first by Unregister, to wake senders waiting for room

	// mu is read-held by every sender for the length of its send and write-locked once by
	// Unregister to seal the mailbox. After that no send is in flight and none can start, so no
	// message can slip in after Receive has drained and said ErrClosed. Receive never takes mu.
	mu     sync.RWMutex
	closed bool // guarded by mu

	qmu     sync.Mutex
	q       []message.Message // queued messages from q[head] on, oldest first; guarded by qmu
	head    int               // guarded by qmu
	peak    int               // most messages queued at once since the last drain; guarded by qmu
	qclosed bool              // sealed: Receive drains q, then says ErrClosed; guarded by qmu
	// ready and room hold at most one wake-up each: a message was queued (or the mailbox sealed) /
	// taken. Whoever is woken and finds more passes the wake-up on, so coalesced signals lose nobody.
	ready, room chan struct{}

	sent, failed atomic.Uint64 // written by senders
	waiting      atomic.Int32  // senders waiting for room (tests wait on it)
	_            [64]byte      // keeps the receiver's counter off the senders' cache line
	delivered    atomic.Uint64 // written by the receiver
}

func newMailbox(name, group string, opts Options) *Mailbox {
	return &Mailbox{name: name, group: group, policy: opts.Policy, capacity: opts.Capacity,
		done: make(chan struct{}), ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Name is the module's name.
func (mb *Mailbox) Name() string { return mb.name }

// Len is the number of messages waiting to be received.
func (mb *Mailbox) Len() int {
	mb.qmu.Lock()
	defer mb.qmu.Unlock()
	return len(mb.q) - mb.head
}

// push queues m unless the mailbox holds capacity messages already.
func (mb *Mailbox) push(m message.Message) bool {
	mb.qmu.Lock()
	n := len(mb.q) - mb.head
	if n >= mb.capacity {
		mb.qmu.Unlock()
		return false
	}
	if mb.head > 0 && len(mb.q) == cap(mb.q) { // reuse the room taken messages left at the front
		copy(mb.q, mb.q[mb.head:])
		clear(mb.q[n:])
		mb.q, mb.head = mb.q[:n], 0
	}
	mb.q = append(mb.q, m)
	mb.peak = max(mb.peak, n+1)
	more := n+1 < mb.capacity
	mb.qmu.Unlock()
	signal(mb.ready)
	if more {
		signal(mb.room) // another sender waiting for room may go on
	}
	return true
}

// take removes the oldest message; ok is false when there is none, closed then says the mailbox is
// sealed.
func (mb *Mailbox) take() (m message.Message, ok, closed bool) {
	mb.qmu.Lock()
	if mb.head == len(mb.q) {
		closed = mb.qclosed
		mb.qmu.Unlock()
		return m, false, closed
	}
	m = mb.q[mb.head]
	mb.q[mb.head] = message.Message{} // let the GC have what it referenced
	mb.head++
	more := mb.head < len(mb.q)
	if !more {
		if cap(mb.q) > keepCap && mb.peak <= cap(mb.q)/4 {
			mb.q = nil
		} else {
			mb.q = mb.q[:0]
		}
		mb.head, mb.peak = 0, 0
	}
	mb.qmu.Unlock()
	signal(mb.room)
	if more {
		signal(mb.ready) // another receiver may take the next one
	}
	return m, true, false
}

// Receive returns the next message, in the order the mailbox accepted them. It waits until one
// arrives or ctx is done. After Unregister it hands out what is still queued, then returns an error
// wrapping ErrClosed.
func (mb *Mailbox) Receive(ctx context.Context) (message.Message, error) {
	done := ctx.Done()
	for {
		m, ok, closed := mb.take() // a queued message wins over a done ctx
		if ok {
			mb.delivered.Add(1)
			return m, nil
		}
		if closed {
			signal(mb.ready) // wake the next receiver waiting, to find the mailbox closed too
			return message.Message{}, fmt.Errorf("router: receive on %q: %w", mb.name, ErrClosed)
		}
		select {
		case <-mb.ready:
		case <-done: // nil for context.Background and friends: never ready
			return message.Message{}, fmt.Errorf("router: receive on %q: %w", mb.name, ctx.Err())
		}
	}
}

// put queues m or says why not. deadline, when not nil, bounds a Block wait like ctx does (SendSync
// passes its timer so it needs no derived context).
func (mb *Mailbox) put(ctx context.Context, m message.Message, deadline <-chan time.Time) error {
	mb.mu.RLock()
	defer mb.mu.RUnlock()
	if mb.closed {
		mb.failed.Add(1)
		return fmt.Errorf("router: send %s to %q: %w", m.Header.ID, mb.name, ErrClosed)
	}
	if mb.push(m) {
		mb.sent.Add(1)
		return nil
	}
	if mb.policy == Reject {
		mb.failed.Add(1)
		return fmt.Errorf("router: send %s to %q: %w (capacity %d)", m.Header.ID, mb.name, ErrMailboxFull, mb.capacity)
	}
	mb.waiting.Add(1)
	defer mb.waiting.Add(-1)
	for {
		select {
		case <-mb.room:
			if mb.push(m) {
				mb.sent.Add(1)
				return nil
			}
		case <-ctx.Done():
			mb.failed.Add(1)
			return fmt.Errorf("router: send %s to %q: waiting for room: %w: %w", m.Header.ID, mb.name, ErrMailboxFull, ctx.Err())
		case <-deadline:
			mb.failed.Add(1)
			return fmt.Errorf("router: send %s to %q: waiting for room: %w: %w", m.Header.ID, mb.name, ErrMailboxFull, context.DeadlineExceeded)
		case <-mb.done:
			mb.failed.Add(1)
			return fmt.Errorf("router: send %s to %q: %w", m.Header.ID, mb.name, ErrClosed)
		}
	}
}

// seal closes the mailbox for good; Unregister calls it once, after unpublishing the mailbox.
func (mb *Mailbox) seal() {
	close(mb.done) // senders blocked on a full mailbox hold mu.RLock: wake them so Lock can proceed
	mb.mu.Lock()
	mb.closed = true
	mb.qmu.Lock()
	mb.qclosed = true // no sender in flight (we hold mu), and every later one sees closed
	mb.qmu.Unlock()
	mb.mu.Unlock()
	signal(mb.ready) // a waiting receiver drains what is left, then finds it closed
}

func (mb *Mailbox) info() ModuleInfo {
	return ModuleInfo{Name: mb.name, Group: mb.group, Policy: mb.policy, Capacity: mb.capacity, Queued: mb.Len(),
		Sent: mb.sent.Load(), Delivered: mb.delivered.Load(), Failed: mb.failed.Load()}
}
