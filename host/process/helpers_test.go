package process_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/process"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/host/store"
)

// copyPlugin copies the echo plugin into the test's own directory, so checks for leftover processes
// only see this test's.
func copyPlugin(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bin, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "echo")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// fast are process options that keep tests quick: short backoff, frequent pings.
var fast = process.Options{BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	HealthInterval: 100 * time.Millisecond, StartTimeout: 20 * time.Second}

// logs is a slog handler target that tests can read back as JSON records.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func (l *logs) records() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// waitRecord waits for a record whose msg is msg (logs from a plugin arrive asynchronously).
func (l *logs) waitRecord(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range l.records() {
			if r["msg"] == msg {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log record %q within 10s; log:\n%s", msg, l.String())
	return nil
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// request builds a message for the echo plugin.
func request(t testing.TB, op string, content any) message.Message {
	t.Helper()
	m, err := message.New(sdktest.Source, "test", op, "test/thing").WithContent(content)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ask makes a sync request and decodes the reply's content into out.
func ask(t *testing.T, h *sdktest.Harness, op string, content, out any) message.Message {
	t.Helper()
	reply, err := h.SendSync(request(t, op, content), 20*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	if out != nil {
		if err := reply.DecodeContent(out); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}
	return reply
}

// metric returns the value of a counter or gauge labelled module=echo, or -1 if absent.
func metric(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label(m, "module") == "echo" {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				}
			}
		}
	}
	return -1
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// eventually polls cond until it holds, failing after a generous bound.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processesOf lists the live (not zombie) processes running the executable at path.
func processesOf(path string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != path {
			continue
		}
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// manager starts the modules in blocks through the real manager, without the harness (for starts
// that are meant to fail), and stops them when the test ends.
func manager(t *testing.T, blocks map[string]any, opts process.Options, log *slog.Logger) (*modules.Manager, error) {
	t.Helper()
	loader := process.NewLoader(opts)
	t.Cleanup(func() { _ = loader.Close() })
	plan, err := modules.Plan("test.yaml", map[string]any{"modules": blocks}, nil, nil, modules.Loaders{modules.Process: loader})
	if err != nil {
		return nil, err
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "kedge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	mgr := modules.NewManager(modules.Deps{NodeName: "node-1", Router: router.New(nil), Store: db, Logger: log})
	if err := mgr.Start(context.Background(), plan); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()) })
	return mgr, nil
}

func echoBlock(path string, extra map[string]any) map[string]any {
	b := map[string]any{"runtime": "process", "path": path, "sha256": sha256File(path)}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

func sha256File(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "0000000000000000000000000000000000000000000000000000000000000000"
	}
	return sha256Hex(b)
}
