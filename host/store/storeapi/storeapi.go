// Package storeapi re-exports sdk/storeapi, where the store's value types and errors now live (the
// module contract in sdk/ depends on nothing in host/). Host code may keep importing this package.
package storeapi

import "github.com/kedge-io/kedge/sdk/storeapi"

var (
	ErrNotFound   = storeapi.ErrNotFound
	ErrInvalidKey = storeapi.ErrInvalidKey
)

type (
	Key       = storeapi.Key
	Object    = storeapi.Object
	PutResult = storeapi.PutResult
	Query     = storeapi.Query
	Entry     = storeapi.Entry
)
