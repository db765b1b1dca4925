package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTest(t testing.TB, opts Options) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kedge.db")
	db, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func TestOpenFreshDBHasLatestSchemaVersion(t *testing.T) {
	db, _ := openTest(t, Options{})
	if got, want := db.SchemaVersion(), len(migrations); got != want || want == 0 {
		t.Fatalf("SchemaVersion = %d, want %d (>0)", got, want)
	}
	if err := db.IntegrityCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTwiceIsIdempotentAndKeepsData(t *testing.T) {
	ctx := context.Background()
	db, path := openTest(t, Options{})
	if _, err := db.Objects("meta").Put(ctx, Object{Key: Key{Type: "pod", Namespace: "ns", Name: "a"}, ResourceVersion: 3, Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Outbox().Enqueue(ctx, []byte("m")); err != nil {
		t.Fatal(err)
	}
	// A second handle on the same file while the first is open, then a reopen after close.
	db2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	db2.Close()
	db.Close()
	db3, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db3.Close()
	if db3.SchemaVersion() != len(migrations) {
		t.Fatalf("SchemaVersion after reopen = %d, want %d", db3.SchemaVersion(), len(migrations))
	}
	var rows int
	if err := db3.r.QueryRow(`SELECT count(*) FROM schema_version`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("schema_version rows = %d, %v; want exactly 1", rows, err)
	}
	if obj, err := db3.Objects("meta").Get(ctx, Key{Type: "pod", Namespace: "ns", Name: "a"}); err != nil || obj.ResourceVersion != 3 {
		t.Fatalf("object after reopen = %+v, %v", obj, err)
	}
	if n, err := db3.Outbox().Len(ctx); err != nil || n != 1 {
		t.Fatalf("outbox Len after reopen = %d, %v; want 1", n, err)
	}
}

func TestOpenRefusesFutureSchemaVersion(t *testing.T) {
	db, path := openTest(t, Options{})
	future := len(migrations) + 5
	if _, err := db.w.Exec(`UPDATE schema_version SET version = ?`, future); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, err := Open(path, Options{})
	want := fmt.Sprintf("database %s has schema version %d, this binary supports up to %d: upgrade", path, future, len(migrations))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open error = %v, want it to contain %q", err, want)
	}
}

func TestOpenRejectsBadArguments(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		opts       Options
		want       string
	}{
		{"empty path", "", Options{}, "empty path"},
		{"missing parent dir", filepath.Join(dir, "nope", "kedge.db"), Options{}, "create it first"},
		{"parent is a file", filepath.Join(file, "kedge.db"), Options{}, "is not a directory"},
		{"unknown synchronous", filepath.Join(dir, "a.db"), Options{Synchronous: "off"}, `Options.Synchronous "off"`},
		{"not a database", file + "x", Options{}, "open store"},
		{"negative cache size", filepath.Join(dir, "c.db"), Options{CacheKiB: -1}, "Options.CacheKiB -1"},
	}
	if err := os.WriteFile(file+"x", []byte(strings.Repeat("this is not sqlite ", 400)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := Open(tt.path, tt.opts)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%q) succeeded, want error containing %q", tt.path, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open(%q) error = %v, want it to contain %q", tt.path, err, tt.want)
			}
		})
	}
}

func TestOpenAppliesPragmas(t *testing.T) {
	tests := []struct {
		sync string
		want int
	}{{"", 2}, {"full", 2}, {"FULL", 2}, {"normal", 1}}
	for _, tt := range tests {
		t.Run("sync="+tt.sync, func(t *testing.T) {
			db, _ := openTest(t, Options{Synchronous: tt.sync, BusyTimeout: 1234 * time.Millisecond})
			var mode string
			var syncLevel, fk, busy int
			if err := db.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("journal_mode = %q, %v; want wal", mode, err)
			}
			if err := db.w.QueryRow(`PRAGMA synchronous`).Scan(&syncLevel); err != nil || syncLevel != tt.want {
				t.Errorf("synchronous = %d, %v; want %d", syncLevel, err, tt.want)
			}
			if err := db.w.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
				t.Errorf("foreign_keys = %d, %v; want 1", fk, err)
			}
			if err := db.w.QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != 1234 {
				t.Errorf("busy_timeout = %d, %v; want 1234", busy, err)
			}
		})
	}
}

// The page cache bound reaches the writer and every reader (each connection has its own cache).
func TestOpenSetsThePageCacheSizeOnEveryConnection(t *testing.T) {
	for _, tt := range []struct {
		kib  int
		want int // PRAGMA cache_size: negative = KiB
	}{{0, -2000}, {256, -256}} {
		t.Run(fmt.Sprintf("kib=%d", tt.kib), func(t *testing.T) {
			db, _ := openTest(t, Options{CacheKiB: tt.kib})
			var got int
			if err := db.w.QueryRow(`PRAGMA cache_size`).Scan(&got); err != nil || got != tt.want {
				t.Errorf("writer cache_size = %d, %v; want %d", got, err, tt.want)
			}
			// Hold readConns reader connections at once so each one is asked, not one reused.
			ctx := context.Background()
			for i := range readConns {
				c, err := db.r.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := c.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&got); err != nil || got != tt.want {
					t.Errorf("reader %d cache_size = %d, %v; want %d", i, got, err, tt.want)
				}
			}
		})
	}
}

func TestReadPoolCannotWrite(t *testing.T) {
	db, _ := openTest(t, Options{})
	if _, err := db.r.Exec(`DELETE FROM objects`); err == nil {
		t.Fatal("write through the read pool succeeded; want a query_only error")
	}
}

func TestOpenPathWithURICharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we?ird#dir%20x")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kedge.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not created at the exact path: %v", err)
	}
}

func TestMigrateStepsRunInOrderOnce(t *testing.T) {
	ctx := context.Background()
	w, err := sql.Open("sqlite3", dsn(filepath.Join(t.TempDir(), "m.db"), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	steps := []string{`CREATE TABLE t (x INTEGER)`, `INSERT INTO t VALUES (1)`}
	for range 2 { // the second run must be a no-op
		if v, err := migrateSteps(ctx, w, "m.db", steps); err != nil || v != 2 {
			t.Fatalf("migrate = %d, %v; want 2", v, err)
		}
	}
	steps = append(steps, `INSERT INTO t VALUES (2)`)
	if v, err := migrateSteps(ctx, w, "m.db", steps); err != nil || v != 3 {
		t.Fatalf("migrate to 3 = %d, %v", v, err)
	}
	var sum, n int
	if err := w.QueryRow(`SELECT sum(x), count(*) FROM t`).Scan(&sum, &n); err != nil || sum != 3 || n != 2 {
		t.Fatalf("rows: sum=%d n=%d err=%v; want each step applied exactly once", sum, n, err)
	}
}

func TestMigrateFailedStepRollsBack(t *testing.T) {
	ctx := context.Background()
	w, err := sql.Open("sqlite3", dsn(filepath.Join(t.TempDir(), "m.db"), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	steps := []string{`CREATE TABLE a (x)`, `CREATE TABLE b (x); INSERT INTO nosuch VALUES (1)`}
	v, err := migrateSteps(ctx, w, "m.db", steps)
	if err == nil || !strings.Contains(err.Error(), "migrate schema 1 -> 2") {
		t.Fatalf("migrate = %d, %v; want failure of step 1 -> 2", v, err)
	}
	var version, tables int
	w.QueryRow(`SELECT version FROM schema_version`).Scan(&version)
	w.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'b'`).Scan(&tables)
	if version != 1 || tables != 0 {
		t.Fatalf("after failed step: version=%d, table b present=%d; want 1 and 0", version, tables)
	}
}

func TestIntegrityCheckReportsCorruption(t *testing.T) {
	ctx := context.Background()
	db, path := openTest(t, Options{})
	objs := db.Objects("meta")
	for i := range 200 {
		if _, err := objs.Put(ctx, Object{Key: Key{Type: "pod", Namespace: "ns", Name: fmt.Sprint("p", i)}, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatalf("healthy DB: %v", err)
	}
	// Break the primary-key index behind SQLite's back: the table and its index now disagree.
	if _, err := db.w.Exec(`PRAGMA writable_schema = ON`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.w.Exec(`UPDATE sqlite_master SET sql = 'CREATE TABLE objects (scope, type, namespace, name, rv, value, updated_at, PRIMARY KEY (scope, name, type, namespace))' WHERE name = 'objects'`); err != nil {
		t.Fatal(err)
	}
	db.w.Exec(`PRAGMA writable_schema = OFF`)
	db.Close()
	db2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	err = db2.IntegrityCheck(ctx)
	if err == nil || !strings.Contains(err.Error(), "missing from index") || !strings.Contains(err.Error(), "more") {
		t.Fatalf("IntegrityCheck on corrupted DB = %v, want failure", err)
	}
}
