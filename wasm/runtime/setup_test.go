package wasmruntime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
)

// Guest modules built by TestMain from the examples and testdata/guests, packed with their manifests.
var guests struct {
	dir    string
	echo   string // examples/echo
	scaler string // examples/scaler
	probe  string // testdata/guests/probe with manifest.yaml
	locked string // the same code with locked.yaml: nothing granted
	tiny   string // the same code with tiny.yaml: too little memory to start
	raw    string // the probe as the Go toolchain built it: no manifest section
	// refused is the probe exporting a function as kedge.stop, which the instrumenter refuses: it
	// runs with wazero's termination checks.
	refused string
	// fib is a hand-made module (not Go) whose handle computes naive fib(60) without any loop: only
	// the instrumenter's function-entry checks can stop it.
	fib string
}

// loader is shared by the tests so each module's code is compiled once per run.
var loader *Loader

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "kedge-wasm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		cache := filepath.Join(dir, "cache")
		if err := buildGuests(dir, cache); err != nil {
			fmt.Fprintln(os.Stderr, "build test guests:", err)
			return 1
		}
		if loader, err = NewLoader(Options{CacheDir: cache}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer loader.Close()
		return m.Run()
	}()
	os.Exit(code)
}

// buildGuests builds the guests and wasmpack, then packs each guest with its manifest and compiles
// it ahead into cache. wasmpack is built without the race detector, which makes wazero's compiler
// some 30 times slower: the tests then find every module compiled.
func buildGuests(dir, cache string) error {
	guests.dir = dir
	wasmpack := filepath.Join(dir, "wasmpack")
	raw := func(name string) string { return filepath.Join(dir, name+".raw.wasm") }
	builds := []*exec.Cmd{
		goCommand(nil, "build", "-o", wasmpack, "-ldflags=-X github.com/tetratelabs/wazero/internal/version.version="+wazeroVersion(), "../cmd/wasmpack"),
		goCommand(wasip1, "build", "-buildmode=c-shared", "-trimpath", "-o", raw("echo"), "../examples/echo"),
		goCommand(wasip1, "build", "-buildmode=c-shared", "-trimpath", "-o", raw("scaler"), "../examples/scaler"),
		goCommand(wasip1, "build", "-buildmode=c-shared", "-trimpath", "-o", raw("probe"), "./testdata/guests/probe"),
	}
	if err := runAll(builds); err != nil {
		return err
	}
	guests.raw = raw("probe")
	packed := func(name string) string { return filepath.Join(dir, name+".wasm") }
	guests.echo, guests.scaler, guests.probe, guests.locked = packed("echo"), packed("scaler"), packed("probe"), packed("locked")
	pack := func(rawPath, manifest, out string) *exec.Cmd {
		return exec.Command(wasmpack, "-manifest", manifest, "-in", rawPath, "-out", out, "-cache", cache)
	}
	if err := runAll([]*exec.Cmd{
		pack(raw("echo"), "../examples/echo/manifest.yaml", guests.echo),
		pack(raw("scaler"), "../examples/scaler/manifest.yaml", guests.scaler),
		pack(raw("probe"), "testdata/guests/probe/manifest.yaml", guests.probe),
	}); err != nil {
		return err
	}
	// These share the probe's code, so their compiled code is in the cache already.
	guests.tiny = packed("tiny")
	guests.refused = packed("refused")
	if err := exportStopName(raw("probe"), raw("refused")); err != nil {
		return err
	}
	guests.fib = packed("fib")
	if err := os.WriteFile(raw("fib"), fibGuest(), 0o644); err != nil {
		return err
	}
	// The echo and the probe also run with interruptible: false, compiled without checks.
	uninterruptible := func(packed string) *exec.Cmd {
		return exec.Command(wasmpack, "-check", packed, "-cache", cache, "-interruptible=false")
	}
	return runAll([]*exec.Cmd{
		pack(raw("probe"), "testdata/guests/probe/locked.yaml", guests.locked),
		pack(raw("probe"), "testdata/guests/probe/tiny.yaml", guests.tiny),
		pack(raw("refused"), "testdata/guests/probe/manifest.yaml", guests.refused),
		pack(raw("fib"), "testdata/guests/probe/manifest.yaml", guests.fib),
		uninterruptible(guests.echo),
		uninterruptible(guests.probe),
	})
}

// exportStopName writes to out the module in, with its function 0 also exported as kedge.stop (the
// name the instrumenter reserves for its stop flag).
func exportStopName(in, out string) error {
	wasm, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	uleb := func(b []byte) (v uint32, n int) {
		for shift := 0; n < len(b); shift += 7 {
			c := b[n]
			n++
			v |= uint32(c&0x7F) << shift
			if c < 0x80 {
				break
			}
		}
		return v, n
	}
	put := func(b []byte, v uint32) []byte {
		for ; v >= 0x80; v >>= 7 {
			b = append(b, byte(v)|0x80)
		}
		return append(b, byte(v))
	}
	res := append([]byte(nil), wasm[:8]...)
	for pos := 8; pos < len(wasm); {
		id := wasm[pos]
		size, n := uleb(wasm[pos+1:])
		body := wasm[pos+1+n : pos+1+n+int(size)]
		pos += 1 + n + int(size)
		if id == 7 {
			count, k := uleb(body)
			nb := put(nil, count+1)
			nb = append(nb, body[k:]...)
			nb = append(put(nb, uint32(len("kedge.stop"))), "kedge.stop"...)
			body = append(nb, 0x00, 0x00) // function 0
		}
		res = append(put(append(res, id), uint32(len(body))), body...)
	}
	return os.WriteFile(out, res, 0o644)
}

// fibGuest is a Kedge guest written by hand, as a C or Rust guest might compile: its exports follow
// the ABI, and kedge_handle computes naive recursive fib(60) with if and call only (some 10^12
// calls, never deeper than 60, so the stack limit never stops it).
func fibGuest() []byte {
	uleb := func(v uint32) []byte {
		var b []byte
		for ; v >= 0x80; v >>= 7 {
			b = append(b, byte(v)|0x80)
		}
		return append(b, byte(v))
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	vec := func(items ...[]byte) []byte { return cat(uleb(uint32(len(items))), cat(items...)) }
	sec := func(id byte, items ...[]byte) []byte {
		body := vec(items...)
		return cat([]byte{id}, uleb(uint32(len(body))), body)
	}
	name := func(s string) []byte { return cat(uleb(uint32(len(s))), []byte(s)) }
	export := func(s string, kind byte, idx uint32) []byte { return cat(name(s), []byte{kind}, uleb(idx)) }
	code := func(instrs ...byte) []byte { // no locals; the final end is added
		b := append([]byte{0}, append(instrs, 0x0B)...)
		return cat(uleb(uint32(len(b))), b)
	}
	const i32 = 0x7F
	return cat([]byte("\x00asm\x01\x00\x00\x00"),
		sec(1, []byte{0x60, 0, 0}, []byte{0x60, 0, 1, i32}, []byte{0x60, 1, i32, 1, i32}), // () → (), () → i32, i32 → i32
		sec(3, uleb(0), uleb(1), uleb(2), uleb(2), uleb(2), uleb(2)),
		sec(5, []byte{0x00, 1}), // one page
		sec(7, export("memory", 2, 0), export("_initialize", 0, 0), export("kedge_abi_version", 0, 1),
			export("kedge_buffer", 0, 2), export("kedge_init", 0, 3), export("kedge_handle", 0, 4)),
		sec(10,
			code(),                                 // _initialize
			code(0x41, 1),                          // kedge_abi_version: 1
			code(0x41, 0x80, 0x08),                 // kedge_buffer: address 1024
			code(0x41, 0),                          // kedge_init: ok
			code(0x41, 60, 0x10, 5, 0x1A, 0x41, 0), // kedge_handle: fib(60); ok
			code(0x20, 0, 0x41, 2, 0x49, 0x04, i32, // fib: if n < 2 (result i32)
				0x20, 0, // n
				0x05, 0x20, 0, 0x41, 1, 0x6B, 0x10, 5, // else fib(n-1)
				0x20, 0, 0x41, 2, 0x6B, 0x10, 5, 0x6A, // + fib(n-2)
				0x0B),
		),
	)
}

// wazeroVersion is the wazero version this process stamps on (and requires of) compilation cache
// files. A test binary carries no dependency versions, so wazero says "dev" here while a normal build
// says v1.12.0; wasmpack is built claiming the same, or the tests would find no compiled module.
// (Should wazero rename its version variable, the tests only get slower: each module compiles.)
func wazeroVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/tetratelabs/wazero" && dep.Version != "" && dep.Version != "(devel)" {
				return dep.Version
			}
		}
	}
	return "dev"
}

var wasip1 = []string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"}

func goCommand(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Env = append(append(os.Environ(), "GOFLAGS="), env...)
	return cmd
}

// runAll runs the commands, two at a time (the machines we test on have two cores).
func runAll(cmds []*exec.Cmd) error {
	errs := make([]error, len(cmds))
	slots := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func sumOf(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// env is a real module manager with a router, a store, a log capture and a builtin "sink" module
// (group "sinks") that records what it receives.
type env struct {
	db   *store.DB
	mgr  *modules.Manager
	rt   *router.Router
	reg  *prometheus.Registry
	logs *syncBuffer
	sink chan message.Message
}

// sink is a builtin test module: it records what it receives.
type sink struct{ got chan message.Message }

func (s *sink) Start(context.Context, sdk.Host) error { return nil }
func (s *sink) Stop(context.Context) error            { return nil }
func (s *sink) Handle(_ context.Context, m sdk.Message) error {
	s.got <- m
	return nil
}

// wasmBlock is a module block running path as a WASM module.
func wasmBlock(t testing.TB, path string, settings map[string]any) map[string]any {
	b := map[string]any{"runtime": "wasm", "path": path, "sha256": sumOf(t, path)}
	for k, v := range settings {
		b[k] = v
	}
	return b
}

// plan plans the given module blocks against the shared loader, plus two builtin recorders: "sink"
// (group "sinks") and "twin-recorder" (group "twins").
func plan(blocks map[string]any, got chan message.Message) ([]modules.Planned, error) {
	recorder := func(name, group string) sdk.Info {
		return sdk.Info{Name: name, Group: group, Enabled: true, New: func() sdk.Module { return &sink{got: got} }}
	}
	return modules.Plan("edge.yaml", map[string]any{"modules": blocks}, nil,
		[]sdk.Info{recorder("sink", "sinks"), recorder("twin-recorder", "twins")}, modules.Loaders{modules.WASM: loader})
}

// start plans and starts the modules; they stop when the test ends.
func start(t testing.TB, blocks map[string]any) *env {
	t.Helper()
	e := newEnv(t)
	planned, err := plan(blocks, e.sink)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.Start(context.Background(), planned); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.mgr.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return e
}

func newEnv(t testing.TB) *env {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := prometheus.NewRegistry()
	rt := router.New(reg)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &env{
		db: db,
		mgr: modules.NewManager(modules.Deps{NodeName: "node-1", Router: rt, Store: db, Logger: logger, Metrics: reg,
			StartTimeout: 5 * time.Minute, StopTimeout: 5 * time.Second}),
		rt: rt, reg: reg, logs: logs, sink: make(chan message.Message, 16),
	}
}

// call makes a sync request to module to and returns the reply.
func (e *env) call(t testing.TB, to, op string, content any) (message.Message, error) {
	t.Helper()
	m := message.New("tester", "", op, "ok/item")
	if content != nil {
		var err error
		if m, err = m.WithContent(content); err != nil {
			t.Fatal(err)
		}
	}
	return e.rt.SendSync(context.Background(), to, m, 30*time.Second)
}

// callOK is call for a request that must succeed; it decodes the reply's content into v.
func (e *env) callOK(t testing.TB, to, op string, content, v any) {
	t.Helper()
	r, err := e.call(t, to, op, content)
	if err != nil {
		t.Fatalf("%s %s: %v", to, op, err)
	}
	if r.Route.Operation != message.OpResponse {
		t.Fatalf("%s %s: reply %s %s, want a response", to, op, r.Route.Operation, r.Content)
	}
	if v != nil {
		if err := json.Unmarshal(r.Content, v); err != nil {
			t.Fatalf("%s %s: reply content %s: %v", to, op, r.Content, err)
		}
	}
}

// callErr is call for a request the module must fail: it returns the error reply's reason.
func (e *env) callErr(t testing.TB, to, op string, content any) string {
	t.Helper()
	r, err := e.call(t, to, op, content)
	if err != nil {
		t.Fatalf("%s %s: %v", to, op, err)
	}
	var body struct{ Error string }
	if r.Route.Operation != message.OpError || json.Unmarshal(r.Content, &body) != nil {
		t.Fatalf("%s %s: reply %s %s, want an error", to, op, r.Route.Operation, r.Content)
	}
	return body.Error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the JSON log records that have every given attribute.
func (b *syncBuffer) records(attrs map[string]any) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(b.buf.Bytes(), []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		match := true
		for k, v := range attrs {
			if rec[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, rec)
		}
	}
	return out
}
