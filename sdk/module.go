// Package sdk is the public, stable API for Kedge module authors: the module contract, the host
// services a module may use, and the registry of builtin modules.
//
// A module is a Go value the host drives: Start once, Handle for every message addressed to it (one
// at a time, in order), Stop once. The host owns the mailbox and the delivery loop, so the same module
// runs unchanged compiled in, as a plugin process or, for drivers, as WASM — and can be hot-swapped.
package sdk

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/sdk/storeapi"
)

// APIVersion is the module contract version; a plugin built for another major version is refused.
const APIVersion = "1"

// Message is the unit of communication (see sdk/message).
type Message = message.Message

// Module is what every module implements, whatever runtime it runs in.
//
// Configuration: the value returned by Info.New must be a pointer to a struct; its exported fields
// with `yaml` tags are the module's settings (a `doc` tag documents each one in --defaultconfig).
// The host decodes the module's config section into that value strictly before Start.
type Module interface {
	// Start prepares the module and starts its background work. It returns once the module can take
	// messages; long work belongs in goroutines bound to ctx, which is cancelled when the module stops.
	Start(ctx context.Context, h Host) error
	// Handle processes one message. The host never calls Handle concurrently for one module. An error
	// is logged and counted, and if the message was a sync request the host replies with the error.
	Handle(ctx context.Context, m Message) error
	// Stop releases what Start acquired and waits for the module's goroutines. It is called once,
	// after the last Handle returned and after the context given to Start was cancelled.
	Stop(ctx context.Context) error
}

// HealthChecker is implemented by modules that can say whether they work; /readyz reports it.
type HealthChecker interface {
	Healthy(ctx context.Context) error
}

// LinkChecker is implemented by modules that hold a link to a remote peer (edgehub's to cloudhub,
// edgestream's tunnel). A link that is down is not a fault of the node — an edge node serves its
// pods and devices offline — so such a module's Healthy leaves the link out, /readyz does not turn
// 503 while the node works offline, and /readyz/cloud reports LinkUp (nil: the link is up).
type LinkChecker interface {
	LinkUp(ctx context.Context) error
}

// Host is everything a module may reach. Nothing else of the host is visible to a module.
type Host interface {
	// Name is the module's own name (its routing address).
	Name() string
	// NodeName is the edge node's name on edgecore, the cloudcore instance's name on cloudcore.
	NodeName() string
	// Send queues m for module `to`. It waits for room in a full mailbox until ctx ends.
	Send(ctx context.Context, to string, m Message) error
	// SendToGroup queues m for every module of a group.
	SendToGroup(ctx context.Context, group string, m Message) error
	// SendSync sends m and waits up to timeout for the reply whose parent ID is m's ID.
	SendSync(ctx context.Context, to string, m Message, timeout time.Duration) (Message, error)
	// Reply answers a request: to a waiting SendSync, else to the reply's destination module.
	Reply(ctx context.Context, m Message) error
	// Store is the module's own namespace of the SQLite store; no other module sees it.
	Store() Store
	// Logger is a slog logger tagged with the module's name.
	Logger() *slog.Logger
	// Metrics registers the module instance's Prometheus collectors (labelled with the module's name;
	// a hot-swapped instance gets a fresh registry, so registering the same names again is fine).
	Metrics() prometheus.Registerer
}

// Store types: objects keyed by (type, namespace, name) with resourceVersion-guarded writes.
type (
	Key       = storeapi.Key
	Object    = storeapi.Object
	Query     = storeapi.Query
	PutResult = storeapi.PutResult
)

// ErrNotFound is returned by Store.Get for a missing object.
var ErrNotFound = storeapi.ErrNotFound

// Store is a module's view of the meta store.
type Store interface {
	// Put writes obj unless the stored resourceVersion is newer or equal (then Applied is false).
	Put(ctx context.Context, obj Object) (PutResult, error)
	// PutBatch writes many objects in one transaction.
	PutBatch(ctx context.Context, objs []Object) ([]PutResult, error)
	Get(ctx context.Context, k Key) (Object, error)
	List(ctx context.Context, q Query) ([]Object, error)
	Delete(ctx context.Context, k Key) (existed bool, err error)
}

// Errors of message delivery a module may test with errors.Is. The host's router returns them
// (wrapped with the module and message concerned); they are defined here so the contract names them
// without depending on the host.
var (
	// ErrUnknownModule: no running module has that name (or no module is in that group) — yet, if the
	// host is still starting its modules (see StartWaiter).
	ErrUnknownModule = errors.New("unknown module")
	// ErrHostStopping: the destination is one of the host's modules and has stopped because the host
	// is shutting down (the error wraps ErrUnknownModule too). The message was not handled; whoever
	// owes an answer for it should leave it unanswered so its sender tries again later.
	ErrHostStopping = errors.New("the host is shutting down")
	// ErrNoWaiter: a reply matched no waiting request and named no destination module.
	ErrNoWaiter = errors.New("no sync waiter for reply")
	// ErrMailboxFull: the destination's mailbox had no room (a non-blocking send).
	ErrMailboxFull = errors.New("mailbox full")
	// ErrClosed: the destination's mailbox is closed (the module stopped).
	ErrClosed = errors.New("mailbox closed")
	// ErrDuplicate: a module of that name is already registered.
	ErrDuplicate = errors.New("already registered")
	// ErrNoID: the message has no header ID (a sync request or reply needs one).
	ErrNoID = errors.New("message has no header ID")
)

// Outbox is the node's durable FIFO queue of upstream messages: what is enqueued survives a crash or
// reboot until it is acknowledged.
type Outbox interface {
	Enqueue(ctx context.Context, payload []byte) (seq int64, err error)
	Peek(ctx context.Context, max int) ([]OutboxEntry, error)
	Ack(ctx context.Context, upTo int64) (removed int, err error)
	Len(ctx context.Context) (int, error)
}

// OutboxEntry is one queued upstream message.
type OutboxEntry = storeapi.Entry

// OutboxProvider is implemented by a host that keeps the node's upstream outbox (the builtin host
// does); the hub module uses it. Modules that send upstream just send to the hub.
type OutboxProvider interface {
	Outbox() Outbox
}
