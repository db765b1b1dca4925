// Package guest is the library for Kedge WASM modules written in Go (GOOS=wasip1). A module is one
// short file: a type with Init and Handle, registered from an init function:
//
//	type echo struct{}
//
//	func (echo) Init(config []byte) error { return nil }
//	func (echo) Handle(m guest.Message) error { return guest.Reply(m.Reply(m.Content)) }
//
//	func init() { guest.Register(echo{}) }
//	func main() {} // never called: the module is a reactor
//
// Build it with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared, then pack its manifest into it
// with wasmpack (see wasm/README.md). The library implements the exports of the Kedge ABI
// (wasm/abi) and wraps the host functions; every host call is synchronous and runs inside the call
// to Init or Handle, under the module's per-call deadline.
//
// Outside wasip1 the package compiles, so tools and vet work, but every host call fails.
package guest

import (
	"time"
	"unsafe"

	"github.com/kedge-io/kedge/wasm/abi"
)

// Types shared with the host; see package abi.
type (
	Message = abi.Message
	Header  = abi.Header
	Route   = abi.Route
	Key     = abi.Key
	Query   = abi.Query
	Entry   = abi.Entry
)

// Errors a host call may return, to test with errors.Is; the error's text says more.
var (
	ErrDenied        = abi.ErrDenied        // the manifest does not grant it
	ErrNotFound      = abi.ErrNotFound      // no such store object
	ErrUnknownModule = abi.ErrUnknownModule // no running module or group by that name
	ErrInvalid       = abi.ErrInvalid       // malformed request (e.g. an empty key)
	ErrUnavailable   = abi.ErrUnavailable   // mailbox full or closed, or the call's deadline passed
	ErrInternal      = abi.ErrInternal      // the host failed; retrying later may work
)

// Log levels.
const (
	LevelDebug = abi.LevelDebug
	LevelInfo  = abi.LevelInfo
	LevelWarn  = abi.LevelWarn
	LevelError = abi.LevelError
)

// Module is what a guest implements. The host calls Init once per instance, then Handle for each
// message addressed to the module, one at a time. An error (or a panic) fails that call only.
type Module interface {
	// Init receives the module's settings from the host config as a JSON object ({} when none).
	Init(config []byte) error
	// Handle processes one message. m.Content is only valid until Handle returns (it is read in
	// place, because allocating is expensive in a guest): copy it to keep it.
	Handle(m Message) error
}

var (
	module            Module
	name, node, group string
	out, scratch      []byte // encodes requests to the host; receives its results
	// current is the message being handled. Between calls its source is outside, a string no
	// message's fields share, so no reply matches it (see Reply).
	current = Message{Route: Route{Source: outside}}
	outside = "(no message is being handled)"
)

// Register sets the module; call it from an init function (a reactor's main is never run).
func Register(m Module) { module = m }

// Name is the module's name, its routing address (valid from Init on).
func Name() string { return name }

// NodeName is the name of the node the module runs on.
func NodeName() string { return node }

// Group is the module's routing group.
func Group() string { return group }

// Send queues m for the module called to. The host sets the source, and the ID and timestamp when
// they are empty. Denied unless the manifest grants the destination and m's resource.
func Send(to string, m Message) error {
	out = abi.AppendMessage(out[:0], m)
	return status(hostSend(str(to), uint32(len(to)), ptr(out), uint32(len(out))))
}

// SendToGroup queues m for every module of group; denied unless the manifest grants the group and
// m's resource.
func SendToGroup(group string, m Message) error {
	out = abi.AppendMessage(out[:0], m)
	return status(hostSendGroup(str(group), uint32(len(group)), ptr(out), uint32(len(out))))
}

// Reply answers a request (build it with the request's Reply method). A reply to the message being
// handled goes back to its sender; m's resource must be granted by the manifest.
//
// A reply that is exactly what the message being handled's Reply method returned (nothing changed
// but, possibly, the content) is sent as its content alone: the host builds the same reply from
// the message it holds, which saves encoding and decoding the rest.
func Reply(m Message) error {
	if abi.IsReplyTo(&current, &m) {
		return status(hostReplyContent(ptr(m.Content), uint32(len(m.Content))))
	}
	out = abi.AppendMessage(out[:0], m)
	return status(hostReply(ptr(out), uint32(len(out))))
}

// StoreGet returns the value stored under k in the module's namespace, or an error matching
// ErrNotFound.
func StoreGet(k Key) ([]byte, error) {
	out = abi.AppendKey(out[:0], k)
	n, err := fetch(func(dst []byte) int32 {
		return hostStoreGet(ptr(out), uint32(len(out)), ptr(dst), uint32(len(dst)))
	})
	if err != nil {
		return nil, err
	}
	_, v, err := abi.DecodeValue(n)
	return v, err
}

// StorePut stores value under k, replacing what was there.
func StorePut(k Key, value []byte) error {
	_, err := StorePutVersion(k, 0, value)
	return err
}

// StorePutVersion stores value under k unless the stored resourceVersion is newer than or equal to
// rv (then applied is false); rv 0 always applies.
func StorePutVersion(k Key, rv uint64, value []byte) (applied bool, err error) {
	out = abi.AppendKey(out[:0], k)
	r := hostStorePut(ptr(out), uint32(len(out)), ptr(value), uint32(len(value)), int64(rv))
	return r == 1, status(r)
}

// StoreDelete removes k and reports whether it existed.
func StoreDelete(k Key) (existed bool, err error) {
	out = abi.AppendKey(out[:0], k)
	r := hostStoreDelete(ptr(out), uint32(len(out)))
	return r == 1, status(r)
}

// StoreList returns the objects q selects, ordered by key.
func StoreList(q Query) ([]Entry, error) {
	out = abi.AppendQuery(out[:0], q)
	b, err := fetch(func(dst []byte) int32 {
		return hostStoreList(ptr(out), uint32(len(out)), ptr(dst), uint32(len(dst)))
	})
	if err != nil {
		return nil, err
	}
	return abi.DecodeEntries(b)
}

// Log writes msg to the host's log, tagged with the module's name; denied unless the manifest
// grants log.
func Log(level int32, msg string) error {
	return status(hostLog(level, str(msg), uint32(len(msg))))
}

// Now is the host's clock.
func Now() time.Time { return time.Unix(0, hostNow()) }

// fetch calls a host function that writes a result of unknown size into dst, growing the scratch
// buffer and asking again when the host says the result is larger.
func fetch(call func(dst []byte) int32) ([]byte, error) {
	if cap(scratch) == 0 {
		scratch = make([]byte, 4096)
	}
	for {
		scratch = scratch[:cap(scratch)]
		r := call(scratch)
		if r < 0 {
			return nil, status(r)
		}
		if int(r) <= len(scratch) {
			return scratch[:r], nil
		}
		scratch = make([]byte, r)
	}
}

// status turns a host function's result into an error carrying the host's explanation.
func status(r int32) error {
	if r >= 0 {
		return nil
	}
	return &abi.Error{Status: abi.Status(-r), Message: lastError()}
}

func lastError() string {
	b, err := fetch(func(dst []byte) int32 { return hostLastError(ptr(dst), uint32(len(dst))) })
	if err != nil {
		return ""
	}
	return string(b)
}

func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }
func str(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }
