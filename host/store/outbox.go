package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/kedge-io/kedge/host/store/storeapi"
	"time"
)

// ErrOutboxFull: Enqueue refused a message because the outbox holds Options.OutboxMax entries.
var ErrOutboxFull = errors.New("outbox full")

// Entry is one queued message. Seq increases strictly and is never reused, even after Ack.
type Entry = storeapi.Entry

// Outbox is a durable FIFO of messages waiting for delivery (e.g. to the cloud while offline).
// The sender Peeks a batch, delivers it, then Acks up to the last delivered Seq: delivery is
// at-least-once, because a crash between delivery and Ack redelivers those entries.
type Outbox struct{ db *DB }

// Outbox returns the store's outbox.
func (db *DB) Outbox() *Outbox { return &Outbox{db: db} }

// Enqueue appends payload and returns its Seq. It is durable when Enqueue returns.
// It never drops: when full it fails with an error wrapping ErrOutboxFull.
func (q *Outbox) Enqueue(ctx context.Context, payload []byte) (seq int64, err error) {
	if payload == nil {
		payload = []byte{} // the driver binds nil as NULL; the column is NOT NULL
	}
	tx, err := q.db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("enqueue: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	// Reserve a slot first: the counter row makes the limit check O(1) instead of COUNT(*).
	res, err := tx.StmtContext(ctx, q.db.wReserve).ExecContext(ctx, q.db.max)
	if err != nil {
		return 0, fmt.Errorf("enqueue: reserve slot: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return 0, fmt.Errorf("enqueue: reserve slot: %w", err)
	} else if n == 0 {
		var pending int
		if err := tx.StmtContext(ctx, q.db.wOutLen).QueryRowContext(ctx).Scan(&pending); err != nil {
			return 0, fmt.Errorf("enqueue: %w (and reading its length failed: %v)", ErrOutboxFull, err)
		}
		return 0, fmt.Errorf("enqueue: %w: %d entries pending, limit %d: deliver and Ack entries, or raise Options.OutboxMax",
			ErrOutboxFull, pending, q.db.max)
	}
	res, err = tx.StmtContext(ctx, q.db.wEnqueue).ExecContext(ctx, payload, time.Now().UnixNano())
	if err != nil {
		return 0, fmt.Errorf("enqueue: insert: %w", err)
	}
	if seq, err = res.LastInsertId(); err != nil { // the rowid is seq: INTEGER PRIMARY KEY aliases it
		return 0, fmt.Errorf("enqueue: read seq: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("enqueue: commit: %w", err)
	}
	return seq, nil
}

// Peek returns up to max of the oldest entries, oldest first, without removing them.
func (q *Outbox) Peek(ctx context.Context, max int) ([]Entry, error) {
	if max <= 0 {
		return nil, fmt.Errorf("peek outbox: max is %d: pass a positive batch size", max)
	}
	rows, err := q.db.rPeek.QueryContext(ctx, max)
	if err != nil {
		return nil, fmt.Errorf("peek outbox: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var at int64
		if err := rows.Scan(&e.Seq, &e.Payload, &at); err != nil {
			return nil, fmt.Errorf("peek outbox: %w", err)
		}
		e.EnqueuedAt = time.Unix(0, at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("peek outbox: %w", err)
	}
	return out, nil
}

// Ack removes every entry with Seq <= upTo and returns how many it removed.
func (q *Outbox) Ack(ctx context.Context, upTo int64) (removed int, err error) {
	tx, err := q.db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("ack outbox to %d: begin: %w", upTo, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	res, err := tx.StmtContext(ctx, q.db.wAckDelete).ExecContext(ctx, upTo)
	if err != nil {
		return 0, fmt.Errorf("ack outbox to %d: %w", upTo, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("ack outbox to %d: %w", upTo, err)
	}
	if n == 0 {
		return 0, nil // nothing to remove: skip the commit (and its fsync)
	}
	if _, err := tx.StmtContext(ctx, q.db.wAckCount).ExecContext(ctx, n); err != nil {
		return 0, fmt.Errorf("ack outbox to %d: update length: %w", upTo, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("ack outbox to %d: commit: %w", upTo, err)
	}
	return int(n), nil
}

// Len returns the number of entries waiting.
func (q *Outbox) Len(ctx context.Context) (int, error) {
	var n int
	if err := q.db.rLen.QueryRowContext(ctx).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox length: %w", err)
	}
	return n, nil
}
