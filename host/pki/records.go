package pki

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Kind is a kind of record a Records holds.
type Kind string

// The kinds of records: join tokens by ID, and the certificates issued to each node by node name.
const (
	KindToken Kind = "token"
	KindNode  Kind = "node"
)

// Records keeps small JSON records by kind and name — the join tokens handed out and the
// certificates issued per node — where every cloudcore process using the same CA sees them: the
// certificate server that checks and consumes tokens, and 'cloudcore token create/ls/revoke' run
// beside it. FileRecords keeps them in the CA's folder, kubestore.SecretRecords (cloud only) in Kubernetes Secrets.
type Records interface {
	// Get returns the record, or an error matching fs.ErrNotExist.
	Get(ctx context.Context, kind Kind, name string) ([]byte, error)
	// List returns every record of kind by name.
	List(ctx context.Context, kind Kind) (map[string][]byte, error)
	// Update reads the record (nil when absent), calls fn with it and stores what fn returns
	// (nil: delete), atomically with respect to every other Update of the same record from this
	// process or another. fn may be called more than once (after a lost race) and must depend on
	// its argument only; an error from fn is returned as is and nothing is stored.
	Update(ctx context.Context, kind Kind, name string, fn func(old []byte) ([]byte, error)) error
	// String says where the records live, for messages.
	String() string
}

// FileRecords keeps each record in a file, Dir/tokens/<id>.json and Dir/nodes/<name>.json
// (folders 0700, files 0600, written through a temporary file and a rename; a name longer than 200
// bytes is stored as sha256-<hex of its SHA-256>.json). Updates hold an
// exclusive flock(2) on Dir/records.lock, so a running cloudcore and the 'cloudcore token' command
// on the same host never lose each other's changes. Dir is cloudhub's pkiDir.
type FileRecords struct {
	Dir string
}

var _ Records = FileRecords{}

// fileRecordsMu serializes Updates within this process; the flock serializes processes.
var fileRecordsMu sync.Mutex

func (r FileRecords) String() string { return r.Dir }

func (r FileRecords) folder(kind Kind) string {
	if kind == KindNode {
		return filepath.Join(r.Dir, "nodes")
	}
	return filepath.Join(r.Dir, "tokens")
}

func (r FileRecords) path(kind Kind, name string) (string, error) {
	if err := CheckRecordName(name); err != nil {
		return "", err
	}
	if len(name) > maxFileRecordName {
		// A long node name: file names have at most 255 bytes.
		sum := sha256.Sum256([]byte(name))
		name = "sha256-" + hex.EncodeToString(sum[:])
	}
	return filepath.Join(r.folder(kind), name+".json"), nil
}

// maxFileRecordName is the longest record name FileRecords uses as a file name as is.
const maxFileRecordName = 200

// CheckRecordName keeps names usable as file and Secret names: what CheckNodeName allows, which covers
// token IDs. Every Records implementation checks names with it.
func CheckRecordName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." || !dns1123Subdomain.MatchString(name) {
		return fmt.Errorf("record name %q is not a DNS-1123 subdomain", name)
	}
	return nil
}

func (r FileRecords) Get(_ context.Context, kind Kind, name string) ([]byte, error) {
	p, err := r.path(kind, name)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

func (r FileRecords) List(_ context.Context, kind Kind) (map[string][]byte, error) {
	dir := r.folder(kind)
	entries, err := os.ReadDir(dir)
	if isNotExist(err) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if isNotExist(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, e.Name()), err)
		}
		out[name] = data
	}
	return out, nil
}

func (r FileRecords) Update(_ context.Context, kind Kind, name string, fn func([]byte) ([]byte, error)) error {
	p, err := r.path(kind, name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
	}
	fileRecordsMu.Lock()
	defer fileRecordsMu.Unlock()
	unlock, err := lockFile(filepath.Join(r.Dir, "records.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	old, err := os.ReadFile(p)
	if err != nil && !isNotExist(err) {
		return fmt.Errorf("read %s: %w", p, err)
	}
	data, err := fn(old)
	if err != nil {
		return err
	}
	if data == nil {
		if err := os.Remove(p); err != nil && !isNotExist(err) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		return nil
	}
	return writeFileAtomic(p, data, 0o600)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var errRecordDamaged = errors.New("record is damaged")
