package edged

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// What edged keeps on disk per pod: rootDir/pods/<uid>/ (volumes, removed by volume.Cleanup) and
// rootDir/logs/<ns>_<name>_<uid>/ (the containers' CRI log files). Both go when the pod is removed
// from the store; what an earlier edged left behind (a pod removed while edgecore was down, a failed
// cleanup) is swept at start.

// logsDir is rootDir/logs.
func (m *Module) logsDir() string { return filepath.Join(m.RootDir, "logs") }

// uidOfLogDir is the pod uid at the end of a log folder's name (<ns>_<name>_<uid>; namespaces and
// names cannot hold "_").
func uidOfLogDir(name string) (types.UID, bool) {
	i := strings.LastIndexByte(name, '_')
	if i < 0 || i == len(name)-1 || strings.Count(name, "_") != 2 {
		return "", false
	}
	return types.UID(name[i+1:]), true
}

// removePodLogs removes every log folder of the pod uid (its name may have changed the folder's
// name only with another uid, so the uid alone finds them).
func (m *Module) removePodLogs(uid types.UID) error {
	entries, err := os.ReadDir(m.logsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("log folders of pod %s: %w", uid, err)
	}
	var errs []error
	for _, e := range entries {
		if u, ok := uidOfLogDir(e.Name()); ok && u == uid && e.IsDir() {
			if err := os.RemoveAll(filepath.Join(m.logsDir(), e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("log folder %s: %w", e.Name(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// sweepPodDirs removes the volume and log folders of pods that are neither wanted (stored) nor have
// a worker; it returns how many folders it removed.
func (m *Module) sweepPodDirs(wanted map[string]bool) (int, error) {
	keep := func(uid types.UID) bool {
		m.mu.Lock()
		_, has := m.workers[uid]
		m.mu.Unlock()
		return wanted[string(uid)] || has
	}
	removed := 0
	var errs []error
	if entries, err := os.ReadDir(m.logsDir()); err == nil {
		for _, e := range entries {
			uid, ok := uidOfLogDir(e.Name())
			if !ok || !e.IsDir() || keep(uid) {
				continue
			}
			if err := os.RemoveAll(filepath.Join(m.logsDir(), e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("log folder %s: %w", e.Name(), err))
				continue
			}
			removed++
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("log folders: %w", err))
	}
	podsDir := filepath.Join(m.RootDir, "pods")
	if entries, err := os.ReadDir(podsDir); err == nil {
		for _, e := range entries {
			uid := types.UID(e.Name())
			if !e.IsDir() || keep(uid) {
				continue
			}
			if err := m.volumes.Cleanup(uid); err != nil { // unmounts what is mounted first
				errs = append(errs, err)
				continue
			}
			removed++
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("pod folders: %w", err))
	}
	return removed, errors.Join(errs...)
}
