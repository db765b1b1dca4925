package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// migrations[i] moves the schema from version i to i+1. Append only: never edit a released step.
var migrations = []string{
	// 1: objects keyed by (scope, type, namespace, name) and the outbox with its O(1) length counter.
	`CREATE TABLE objects (
		scope      TEXT    NOT NULL,
		type       TEXT    NOT NULL,
		namespace  TEXT    NOT NULL,
		name       TEXT    NOT NULL,
		rv         INTEGER NOT NULL CHECK (rv >= 0),
		value      BLOB    NOT NULL,
		updated_at INTEGER NOT NULL, -- unix nanoseconds
		PRIMARY KEY (scope, type, namespace, name)
	);
	CREATE TABLE outbox (
		seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: a seq is never reused, even after ack
		payload     BLOB    NOT NULL,
		enqueued_at INTEGER NOT NULL -- unix nanoseconds
	);
	CREATE TABLE outbox_len (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		n  INTEGER NOT NULL CHECK (n >= 0)
	);
	INSERT INTO outbox_len (id, n) VALUES (1, 0);`,
}

// migrate applies pending steps, each in its own transaction, and returns the resulting version.
// The writer's BEGIN IMMEDIATE serialises concurrent openers, so a step never runs twice.
func migrate(ctx context.Context, w *sql.DB, path string) (int, error) {
	return migrateSteps(ctx, w, path, migrations)
}

func migrateSteps(ctx context.Context, w *sql.DB, path string, steps []string) (int, error) {
	for {
		v, done, err := migrateOne(ctx, w, path, steps)
		if err != nil || done {
			return v, err
		}
	}
}

func migrateOne(ctx context.Context, w *sql.DB, path string, steps []string) (version int, done bool, err error) {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		id      INTEGER PRIMARY KEY CHECK (id = 1),
		version INTEGER NOT NULL)`); err != nil {
		return 0, false, fmt.Errorf("create schema_version: %w", err)
	}
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&version)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("read schema version: %w", err)
	}
	switch {
	case version > len(steps):
		return version, false, fmt.Errorf("database %s has schema version %d, this binary supports up to %d: upgrade",
			path, version, len(steps))
	case version == len(steps):
		return version, true, tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, steps[version]); err != nil {
		return version, false, fmt.Errorf("migrate schema %d -> %d: %w", version, version+1, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (id, version) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET version = excluded.version`, version+1); err != nil {
		return version, false, fmt.Errorf("record schema version %d: %w", version+1, err)
	}
	if err := tx.Commit(); err != nil {
		return version, false, fmt.Errorf("commit migration to %d: %w", version+1, err)
	}
	return version + 1, false, nil
}
