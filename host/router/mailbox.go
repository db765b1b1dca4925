package router

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedge-io/kedge/host/message"
)

// Mailbox is one module's bounded queue. The module reads it with Receive; others fill it through
// the Router.
type Mailbox struct {
	name, group string
	policy      FullPolicy
	ch          chan message.Message
	done        chan struct{} // closed first by Unregister, to wake senders waiting for room

	// mu is read-held by every sender for the length of its send and write-locked once by
	// Unregister to seal the mailbox. After that no send is in flight and none can start, so closing
	// ch cannot panic a sender, and no message can slip in after Receive has drained and said
	// ErrClosed. Receive never takes mu.
	mu     sync.RWMutex
	closed bool // guarded by mu

	sent, failed atomic.Uint64 // written by senders
	_            [64]byte      // keeps the receiver's counter off the senders' cache line
	delivered    atomic.Uint64 // written by the receiver
}

// Name is the module's name.
func (mb *Mailbox) Name() string { return mb.name }

// Len is the number of messages waiting to be received.
func (mb *Mailbox) Len() int { return len(mb.ch) }

// Receive returns the next message, in the order the mailbox accepted them. It waits until one
// arrives or ctx is done. After Unregister it hands out what is still queued, then returns an error
// wrapping ErrClosed.
func (mb *Mailbox) Receive(ctx context.Context) (message.Message, error) {
	select { // a queued message wins over a done ctx, and this path needs no ctx.Done channel
	case m, ok := <-mb.ch:
		return mb.took(m, ok)
	default:
	}
	done := ctx.Done()
	if done == nil { // context.Background and friends: a plain receive is cheaper than a select
		m, ok := <-mb.ch
		return mb.took(m, ok)
	}
	select {
	case m, ok := <-mb.ch:
		return mb.took(m, ok)
	case <-done:
		return message.Message{}, fmt.Errorf("router: receive on %q: %w", mb.name, ctx.Err())
	}
}

func (mb *Mailbox) took(m message.Message, ok bool) (message.Message, error) {
	if !ok {
		return message.Message{}, fmt.Errorf("router: receive on %q: %w", mb.name, ErrClosed)
	}
	mb.delivered.Add(1)
	return m, nil
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
	select {
	case mb.ch <- m:
		mb.sent.Add(1)
		return nil
	default:
	}
	if mb.policy == Reject {
		mb.failed.Add(1)
		return fmt.Errorf("router: send %s to %q: %w (capacity %d)", m.Header.ID, mb.name, ErrMailboxFull, cap(mb.ch))
	}
	select {
	case mb.ch <- m:
		mb.sent.Add(1)
		return nil
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

// seal closes the mailbox for good; Unregister calls it once, after unpublishing the mailbox.
func (mb *Mailbox) seal() {
	close(mb.done) // senders blocked on a full mailbox hold mu.RLock: wake them so Lock can proceed
	mb.mu.Lock()
	mb.closed = true
	close(mb.ch) // safe: no sender in flight (we hold mu), and every later one sees closed
	mb.mu.Unlock()
}

func (mb *Mailbox) info() ModuleInfo {
	return ModuleInfo{Name: mb.name, Group: mb.group, Policy: mb.policy, Capacity: cap(mb.ch), Queued: len(mb.ch),
		Sent: mb.sent.Load(), Delivered: mb.delivered.Load(), Failed: mb.failed.Load()}
}
