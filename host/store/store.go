// Package store is Kedge's durable meta store: a SQLite database (mattn/go-sqlite3, WAL mode)
// holding versioned objects in per-module scopes and a FIFO outbox of messages awaiting delivery.
//
// One writer connection serialises all writes (SQLite allows one writer anyway, and a single
// connection keeps prepared statements hot); a separate query-only pool serves reads, which WAL
// lets run concurrently with the writer. Every write is a transaction that is durable when the
// call returns (synchronous=FULL by default, because edge boxes lose power).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// Options tune a DB. The zero value is the recommended configuration.
type Options struct {
	BusyTimeout time.Duration // how long to wait for another process's lock; default 5s
	Synchronous string        // "full" (default): a returned write survives power loss; "normal": power loss may undo the last writes (never corrupts)
	OutboxMax   int           // max outbox entries before Enqueue fails with ErrOutboxFull; default 1_000_000; <0 = unlimited
	Logger      *slog.Logger  // where a tightened file mode is reported; nil: slog.Default()
	// CacheKiB bounds SQLite's page cache per connection (PRAGMA cache_size = -CacheKiB; the writer
	// and each of the readers has one, filled only as pages are read). 0: SQLite's default, 2000 KiB.
	CacheKiB int
}

const (
	defaultBusyTimeout = 5 * time.Second
	defaultOutboxMax   = 1_000_000
	readConns          = 4 // readers are cheap in WAL; a few cover concurrent API handlers
)

// DB is an open store. It is safe for concurrent use.
type DB struct {
	path    string
	w       *sql.DB // exactly one connection: the only writer
	r       *sql.DB // query_only connections for reads
	version int
	max     int // outbox limit, <0 = unlimited

	// Prepared statements for the hot paths; w* run on the writer, r* on the readers.
	wUpsert, wRV, wDelete       *sql.Stmt
	wReserve, wEnqueue, wOutLen *sql.Stmt
	wAckDelete, wAckCount       *sql.Stmt
	rGet, rPeek, rLen           *sql.Stmt
}

// Open opens (creating if needed) the store at path and migrates it to the latest schema.
// The parent directory must exist: the store does not guess where data should live.
func Open(path string, opts Options) (*DB, error) {
	if path == "" {
		return nil, errors.New("open store: empty path: pass the database file path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	dir := filepath.Dir(abs)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("open store %s: parent directory: %w (create it first)", path, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("open store %s: parent %s is not a directory", path, dir)
	}

	if err := private(abs, opts.Logger); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}

	sync, err := synchronousMode(opts.Synchronous)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = defaultBusyTimeout
	}
	db := &DB{path: path, max: opts.OutboxMax}
	if db.max == 0 {
		db.max = defaultOutboxMax
	}

	common := url.Values{
		"_busy_timeout": {strconv.FormatInt(busy.Milliseconds(), 10)},
		"_foreign_keys": {"1"},
	}
	switch {
	case opts.CacheKiB < 0:
		return nil, fmt.Errorf("open store %s: Options.CacheKiB %d: must be 0 (SQLite's default) or a positive size in KiB", path, opts.CacheKiB)
	case opts.CacheKiB > 0:
		common.Set("_cache_size", strconv.Itoa(-opts.CacheKiB)) // negative: a size in KiB, not pages
	}
	wp := cloneValues(common)
	wp.Set("_journal_mode", "WAL")
	wp.Set("_synchronous", sync)
	wp.Set("_txlock", "immediate") // take the write lock at BEGIN, so no upgrade deadlock mid-transaction
	rp := cloneValues(common)
	rp.Set("_query_only", "1")

	ctx := context.Background()
	fail := func(err error) (*DB, error) {
		db.closeAll()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}

	if db.w, err = sql.Open("sqlite3", dsn(abs, wp)); err != nil {
		return fail(err)
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	if err := checkPragma(ctx, db.w, "journal_mode", "wal"); err != nil {
		return fail(err)
	}
	if err := checkPragma(ctx, db.w, "synchronous", map[string]string{"FULL": "2", "NORMAL": "1"}[sync]); err != nil {
		return fail(err)
	}
	if db.version, err = migrate(ctx, db.w, path); err != nil {
		return fail(err)
	}

	// Readers open after the writer has switched the file to WAL, so they never see rollback mode.
	if db.r, err = sql.Open("sqlite3", dsn(abs, rp)); err != nil {
		return fail(err)
	}
	db.r.SetMaxOpenConns(readConns)
	db.r.SetMaxIdleConns(readConns)
	db.r.SetConnMaxLifetime(0)

	if err := db.prepare(ctx); err != nil {
		return fail(err)
	}
	return db, nil
}

// FileMode is the mode of the database file and its -wal and -shm companions: they hold Secrets and
// tokens, so only the owner (the user edgecore or cloudcore runs as) may read them.
const FileMode os.FileMode = 0o600

// private creates the database file with FileMode when it is missing (SQLite then creates -wal and
// -shm with the main file's mode) and tightens an existing file, or companion, that others may read
// or write; a tightened file is logged.
func private(abs string, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, FileMode)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return err
		}
	case !errors.Is(err, os.ErrExist):
		return fmt.Errorf("create the database file: %w", err)
	}
	for _, p := range []string{abs, abs + "-wal", abs + "-shm", abs + "-journal"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file (%s)", p, fi.Mode().Type())
		}
		if fi.Mode().Perm()&^FileMode == 0 {
			continue
		}
		if err := os.Chmod(p, FileMode); err != nil {
			return fmt.Errorf("%s has mode %#o, readable beyond its owner, and cannot be tightened to %#o: %w", p, fi.Mode().Perm(), FileMode, err)
		}
		log.Warn("store file was readable beyond its owner; tightened", "file", p, "was", fmt.Sprintf("%#o", fi.Mode().Perm()), "now", fmt.Sprintf("%#o", FileMode))
	}
	return nil
}

func synchronousMode(s string) (string, error) {
	switch strings.ToLower(s) {
	case "", "full":
		return "FULL", nil
	case "normal":
		return "NORMAL", nil
	}
	return "", fmt.Errorf("Options.Synchronous %q: use \"full\" (power-loss safe) or \"normal\"", s)
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// dsn builds a SQLite URI; '%', '?' and '#' in the path would otherwise be read as URI syntax.
func dsn(abs string, params url.Values) string {
	p := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(abs))
	return "file:" + p + "?" + params.Encode()
}

// checkPragma fails when SQLite silently ignored a setting (e.g. WAL on a filesystem without shared memory).
func checkPragma(ctx context.Context, db *sql.DB, name, want string) error {
	var got string
	if err := db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&got); err != nil {
		return fmt.Errorf("read PRAGMA %s: %w", name, err)
	}
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("PRAGMA %s is %q, want %q: is the file on a local filesystem that supports it?", name, got, want)
	}
	return nil
}

func (db *DB) prepare(ctx context.Context) error {
	stmts := []struct {
		dst  **sql.Stmt
		pool *sql.DB
		sql  string
	}{
		// Upsert guarded by resourceVersion: RV 0 always wins; otherwise only a strictly newer RV.
		// Rows affected is 1 when the insert or update happened and 0 when the guard refused it.
		{&db.wUpsert, db.w, `INSERT INTO objects (scope, type, namespace, name, rv, value, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (scope, type, namespace, name) DO UPDATE
			SET rv = excluded.rv, value = excluded.value, updated_at = excluded.updated_at
			WHERE excluded.rv = 0 OR objects.rv < excluded.rv`},
		{&db.wRV, db.w, `SELECT rv FROM objects WHERE scope = ? AND type = ? AND namespace = ? AND name = ?`},
		{&db.wDelete, db.w, `DELETE FROM objects WHERE scope = ? AND type = ? AND namespace = ? AND name = ?`},
		{&db.wReserve, db.w, `UPDATE outbox_len SET n = n + 1 WHERE ?1 < 0 OR n < ?1`},
		{&db.wEnqueue, db.w, `INSERT INTO outbox (payload, enqueued_at) VALUES (?, ?)`},
		{&db.wOutLen, db.w, `SELECT n FROM outbox_len`},
		{&db.wAckDelete, db.w, `DELETE FROM outbox WHERE seq <= ?`},
		{&db.wAckCount, db.w, `UPDATE outbox_len SET n = n - ?`},
		{&db.rGet, db.r, `SELECT rv, value, updated_at FROM objects WHERE scope = ? AND type = ? AND namespace = ? AND name = ?`},
		{&db.rPeek, db.r, `SELECT seq, payload, enqueued_at FROM outbox ORDER BY seq LIMIT ?`},
		{&db.rLen, db.r, `SELECT n FROM outbox_len`},
	}
	for _, s := range stmts {
		st, err := s.pool.PrepareContext(ctx, s.sql)
		if err != nil {
			return fmt.Errorf("prepare %.50q: %w", s.sql, err)
		}
		*s.dst = st
	}
	return nil
}

// Close releases the database. In-flight calls finish first; later calls fail.
func (db *DB) Close() error {
	if err := db.closeAll(); err != nil {
		return fmt.Errorf("close store %s: %w", db.path, err)
	}
	return nil
}

func (db *DB) closeAll() error {
	var errs []error
	for _, st := range []*sql.Stmt{db.wUpsert, db.wRV, db.wDelete, db.wReserve, db.wEnqueue, db.wOutLen,
		db.wAckDelete, db.wAckCount, db.rGet, db.rPeek, db.rLen} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	// Readers first: the writer, closing last, checkpoints the WAL into the main file.
	for _, p := range []*sql.DB{db.r, db.w} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	return errors.Join(errs...)
}

// SchemaVersion is the schema version of the open database (always the latest this binary knows).
func (db *DB) SchemaVersion() int { return db.version }

// IntegrityCheck runs PRAGMA integrity_check and fails unless SQLite answers "ok".
func (db *DB) IntegrityCheck(ctx context.Context) error {
	rows, err := db.r.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("integrity check %s: %w", db.path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("integrity check %s: %w", db.path, err)
		}
		problems = append(problems, s)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("integrity check %s: %w", db.path, err)
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	if len(problems) > 5 {
		problems = append(problems[:5], fmt.Sprintf("(%d more)", len(problems)-5))
	}
	return fmt.Errorf("integrity check %s failed: %s: restore from backup or delete the file to resync from the cloud",
		db.path, strings.Join(problems, "; "))
}
