// Package storeapi holds the store's value types and errors without the store itself, so the module
// SDK (and every plugin executable built on it) can name them without linking SQLite (cgo).
// host/store (through host/store/storeapi) aliases these types; modules see them through sdk.
package storeapi

import (
	"errors"
	"time"
)

var (
	// ErrNotFound: no object under that key in that scope.
	ErrNotFound = errors.New("not found")
	// ErrInvalidKey: a key lacks its type or name, or a scope is empty.
	ErrInvalidKey = errors.New("invalid key")
)

// Key identifies an object within a scope. Namespace is empty for cluster-scoped objects.
type Key struct {
	Type, Namespace, Name string
}

func (k Key) String() string {
	if k.Namespace == "" {
		return k.Type + "/" + k.Name
	}
	return k.Type + "/" + k.Namespace + "/" + k.Name
}

// Object is a stored value with its resourceVersion.
type Object struct {
	Key
	ResourceVersion uint64 // 0 = unversioned: always applied, and stored as 0
	Value           []byte
	UpdatedAt       time.Time // set by the store on write; ignored on Put
}

// PutResult tells whether a Put changed the store.
type PutResult struct {
	Applied bool   // false: the update was stale (RV not newer than the stored one) and ignored
	Stored  uint64 // resourceVersion now in the store
}

// Query selects objects in a scope; an empty field matches anything.
type Query struct {
	Type, Namespace, NamePrefix string
}

// Entry is one queued outbox message.
type Entry struct {
	Seq        int64
	Payload    []byte
	EnqueuedAt time.Time
}
