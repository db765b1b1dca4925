package index

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// State is what a client remembers of the last index it accepted, to refuse a rollback.
type State struct {
	Version       uint64 `json:"version"`
	PayloadSHA256 string `json:"payloadSHA256,omitempty"`
}

// StateFile persists State as a small JSON file, written atomically (temporary file, fsync,
// rename), so a crash leaves either the old or the new state.
type StateFile struct {
	Path string
	mu   sync.Mutex
}

// Load returns the recorded state; a missing file is the zero State (nothing seen yet).
func (f *StateFile) Load() (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("index state: %w", err)
	}
	var st State
	if err := decodeStrict(data, &st); err != nil {
		return State{}, fmt.Errorf("index state %s: %v (delete it only if you trust the registry's current index)", f.Path, err)
	}
	return st, nil
}

// Save records st; it never lowers the recorded version.
func (f *StateFile) Save(st State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if data, err := os.ReadFile(f.Path); err == nil {
		var old State
		if json.Unmarshal(data, &old) == nil && old.Version > st.Version {
			return fmt.Errorf("%w: index state %s already records version %d, not lowering it to %d", ErrRollback, f.Path, old.Version, st.Version)
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return WriteFileAtomic(f.Path, append(data, '\n'), 0o644)
}

// WriteFileAtomic writes data to path through a temporary file in the same folder, synced and
// renamed into place.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
