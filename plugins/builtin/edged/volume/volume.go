package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// Object types a Source is asked for.
const (
	TypeConfigMap           = "configmap"
	TypeSecret              = "secret"
	TypeServiceAccountToken = "serviceaccounttoken"
)

// Source gives the JSON of an object the node holds (Edged: a metamanager query of
// <namespace>/<typ>/<name>). A missing object must be reported with an error for which IsNotFound
// is true.
type Source interface {
	Get(ctx context.Context, typ, namespace, name string) ([]byte, error)
}

// ErrNotFound is what a Source wraps when the object does not exist.
var ErrNotFound = errors.New("not found")

// IsNotFound reports whether a Source error means the object does not exist: it wraps ErrNotFound
// or is a Kubernetes NotFound status error.
func IsNotFound(err error) bool {
	return errors.Is(err, ErrNotFound) || apierrors.IsNotFound(err)
}

// Error is a problem with one volume (or mount) of a pod. Pod is "<namespace>/<name>".
type Error struct {
	Pod    string
	Volume string
	Err    error
}

func (e *Error) Error() string {
	if e.Volume == "" {
		return fmt.Sprintf("pod %s: %v", e.Pod, e.Err)
	}
	return fmt.Sprintf("pod %s volume %q: %v", e.Pod, e.Volume, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func podErr(pod *corev1.Pod, vol string, format string, args ...any) *Error {
	return &Error{Pod: pod.Namespace + "/" + pod.Name, Volume: vol, Err: fmt.Errorf(format, args...)}
}

// Option configures a Manager.
type Option func(*Manager)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(m *Manager) { m.log = l } }

// Manager prepares, refreshes, mounts and removes pod volumes. It is safe for concurrent use; calls
// for the same pod are serialised.
type Manager struct {
	root string
	src  Source
	log  *slog.Logger

	mu     sync.Mutex
	locks  map[types.UID]*sync.Mutex
	hashes map[string]string // content volume dir -> hash of its current payload
	limits map[types.UID]map[string]*resource.Quantity
}

// NewManager returns a Manager keeping pod volumes under rootDir/pods.
func NewManager(rootDir string, src Source, opts ...Option) *Manager {
	m := &Manager{
		root:   rootDir,
		src:    src,
		log:    slog.Default(),
		locks:  map[types.UID]*sync.Mutex{},
		hashes: map[string]string{},
		limits: map[types.UID]map[string]*resource.Quantity{},
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// PodDir is <rootDir>/pods/<uid>.
func (m *Manager) PodDir(uid types.UID) string {
	return filepath.Join(m.root, "pods", string(uid))
}

// VolumeDir is <rootDir>/pods/<uid>/volumes/<name> (where every non-hostPath volume lives).
func (m *Manager) VolumeDir(uid types.UID, name string) string {
	return filepath.Join(m.PodDir(uid), "volumes", name)
}

func (m *Manager) lockPod(uid types.UID) func() {
	m.mu.Lock()
	l, ok := m.locks[uid]
	if !ok {
		l = &sync.Mutex{}
		m.locks[uid] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func checkPod(pod *corev1.Pod) error {
	if pod == nil {
		return errors.New("volume: nil pod")
	}
	if err := checkName(string(pod.UID)); err != nil {
		return podErr(pod, "", "bad uid: %v", err)
	}
	seen := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if err := checkName(v.Name); err != nil {
			return podErr(pod, v.Name, "bad volume name: %v", err)
		}
		if seen[v.Name] {
			return podErr(pod, v.Name, "volume name used twice")
		}
		seen[v.Name] = true
	}
	return nil
}

// checkName accepts a single path element that is not hidden-special.
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case s == "." || s == ".." || strings.HasPrefix(s, ".."):
		return fmt.Errorf("%q is not allowed", s)
	case strings.ContainsAny(s, "/\\\x00"):
		return fmt.Errorf("%q contains a path separator", s)
	}
	return nil
}

// Setup creates or updates every volume of pod and returns volume name -> host path. It is
// idempotent: calling it again for a set-up pod changes only content whose objects changed.
func (m *Manager) Setup(ctx context.Context, pod *corev1.Pod) (map[string]string, error) {
	if err := checkPod(pod); err != nil {
		return nil, err
	}
	defer m.lockPod(pod.UID)()
	paths := make(map[string]string, len(pod.Spec.Volumes))
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		p, err := m.setupOne(ctx, pod, v)
		if err != nil {
			return nil, err
		}
		paths[v.Name] = p
	}
	return paths, nil
}

// Refresh rewrites the contents of the pod's configMap, secret, downwardAPI and projected volumes
// whose sources changed. Volumes whose payload is unchanged are not touched.
func (m *Manager) Refresh(ctx context.Context, pod *corev1.Pod) error {
	if err := checkPod(pod); err != nil {
		return err
	}
	defer m.lockPod(pod.UID)()
	var errs []error
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if !isContentVolume(v) {
			continue
		}
		if _, err := m.setupOne(ctx, pod, v); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func isContentVolume(v *corev1.Volume) bool {
	return v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.Projected != nil
}

func (m *Manager) setupOne(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) (string, error) {
	dir := m.VolumeDir(pod.UID, v.Name)
	switch {
	case v.HostPath != nil:
		return setupHostPath(pod, v)
	case v.EmptyDir != nil:
		if err := m.setupEmptyDir(pod, v, dir); err != nil {
			return "", err
		}
		return dir, nil
	case isContentVolume(v):
		files, err := m.payload(ctx, pod, v)
		if err != nil {
			return "", err
		}
		if err := m.writeAtomic(dir, files); err != nil {
			return "", podErr(pod, v.Name, "write files: %v", err)
		}
		return dir, nil
	default:
		return "", podErr(pod, v.Name, "unsupported volume source (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected)")
	}
}

func (m *Manager) setupEmptyDir(pod *corev1.Pod, v *corev1.Volume, dir string) error {
	ed := v.EmptyDir
	if ed.SizeLimit != nil && ed.SizeLimit.Sign() < 0 {
		return podErr(pod, v.Name, "emptyDir sizeLimit %s is negative", ed.SizeLimit.String())
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return podErr(pod, v.Name, "create emptyDir: %v", err)
	}
	// 0777 like the kubelet: any container user may write there.
	if err := os.Chmod(dir, 0o777); err != nil {
		return podErr(pod, v.Name, "chmod emptyDir: %v", err)
	}
	m.mu.Lock()
	if m.limits[pod.UID] == nil {
		m.limits[pod.UID] = map[string]*resource.Quantity{}
	}
	m.limits[pod.UID][v.Name] = ed.SizeLimit
	m.mu.Unlock()
	switch ed.Medium {
	case corev1.StorageMediumDefault:
		return nil
	case corev1.StorageMediumMemory:
		mounted, err := isMountPoint(dir)
		if err != nil {
			return podErr(pod, v.Name, "emptyDir medium Memory: %v", err)
		}
		if mounted {
			return nil
		}
		var size int64
		if ed.SizeLimit != nil {
			size = ed.SizeLimit.Value()
		}
		if err := mountTmpfs(dir, size); err != nil {
			return podErr(pod, v.Name, "emptyDir medium Memory needs a tmpfs mount at %s, which failed: %v (Edged needs CAP_SYS_ADMIN for memory-backed emptyDir)", dir, err)
		}
		return nil
	default:
		return podErr(pod, v.Name, "emptyDir medium %q is not supported (use \"\" or Memory)", ed.Medium)
	}
}

// EmptyDirUsage is the disk (or memory) used by one emptyDir volume, and its sizeLimit if any.
type EmptyDirUsage struct {
	Volume string
	Path   string
	Bytes  int64
	Limit  *resource.Quantity // nil: no limit
}

// Exceeded reports whether the volume uses more than its sizeLimit.
func (u EmptyDirUsage) Exceeded() bool { return u.Limit != nil && u.Bytes > u.Limit.Value() }

// Usage measures the pod's emptyDir volumes (sizes of regular files) with their recorded sizeLimit.
func (m *Manager) Usage(pod *corev1.Pod) ([]EmptyDirUsage, error) {
	if err := checkPod(pod); err != nil {
		return nil, err
	}
	var out []EmptyDirUsage
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil {
			continue
		}
		dir := m.VolumeDir(pod.UID, v.Name)
		var n int64
		err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
		if err != nil {
			return nil, podErr(pod, v.Name, "measure emptyDir: %v", err)
		}
		m.mu.Lock()
		lim := m.limits[pod.UID][v.Name]
		m.mu.Unlock()
		if lim == nil {
			lim = v.EmptyDir.SizeLimit
		}
		out = append(out, EmptyDirUsage{Volume: v.Name, Path: dir, Bytes: n, Limit: lim})
	}
	return out, nil
}

// Cleanup removes the pod's directory: every mount under it (tmpfs emptyDirs) is unmounted first,
// deepest first; if one cannot be unmounted nothing is removed and the error says which.
func (m *Manager) Cleanup(podUID types.UID) error {
	if err := checkName(string(podUID)); err != nil {
		return fmt.Errorf("volume cleanup: bad pod uid: %w", err)
	}
	defer m.lockPod(podUID)()
	dir := m.PodDir(podUID)
	mounts, err := mountsUnder(dir)
	if err != nil {
		return fmt.Errorf("volume cleanup of pod %s: %w", podUID, err)
	}
	for _, mp := range mounts {
		if err := unmount(mp); err != nil {
			return fmt.Errorf("volume cleanup of pod %s: unmount %s: %w", podUID, mp, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("volume cleanup of pod %s: %w", podUID, err)
	}
	m.mu.Lock()
	delete(m.limits, podUID)
	prefix := dir + string(filepath.Separator)
	for k := range m.hashes {
		if strings.HasPrefix(k, prefix) {
			delete(m.hashes, k)
		}
	}
	m.mu.Unlock()
	return nil
}
