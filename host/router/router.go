// Package router moves messages between the modules of one Kedge process, the role KubeEdge's
// beehive plays: every module registers a bounded mailbox, and any module can send to another by
// name, fan out to a group, or make a synchronous request and wait for the matching reply.
//
// Sending never drops a message silently: a message is either accepted into the mailbox (and will
// be handed out by Receive, even after Unregister) or the sender gets an error saying why not.
//
// The send path is built for throughput: module lookup reads an immutable table through an atomic
// pointer (Register and Unregister copy it), per-module counters are plain atomics resolved at
// Register, and a successful Send allocates nothing.
package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/sdk"
)

// Errors returned by the router, always wrapped with the module and message concerned; test them
// with errors.Is.
// They are defined in sdk (the module contract), which names them without importing the host.
var (
	ErrUnknownModule = sdk.ErrUnknownModule
	ErrMailboxFull   = sdk.ErrMailboxFull
	ErrNoWaiter      = sdk.ErrNoWaiter
	ErrClosed        = sdk.ErrClosed
	ErrDuplicate     = sdk.ErrDuplicate
	ErrNoID          = sdk.ErrNoID
)

// DefaultCapacity is the mailbox size when Options.Capacity is zero.
const DefaultCapacity = 1024

// DefaultSyncTimeout bounds SendSync when it is given no positive timeout, so a request to a module
// that never answers cannot hang its caller forever (beehive uses the same default).
const DefaultSyncTimeout = 30 * time.Second

// FullPolicy says what Send does when the destination mailbox is full.
type FullPolicy int

const (
	// Block waits for room, bounded by the caller's ctx: back-pressure for modules that must not lose work.
	Block FullPolicy = iota
	// Reject fails at once with ErrMailboxFull: for callers that would rather shed load than wait.
	Reject
)

func (p FullPolicy) String() string {
	switch p {
	case Block:
		return "block"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("FullPolicy(%d)", int(p))
}

// Options configure one module's mailbox.
type Options struct {
	Capacity int // messages the mailbox holds; 0 means DefaultCapacity
	Policy   FullPolicy
}

// ModuleInfo describes a registered module, for status pages.
type ModuleInfo struct {
	Name      string
	Group     string
	Policy    FullPolicy
	Capacity  int
	Queued    int    // messages waiting to be received
	Sent      uint64 // accepted into the mailbox
	Delivered uint64 // handed out by Receive
	Failed    uint64 // refused: full, caller's ctx done, timeout or closed
}

// Router routes messages between registered modules. The zero value is not usable; call New.
type Router struct {
	mu      sync.Mutex // serialises Register/Unregister; readers never take it
	table   atomic.Pointer[table]
	waiters waiters
}

// table is immutable once published: the send path reads it without locks.
type table struct {
	byName map[string]*Mailbox
	order  []*Mailbox            // registration order
	groups map[string][]*Mailbox // each in registration order
}

func newTable(order []*Mailbox) *table {
	t := &table{byName: make(map[string]*Mailbox, len(order)), order: order, groups: map[string][]*Mailbox{}}
	for _, mb := range order {
		t.byName[mb.name] = mb
		if mb.group != "" {
			t.groups[mb.group] = append(t.groups[mb.group], mb)
		}
	}
	return t
}

// New returns an empty router. If reg is not nil the router's metrics are registered there; a
// second router on the same registry joins the first one's collector instead of failing. New
// panics only if reg already holds a different collector using the router's metric names, which
// is a wiring bug.
func New(reg prometheus.Registerer) *Router {
	r := &Router{}
	r.table.Store(newTable(nil))
	if reg != nil {
		register(reg, r)
	}
	return r
}

// Register creates the mailbox of module name, member of group ("" for none).
func (r *Router) Register(name, group string, opts Options) (*Mailbox, error) {
	switch {
	case name == "":
		return nil, errors.New("router: register: empty module name")
	case opts.Capacity < 0:
		return nil, fmt.Errorf("router: register %q: negative capacity %d", name, opts.Capacity)
	case opts.Policy != Block && opts.Policy != Reject:
		return nil, fmt.Errorf("router: register %q: unknown policy %v", name, opts.Policy)
	}
	if opts.Capacity == 0 {
		opts.Capacity = DefaultCapacity
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.table.Load()
	if _, ok := old.byName[name]; ok {
		return nil, fmt.Errorf("router: register %q: %w", name, ErrDuplicate)
	}
	mb := newMailbox(name, group, opts)
	order := append(old.order[:len(old.order):len(old.order)], mb) // never share a backing array with old
	r.table.Store(newTable(order))
	return mb, nil
}

// Unregister removes module name (a no-op if it is not registered). Later Sends to it fail with
// ErrUnknownModule, Sends racing with it fail with ErrClosed, and its Receive hands out what was
// already queued, then returns ErrClosed. Pending SendSync calls to it still wait for their reply
// or timeout: the module may yet answer what it drains.
func (r *Router) Unregister(name string) {
	r.mu.Lock()
	old := r.table.Load()
	mb, ok := old.byName[name]
	if ok {
		order := make([]*Mailbox, 0, len(old.order)-1)
		for _, o := range old.order {
			if o != mb {
				order = append(order, o)
			}
		}
		r.table.Store(newTable(order))
	}
	r.mu.Unlock()
	if ok {
		mb.seal()
	}
}

// Send queues m for module to, with m.Route.Destination set to to. If the mailbox has room m is
// accepted even when ctx is already done; otherwise the module's FullPolicy decides.
func (r *Router) Send(ctx context.Context, to string, m message.Message) error {
	mb := r.table.Load().byName[to]
	if mb == nil {
		return unknown(to, m.Header.ID)
	}
	m.Route.Destination = to
	return mb.put(ctx, m, nil)
}

// SendToGroup sends m to every module of group, in registration order, each copy with its own
// Destination. A failure for one module does not stop the others; the error joins all failures.
// With the Block policy a full mailbox delays the modules after it.
func (r *Router) SendToGroup(ctx context.Context, group string, m message.Message) error {
	members := r.table.Load().groups[group]
	if len(members) == 0 {
		return fmt.Errorf("router: send %s to group %q: no modules: %w", m.Header.ID, group, ErrUnknownModule)
	}
	var errs []error
	for _, mb := range members {
		m.Route.Destination = mb.name
		if err := mb.put(ctx, m, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if errs != nil {
		return fmt.Errorf("router: send %s to group %q: %w", m.Header.ID, group, errors.Join(errs...))
	}
	return nil
}

// SendSync sends m to module to with Header.Sync set and waits for the reply whose ParentID is
// m.Header.ID, handed over by Reply. timeout (DefaultSyncTimeout if not positive) bounds the whole
// call, queueing included; on expiry the error wraps context.DeadlineExceeded. m must carry an ID
// that no other pending SendSync on this router uses. A reply that comes after SendSync gave up is
// routed by Reply like any asynchronous one.
func (r *Router) SendSync(ctx context.Context, to string, m message.Message, timeout time.Duration) (message.Message, error) {
	id := m.Header.ID
	if id == "" {
		return message.Message{}, fmt.Errorf("router: sync send to %q: %w", to, ErrNoID)
	}
	mb := r.table.Load().byName[to]
	if mb == nil {
		return message.Message{}, unknown(to, id)
	}
	if timeout <= 0 {
		timeout = DefaultSyncTimeout
	}
	m.Header.Sync = true
	m.Route.Destination = to

	w := getWaiter(timeout)
	defer putWaiter(w)
	if !r.waiters.add(id, w) {
		return message.Message{}, fmt.Errorf("router: sync send %s to %q: a sync request with this ID is pending: %w", id, to, ErrDuplicate)
	}
	err := mb.put(ctx, m, w.timer.C)
	if err == nil {
		select {
		case resp := <-w.ch: // Reply removed the waiter
			return resp, nil
		case <-w.timer.C:
			err = fmt.Errorf("router: sync send %s to %q: no reply within %v: %w", id, to, timeout, context.DeadlineExceeded)
		case <-ctx.Done():
			err = fmt.Errorf("router: sync send %s to %q: waiting for reply: %w", id, to, ctx.Err())
		}
	}
	// Giving up: remove the waiter, unless a Reply took it first, in which case its response is
	// already in w.ch (Reply hands over under the shard lock) and dropping it would lose it.
	if r.waiters.remove(id, w) {
		return message.Message{}, err
	}
	return <-w.ch, nil
}

// Reply delivers resp, the answer to the message whose ID is resp.Header.ParentID. A SendSync
// waiting for it gets it at once (this never blocks); otherwise resp is sent to
// resp.Route.Destination like Send, so asynchronous replies reach the requester's mailbox. With
// neither a waiter nor a known destination the error wraps ErrNoWaiter.
func (r *Router) Reply(ctx context.Context, resp message.Message) error {
	if resp.Header.ParentID != "" && r.waiters.handOver(resp.Header.ParentID, resp) {
		return nil
	}
	to := resp.Route.Destination
	if to == "" {
		return fmt.Errorf("router: reply %s to %s: %w and no destination", resp.Header.ID, resp.Header.ParentID, ErrNoWaiter)
	}
	err := r.Send(ctx, to, resp)
	if errors.Is(err, ErrUnknownModule) {
		return fmt.Errorf("router: reply %s to %s: %w: %w", resp.Header.ID, resp.Header.ParentID, ErrNoWaiter, err)
	}
	return err
}

// Modules lists the registered modules in registration order.
func (r *Router) Modules() []ModuleInfo {
	order := r.table.Load().order
	out := make([]ModuleInfo, len(order))
	for i, mb := range order {
		out[i] = mb.info()
	}
	return out
}

func unknown(to, id string) error {
	return fmt.Errorf("router: send %s to %q: %w", id, to, ErrUnknownModule)
}
