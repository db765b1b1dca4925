// Package abi is Kedge's WASM module ABI, version 1: the names of the functions a guest exports and
// imports, the status codes that cross the boundary, and the compact binary encodings of messages,
// store keys and results. The host (wasm/runtime) and the Go guest library (wasm/guest) both use it,
// so the two sides cannot drift apart. wasm/README.md is the normative description.
//
// The package uses no fmt, reflection or JSON (only errors, strconv, encoding/binary and unsafe), so
// guests that import it stay small.
package abi

import (
	"errors"
	"strconv"
)

// Version is the ABI version a guest reports from its ExportVersion function.
const Version = 1

// Functions the guest exports.
const (
	ExportVersion = "kedge_abi_version" // () -> i32: Version
	ExportBuffer  = "kedge_buffer"      // (size i32) -> i32: address of the exchange buffer, at least size bytes
	ExportInit    = "kedge_init"        // (len i32) -> i32: Status; the buffer holds an encoded Init
	ExportHandle  = "kedge_handle"      // (len i32) -> i32: Status; the buffer holds an encoded Message
	// ExportInitialize is the reactor's runtime initialiser (Go -buildmode=c-shared), run first.
	ExportInitialize = "_initialize"
)

// ImportModule is the module name of the host functions.
const ImportModule = "kedge"

// Host functions (imported by the guest from ImportModule). Results r < 0 are -Status.
const (
	ImportSend        = "send"         // (to, to_len, msg, msg_len) -> r
	ImportSendGroup   = "send_group"   // (group, group_len, msg, msg_len) -> r
	ImportReply       = "reply"        // (msg, msg_len) -> r
	ImportStoreGet    = "store_get"    // (key, key_len, out, out_cap) -> r: size of the Value result
	ImportStorePut    = "store_put"    // (key, key_len, val, val_len, rv i64) -> r: 1 applied, 0 stale
	ImportStoreDelete = "store_delete" // (key, key_len) -> r: 1 existed, 0 did not
	ImportStoreList   = "store_list"   // (query, query_len, out, out_cap) -> r: size of the List result
	ImportLog         = "log"          // (level i32, msg, msg_len) -> r
	ImportNow         = "now"          // () -> i64: Unix time in nanoseconds
	ImportLastError   = "last_error"   // (out, out_cap) -> size of the last failed host call's message
	ImportFail        = "fail"         // (msg, msg_len): why the current init/handle call fails

	// ImportReplyContent answers the message being handled with this content (JSON, may be empty).
	// The host builds the reply as Message.Reply would (see IsReplyTo), so only the content crosses;
	// added within version 1: a guest that does not import it is unaffected.
	ImportReplyContent = "reply_content" // (content, content_len) -> r
)

// Status is the outcome of a call across the boundary; 0 is success.
type Status int32

const (
	OK            Status = 0
	Failed        Status = 1 // the guest's Init or Handle returned an error
	Denied        Status = 2 // the module's manifest does not grant this
	NotFound      Status = 3 // no such store object
	UnknownModule Status = 4 // no running module (or group member) by that name
	Invalid       Status = 5 // malformed arguments: bad pointer, bad encoding, empty key
	Unavailable   Status = 6 // the destination's mailbox is full or closed, or the call's deadline passed
	Internal      Status = 7 // the host failed (e.g. the store); retrying later may work
)

var statusNames = [...]string{"ok", "failed", "denied", "not found", "unknown module", "invalid", "unavailable", "internal"}

func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "status " + strconv.Itoa(int(s))
}

// Error is a failed call: a status and the message that explains it.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Status.String()
	}
	return e.Message
}

// Is makes errors.Is(err, abi.ErrDenied) true for any *Error with the Denied status.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Message == "" && t.Status == e.Status
}

// Sentinels to test a status with errors.Is.
var (
	ErrDenied        error = &Error{Status: Denied}
	ErrNotFound      error = &Error{Status: NotFound}
	ErrUnknownModule error = &Error{Status: UnknownModule}
	ErrInvalid       error = &Error{Status: Invalid}
	ErrUnavailable   error = &Error{Status: Unavailable}
	ErrInternal      error = &Error{Status: Internal}
)

// Log levels for ImportLog; they are log/slog's.
const (
	LevelDebug int32 = -4
	LevelInfo  int32 = 0
	LevelWarn  int32 = 4
	LevelError int32 = 8
)
