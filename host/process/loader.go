// Package process runs Kedge modules as plugin executables (modules.<name>.runtime: process) with
// hashicorp/go-plugin over gRPC. A plugin module is an sdk.Module like any other to the module manager:
// Start launches the plugin, Handle forwards one message and routes what the module sent while
// handling it, Stop stops the plugin. Everything else a module can reach (send, sync requests, its
// store namespace, logging, metrics) the host serves back to the plugin over go-plugin's broker.
//
// Plugins are checksum-pinned (the file's SHA-256 is checked when the config is loaded and again
// before every launch), talk over AutoMTLS, are health-pinged, restarted with jittered exponential
// backoff when they crash (the message in hand is retried, later ones wait in the mailbox), and die
// with the host (Linux parent-death signal).
package process

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
)

// Options tune the process runtime; the zero value is fine.
type Options struct {
	// Dir, if set, is the only directory plugin files may be in (checked after resolving symlinks).
	Dir string
	// StartTimeout bounds one launch: exec, the go-plugin handshake and the module's Start.
	StartTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait before restarting a crashed plugin: it doubles with
	// each crash in a row, with ±20% jitter, and starts again from BackoffMin once a plugin ran a minute.
	BackoffMin, BackoffMax time.Duration
	// HealthInterval is how often a running plugin is pinged; HealthTimeout bounds one ping. Three
	// failed pings in a row (no answer, not an unhealthy answer) count as a crash.
	HealthInterval, HealthTimeout time.Duration
	// MaxAttempts is how many times one message is tried when the plugin crashes handling it; then
	// Handle gives up on that message with an error, and the next message goes to the restarted plugin.
	MaxAttempts int
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.StartTimeout, 20*time.Second)
	def(&o.BackoffMin, 100*time.Millisecond)
	def(&o.BackoffMax, 30*time.Second)
	def(&o.HealthInterval, 10*time.Second)
	def(&o.HealthTimeout, 5*time.Second)
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	return o
}

// Loader is the modules.Loader of runtime process. It remembers every plugin it launched so Close
// can kill what is left when the host exits.
type Loader struct {
	opts   Options
	mu     sync.Mutex
	live   map[*instance]struct{}
	closed bool
}

var _ modules.Loader = (*Loader)(nil)

// NewLoader returns a loader with opts (zero fields take their defaults).
func NewLoader(opts Options) *Loader {
	return &Loader{opts: opts.withDefaults(), live: map[*instance]struct{}{}}
}

// New checks the plugin file without running it — it exists, is an executable regular file, sits in
// Options.Dir if set, and its SHA-256 is the configured one — and returns the module that launches
// it in Start.
func (l *Loader) New(spec modules.Spec) (sdk.Module, error) {
	if spec.Settings.SHA256 == "" {
		return nil, fmt.Errorf("sha256 is not set: plugins are checksum-pinned; run `sha256sum %s` and put the hash in sha256", spec.Settings.Path)
	}
	sum, err := hex.DecodeString(strings.ToLower(spec.Settings.SHA256))
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("sha256 %q is not a SHA-256 in hex (64 characters, as `sha256sum` prints)", spec.Settings.SHA256)
	}
	path, err := filepath.Abs(spec.Settings.Path)
	if err != nil {
		return nil, fmt.Errorf("plugin path %q: %w", spec.Settings.Path, err)
	}
	if err := l.checkFile(path); err != nil {
		return nil, err
	}
	if err := verify(path, sum); err != nil {
		return nil, err
	}
	conf, err := json.Marshal(spec.Config)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: encode its settings for the plugin: %w", path, err)
	}
	return &module{name: spec.Name, group: spec.Group, path: path, sum: sum, config: conf, loader: l, opts: l.opts}, nil
}

func (l *Loader) checkFile(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("plugin file %s does not exist", path)
	case err != nil:
		return fmt.Errorf("plugin file %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("plugin %s is not a regular file (%s)", path, fi.Mode().Type())
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("plugin %s is not executable (mode %s): chmod +x it", path, fi.Mode().Perm())
	}
	if l.opts.Dir == "" {
		return nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", path, err)
	}
	dir, err := filepath.EvalSymlinks(l.opts.Dir)
	if err != nil {
		return fmt.Errorf("plugin directory %s: %w", l.opts.Dir, err)
	}
	if rel, err := filepath.Rel(dir, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("plugin %s (%s) is outside the plugin directory %s: move it there", path, real, l.opts.Dir)
	}
	return nil
}

// verify compares the file's SHA-256 with the pinned one.
func verify(path string, want []byte) error {
	got, err := fileSHA256(path)
	if err != nil {
		return err
	}
	if hex.EncodeToString(want) != got {
		return fmt.Errorf("plugin %s has sha256 %s, but the config pins %s: if the file was replaced on purpose, set sha256 to the new value",
			path, got, hex.EncodeToString(want))
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("plugin %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("plugin %s: read for its checksum: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Close kills every plugin process this loader started that still runs. The module manager stops
// plugins one by one on shutdown; Close is the backstop for a host that exits without that.
func (l *Loader) Close() error {
	l.mu.Lock()
	l.closed = true
	ins := make([]*instance, 0, len(l.live))
	for in := range l.live {
		ins = append(ins, in)
	}
	l.mu.Unlock()
	for _, in := range ins {
		in.kill(errors.New("the host is shutting down"))
	}
	return nil
}

func (l *Loader) track(in *instance) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.live[in] = struct{}{}
	return true
}

func (l *Loader) forget(in *instance) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.live, in)
}
