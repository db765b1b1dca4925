package store

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// modes returns the permission bits of the database file and its WAL companions that exist.
func modes(t *testing.T, path string) map[string]os.FileMode {
	t.Helper()
	out := map[string]os.FileMode{}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v (a WAL database with a write should have it)", p, err)
		}
		out[filepath.Base(p)] = fi.Mode().Perm()
	}
	return out
}

func TestStoreFilesAreCreatedOwnerOnlyWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0o022) // the usual umask, which would leave 0644
	defer syscall.Umask(old)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "edgecore.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Objects("meta").Put(ctx, Object{Key: Key{Type: "secret", Namespace: "default", Name: "s"}, Value: []byte(`{"data":{}}`)}); err != nil {
		t.Fatal(err)
	}
	for f, m := range modes(t, path) {
		if m != FileMode {
			t.Errorf("%s has mode %#o, want %#o", f, m, FileMode)
		}
	}
}

func TestStoreTightensAnExistingWorldReadableFileAndLogsIt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cloudcore.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Objects("meta").Put(ctx, Object{Key: Key{Type: "secret", Namespace: "default", Name: "s"}, Value: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// As an older binary left them: the main file, and a WAL left behind, readable by everyone.
	if err := os.WriteFile(path+"-wal", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	db, err = Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Objects("meta").Get(ctx, Key{Type: "secret", Namespace: "default", Name: "s"}); err != nil {
		t.Fatalf("the data survived the re-open: %v", err)
	}
	for f, m := range modes(t, path) {
		if m != FileMode {
			t.Errorf("%s has mode %#o after open, want %#o", f, m, FileMode)
		}
	}
	for _, f := range []string{"cloudcore.db ", "cloudcore.db-wal "} {
		if !strings.Contains(logs.String(), "tightened") || !strings.Contains(logs.String(), "file="+filepath.Join(filepath.Dir(path), strings.TrimSpace(f))) {
			t.Errorf("no log line about tightening %s:\n%s", f, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "was=0644") {
		t.Errorf("the log does not say the old mode:\n%s", logs.String())
	}
}

func TestStoreRefusesADatabasePathThatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kedge.db")
	if err := os.Mkdir(path+"-wal", 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), path+"-wal") {
		t.Fatalf("Open with a directory as the WAL: %v, want an error naming it", err)
	}
}
