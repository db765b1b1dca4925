package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/kedge-io/kedge/host/store/storeapi"
	"math"
	"strings"
	"time"
)

// The value types live in storeapi (cgo-free, for the SDK); the store uses them under these names.
type (
	Key       = storeapi.Key
	Object    = storeapi.Object
	PutResult = storeapi.PutResult
	Query     = storeapi.Query
)

var (
	// ErrNotFound: no object under that key in that scope.
	ErrNotFound = storeapi.ErrNotFound
	// ErrInvalidKey: a key lacks its type or name, or a scope is empty.
	ErrInvalidKey = storeapi.ErrInvalidKey
)

func validateKey(k Key) error {
	if k.Type == "" || k.Name == "" {
		return fmt.Errorf("%w type=%q namespace=%q name=%q: type and name must not be empty", ErrInvalidKey, k.Type, k.Namespace, k.Name)
	}
	return nil
}

// Objects is the view of one scope: the edge meta store uses "meta", each module its own name.
// Scopes never see each other's objects.
type Objects struct {
	db    *DB
	scope string
	err   error // set for an empty scope; every method returns it
}

// Objects returns the view of scope. An empty scope yields a view whose methods all fail.
func (db *DB) Objects(scope string) *Objects {
	o := &Objects{db: db, scope: scope}
	if scope == "" {
		o.err = fmt.Errorf("%w: empty scope: pass the module name (the meta store uses %q)", ErrInvalidKey, "meta")
	}
	return o
}

// Put stores obj unless it is stale; see PutResult. The write is durable when Put returns.
func (o *Objects) Put(ctx context.Context, obj Object) (PutResult, error) {
	res, err := o.put(ctx, []Object{obj}, "put")
	if err != nil {
		return PutResult{}, err
	}
	return res[0], nil
}

// PutBatch applies objs in order in one transaction: all are stored (or found stale) or none.
// A later object in the batch is compared against an earlier one with the same key.
func (o *Objects) PutBatch(ctx context.Context, objs []Object) ([]PutResult, error) {
	return o.put(ctx, objs, "put batch")
}

func (o *Objects) put(ctx context.Context, objs []Object, op string) ([]PutResult, error) {
	if o.err != nil {
		return nil, fmt.Errorf("%s: %w", op, o.err)
	}
	for i, obj := range objs {
		if err := validateObject(obj); err != nil {
			return nil, fmt.Errorf("%s: object %d in scope %q: %w", op, i, o.scope, err)
		}
	}
	if len(objs) == 0 {
		return nil, nil
	}

	tx, err := o.db.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%s in scope %q: begin: %w", op, o.scope, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	upsert, current := tx.StmtContext(ctx, o.db.wUpsert), tx.StmtContext(ctx, o.db.wRV)

	now := time.Now().UnixNano()
	res := make([]PutResult, len(objs))
	for i, obj := range objs {
		value := obj.Value
		if value == nil {
			value = []byte{} // the driver binds nil as NULL; the column is NOT NULL
		}
		r, err := upsert.ExecContext(ctx, o.scope, obj.Type, obj.Namespace, obj.Name,
			int64(obj.ResourceVersion), value, now)
		if err != nil {
			return nil, fmt.Errorf("%s %s in scope %q: %w", op, obj.Key, o.scope, err)
		}
		// The upsert changes one row when it inserted or passed the guard, none when stale.
		if n, err := r.RowsAffected(); err != nil {
			return nil, fmt.Errorf("%s %s in scope %q: %w", op, obj.Key, o.scope, err)
		} else if n == 1 {
			res[i] = PutResult{Applied: true, Stored: obj.ResourceVersion}
			continue
		}
		// Stale. Still inside the write transaction, so this read cannot race another writer.
		var stored int64
		if err := current.QueryRowContext(ctx, o.scope, obj.Type, obj.Namespace, obj.Name).Scan(&stored); err != nil {
			return nil, fmt.Errorf("%s %s in scope %q: read stored version: %w", op, obj.Key, o.scope, err)
		}
		res[i] = PutResult{Applied: false, Stored: uint64(stored)}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("%s in scope %q: commit: %w", op, o.scope, err)
	}
	return res, nil
}

func validateObject(obj Object) error {
	if err := validateKey(obj.Key); err != nil {
		return err
	}
	if obj.ResourceVersion > math.MaxInt64 {
		return fmt.Errorf("%s: resourceVersion %d exceeds 2^63-1, the largest SQLite integer", obj.Key, obj.ResourceVersion)
	}
	return nil
}

// Get returns the object under k, or an error wrapping ErrNotFound.
func (o *Objects) Get(ctx context.Context, k Key) (Object, error) {
	if o.err != nil {
		return Object{}, fmt.Errorf("get: %w", o.err)
	}
	if err := validateKey(k); err != nil {
		return Object{}, fmt.Errorf("get in scope %q: %w", o.scope, err)
	}
	obj := Object{Key: k}
	var rv, at int64
	err := o.db.rGet.QueryRowContext(ctx, o.scope, k.Type, k.Namespace, k.Name).Scan(&rv, &obj.Value, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Object{}, fmt.Errorf("get %s in scope %q: %w", k, o.scope, ErrNotFound)
	}
	if err != nil {
		return Object{}, fmt.Errorf("get %s in scope %q: %w", k, o.scope, err)
	}
	obj.ResourceVersion, obj.UpdatedAt = uint64(rv), time.Unix(0, at)
	return obj, nil
}

// List returns the objects matching q, ordered by type, namespace, name.
func (o *Objects) List(ctx context.Context, q Query) ([]Object, error) {
	if o.err != nil {
		return nil, fmt.Errorf("list: %w", o.err)
	}
	var sb strings.Builder
	sb.WriteString(`SELECT type, namespace, name, rv, value, updated_at FROM objects WHERE scope = ?`)
	args := []any{o.scope}
	if q.Type != "" {
		sb.WriteString(` AND type = ?`)
		args = append(args, q.Type)
	}
	if q.Namespace != "" {
		sb.WriteString(` AND namespace = ?`)
		args = append(args, q.Namespace)
	}
	// A range, not LIKE: '%' and '_' in names stay literal and the primary key index is used.
	if q.NamePrefix != "" {
		sb.WriteString(` AND name >= ?`)
		args = append(args, q.NamePrefix)
		if end, ok := prefixEnd(q.NamePrefix); ok {
			sb.WriteString(` AND name < ?`)
			args = append(args, end)
		}
	}
	sb.WriteString(` ORDER BY type, namespace, name`)

	rows, err := o.db.r.QueryContext(ctx, sb.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list %+v in scope %q: %w", q, o.scope, err)
	}
	defer rows.Close()
	var out []Object
	for rows.Next() {
		var obj Object
		var rv, at int64
		if err := rows.Scan(&obj.Type, &obj.Namespace, &obj.Name, &rv, &obj.Value, &at); err != nil {
			return nil, fmt.Errorf("list %+v in scope %q: %w", q, o.scope, err)
		}
		obj.ResourceVersion, obj.UpdatedAt = uint64(rv), time.Unix(0, at)
		out = append(out, obj)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %+v in scope %q: %w", q, o.scope, err)
	}
	return out, nil
}

// prefixEnd is the smallest string greater than every string starting with p (byte order, as
// SQLite's BINARY collation compares). ok is false when none exists (p is all 0xff bytes).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// Delete removes the object under k and reports whether it existed.
func (o *Objects) Delete(ctx context.Context, k Key) (existed bool, err error) {
	if o.err != nil {
		return false, fmt.Errorf("delete: %w", o.err)
	}
	if err := validateKey(k); err != nil {
		return false, fmt.Errorf("delete in scope %q: %w", o.scope, err)
	}
	res, err := o.db.wDelete.ExecContext(ctx, o.scope, k.Type, k.Namespace, k.Name)
	if err != nil {
		return false, fmt.Errorf("delete %s in scope %q: %w", k, o.scope, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("delete %s in scope %q: %w", k, o.scope, err)
	}
	return n > 0, nil
}
