// Package sdktest runs a module in a test the way edgecore runs it: through the real module manager,
// with a real router and a real SQLite store in t.TempDir(). Send messages into the module, make
// sync requests, and read what it sent to other modules from capture mailboxes:
//
//	h := sdktest.Run(t, hello.Info, map[string]any{"greeting": "hi"}, sdktest.Capture("metamanager"))
//	reply, err := h.SendSync(message.New(sdktest.Source, "test", "query", "x"), time.Second)
//	sent := h.Captured("metamanager").Next(t, 5*time.Second)
//
// RunProcess does the same for a plugin executable (runtime: process). The module is stopped when the
// test ends.
package sdktest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/process"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
)

// Source is the module name the harness sends as; replies to its messages that are not sync land in
// Captured(Source).
const Source = "sdktest"

// NodeName is the node name modules see: unique per test process, so tests of several packages that
// share a real resource (one containerd) never take each other's objects for their own.
var NodeName = "sdktest-node-" + strconv.Itoa(os.Getpid())

// Option changes how a harness runs.
type Option func(*settings)

type settings struct {
	captures []string
	beside   []besideModule
	name     string
	logger   *slog.Logger
	process  process.Options
	dbPath   string
	dbSync   string
}

type besideModule struct {
	info   sdk.Info
	config map[string]any
}

// Capture registers a mailbox for each name, as if a module of that name ran; what the module sends
// there is read with Captured(name).Next.
func Capture(names ...string) Option {
	return func(s *settings) { s.captures = append(s.captures, names...) }
}

// Beside runs another real module next to the one under test, started before it (for instance one
// it requires).
func Beside(info sdk.Info, config map[string]any) Option {
	return func(s *settings) { s.beside = append(s.beside, besideModule{info, config}) }
}

// Named sets the module's name for RunProcess (default: the plugin file's base name).
func Named(name string) Option { return func(s *settings) { s.name = name } }

// Logger sends the host's log (the modules' logs included) to l instead of t.Log.
func Logger(l *slog.Logger) Option { return func(s *settings) { s.logger = l } }

// StoreAt opens the store at path (kept after the test, so a second harness can start on what a first
// one left) with synchronous "full" or "normal" (the default, "": normal).
func StoreAt(path, synchronous string) Option {
	return func(s *settings) { s.dbPath, s.dbSync = path, synchronous }
}

// StorePath keeps the store in the SQLite file at path (StoreAt with the default synchronous), so a
// test can stop the modules and start them again on what they stored, as after a restart.
func StorePath(path string) Option { return StoreAt(path, "") }

// ProcessOptions sets the process runtime's options for RunProcess.
func ProcessOptions(o process.Options) Option { return func(s *settings) { s.process = o } }

// Harness is one running module with its host.
type Harness struct {
	// Name is the module's name (its routing address and store namespace).
	Name string
	// Router and DB are the host's own, for checks the methods do not cover.
	Router *router.Router
	DB     *store.DB
	// Metrics gathers what /metrics would show: the host's metrics and every module's, which carry
	// the label module=<name>.
	Metrics prometheus.Gatherer

	t        testing.TB
	mgr      *modules.Manager
	captures map[string]*Captured
	stopOnce sync.Once
	stopErr  error
}

// Run runs info's module compiled in (runtime builtin) with config as its settings block.
// Requirements the harness does not run (neither Beside nor captured) are dropped, so a module can be
// tested alone.
func Run(t testing.TB, info sdk.Info, config map[string]any, opts ...Option) *Harness {
	t.Helper()
	s := apply(opts)
	return start(t, s, info.Name, []sdk.Info{info}, map[string]any{info.Name: withEnable(config, nil)}, nil)
}

// RunProcess runs the plugin executable at path (runtime process; its sha256 is computed here) with
// config as its settings block.
func RunProcess(t testing.TB, path string, config map[string]any, opts ...Option) *Harness {
	t.Helper()
	s := apply(opts)
	name := s.name
	if name == "" {
		name = pluginName(path)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	block := withEnable(config, map[string]any{"runtime": string(modules.Process), "path": path, "sha256": sum})
	loader := process.NewLoader(s.process)
	t.Cleanup(func() { _ = loader.Close() })
	return start(t, s, name, nil, map[string]any{name: block}, modules.Loaders{modules.Process: loader})
}

func apply(opts []Option) *settings {
	s := &settings{}
	for _, o := range opts {
		o(s)
	}
	return s
}

func withEnable(config, host map[string]any) map[string]any {
	block := map[string]any{"enable": true}
	for k, v := range config {
		block[k] = v
	}
	for k, v := range host {
		block[k] = v
	}
	return block
}

var validName = regexp.MustCompile(`[^a-z0-9-]+`)

func pluginName(path string) string {
	n := validName.ReplaceAllString(strings.ToLower(filepath.Base(path)), "-")
	n = strings.Trim(n, "-")
	if n == "" || n[0] < 'a' || n[0] > 'z' {
		n = "plugin-" + n
	}
	return strings.TrimSuffix(n, "-")
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func start(t testing.TB, s *settings, name string, registered []sdk.Info, blocks map[string]any, loaders modules.Loaders) *Harness {
	t.Helper()
	var provided []string
	for _, b := range s.beside {
		registered = append(registered, b.info)
		blocks[b.info.Name] = withEnable(b.config, nil)
		provided = append(provided, b.info.Name)
	}
	// Keep only requirements on modules run Beside: the test provides the others (captures) or not.
	for i, info := range registered {
		info.Requires = slices.DeleteFunc(slices.Clone(info.Requires), func(r string) bool { return !slices.Contains(provided, r) })
		registered[i] = info
	}
	plan, err := modules.Plan("sdktest", map[string]any{"modules": blocks}, nil, registered, loaders)
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	logger := s.logger
	if logger == nil {
		tw := &testWriter{t: t}
		t.Cleanup(tw.close)
		logger = slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	dbPath, dbSync := s.dbPath, s.dbSync
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "kedge.db")
	}
	if dbSync == "" {
		dbSync = "normal"
	}
	db, err := store.Open(dbPath, store.Options{Synchronous: dbSync})
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	reg := prometheus.NewRegistry()
	h := &Harness{Name: name, Router: router.New(reg), DB: db, t: t, captures: map[string]*Captured{}}
	for _, c := range append([]string{Source}, s.captures...) {
		mb, err := h.Router.Register(c, "", router.Options{Capacity: 4096, Policy: router.Block})
		if err != nil {
			t.Fatalf("sdktest: capture %s: %v", c, err)
		}
		h.captures[c] = &Captured{mb: mb}
	}
	h.mgr = modules.NewManager(modules.Deps{NodeName: NodeName, Router: h.Router, Store: db, Logger: logger,
		Metrics: reg, StopTimeout: 10 * time.Second})
	h.Metrics = prometheus.Gatherers{reg, h.mgr}
	if err := h.mgr.Start(context.Background(), plan); err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Errorf("sdktest: stop: %v", err)
		}
	})
	return h
}

// Stop stops the modules now (it also happens when the test ends); it returns what their Stop did.
func (h *Harness) Stop() error {
	h.stopOnce.Do(func() { h.stopErr = h.mgr.Stop(context.Background()) })
	return h.stopErr
}

// Send queues m for the module, from Source.
func (h *Harness) Send(m sdk.Message) error {
	m.Route.Source = Source
	return h.Router.Send(context.Background(), h.Name, m)
}

// SendSync sends m to the module and waits up to timeout for its reply.
func (h *Harness) SendSync(m sdk.Message, timeout time.Duration) (sdk.Message, error) {
	m.Route.Source = Source
	return h.Router.SendSync(context.Background(), h.Name, m, timeout)
}

// Reply answers a request the module made to a captured module (see sdk.Host.Reply).
func (h *Harness) Reply(m sdk.Message) error {
	return h.Router.Reply(context.Background(), m)
}

// Store is the module's own store namespace.
func (h *Harness) Store() sdk.Store { return h.DB.Objects(h.Name) }

// Healthy reports whether every module started and is healthy (what /readyz reports).
func (h *Harness) Healthy() error { return h.mgr.Ready(context.Background()) }

// Captured returns the capture mailbox called name (Source or one given to Capture).
func (h *Harness) Captured(name string) *Captured {
	c, ok := h.captures[name]
	if !ok {
		h.t.Fatalf("sdktest: %q is not captured: pass sdktest.Capture(%q) to Run", name, name)
	}
	return c
}

// Captured holds what the module sent to one captured name.
type Captured struct{ mb *router.Mailbox }

// Next returns the next message sent there, failing the test if none arrives within timeout.
func (c *Captured) Next(t testing.TB, timeout time.Duration) sdk.Message {
	t.Helper()
	m, err := c.Receive(timeout)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Receive returns the next message sent there, or an error after timeout.
func (c *Captured) Receive(timeout time.Duration) (sdk.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m, err := c.mb.Receive(ctx)
	if err != nil {
		return m, fmt.Errorf("sdktest: nothing sent to %s within %s: %w", c.mb.Name(), timeout, err)
	}
	return m, nil
}

// Len is how many messages wait to be read.
func (c *Captured) Len() int { return c.mb.Len() }

// testWriter sends log lines to t.Log until the test ends (later lines would panic in testing).
type testWriter struct {
	t      testing.TB
	mu     sync.Mutex
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
