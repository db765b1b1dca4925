package volume

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// file is one file of a content volume's payload.
type file struct {
	data []byte
	mode os.FileMode
}

const (
	dataLink    = "..data"
	dataLinkTmp = "..data_tmp"
)

func payloadHash(files map[string]file) string {
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		f := files[k]
		fmt.Fprintf(h, "%d:%s:%o:%d:", len(k), k, f.mode, len(f.data))
		h.Write(f.data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// topLevel returns the first path element of every payload path.
func topLevel(files map[string]file) map[string]bool {
	out := map[string]bool{}
	for p := range files {
		out[strings.SplitN(p, "/", 2)[0]] = true
	}
	return out
}

// writeAtomic makes dir hold exactly files, switching from the old content to the new one with one
// rename of the "..data" symlink. Unchanged content (same hash) is not rewritten.
func (m *Manager) writeAtomic(dir string, files map[string]file) error {
	hash := payloadHash(files)
	m.mu.Lock()
	known := m.hashes[dir]
	m.mu.Unlock()
	cur, _ := os.Readlink(filepath.Join(dir, dataLink))
	if cur != "" && known == hash {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if cur != "" && known == "" && sameOnDisk(filepath.Join(dir, cur), files) {
		// After a restart: what is there is already right.
		if err := m.linkTopLevel(dir, files); err != nil {
			return err
		}
		m.setHash(dir, hash)
		return nil
	}
	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return err
	}
	for p, f := range files {
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			os.RemoveAll(tsDir)
			return err
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			os.RemoveAll(tsDir)
			return err
		}
		if err := os.Chmod(full, f.mode); err != nil { // WriteFile's mode is subject to umask
			os.RemoveAll(tsDir)
			return err
		}
	}
	tmp := filepath.Join(dir, dataLinkTmp)
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(tsDir), tmp); err != nil {
		os.RemoveAll(tsDir)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		os.Remove(tmp)
		os.RemoveAll(tsDir)
		return err
	}
	if err := m.linkTopLevel(dir, files); err != nil {
		return err
	}
	// Old timestamped directories (the previous one, and any left by a crash) go last.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() && strings.HasPrefix(n, "..") && n != filepath.Base(tsDir) {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	m.setHash(dir, hash)
	return nil
}

func (m *Manager) setHash(dir, hash string) {
	m.mu.Lock()
	m.hashes[dir] = hash
	m.mu.Unlock()
}

// linkTopLevel makes every top-level payload name a symlink into ..data and removes visible entries
// that are no longer in the payload.
func (m *Manager) linkTopLevel(dir string, files map[string]file) error {
	want := topLevel(files)
	for name := range want {
		p := filepath.Join(dir, name)
		target := filepath.Join(dataLink, name)
		if t, err := os.Readlink(p); err == nil && t == target {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "..") || want[n] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// sameOnDisk reports whether dir holds exactly files (data and mode).
func sameOnDisk(dir string, files map[string]file) bool {
	seen := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		f, ok := files[filepath.ToSlash(rel)]
		if !ok || !d.Type().IsRegular() {
			return errors.New("differs")
		}
		fi, err := d.Info()
		if err != nil || fi.Mode().Perm() != f.mode.Perm() {
			return errors.New("differs")
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.data) {
			return errors.New("differs")
		}
		seen++
		return nil
	})
	return err == nil && seen == len(files)
}
