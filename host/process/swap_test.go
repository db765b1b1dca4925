package process_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/process"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
)

// TestPluginIsHotSwappedWhileMessagesFlow swaps plugin v1 for v2 (another file, another checksum)
// through the manager while numbered messages stream in: each reaches the sink once, in order.
func TestPluginIsHotSwappedWhileMessagesFlow(t *testing.T) {
	v1 := copyPlugin(t)
	v2 := filepath.Join(t.TempDir(), "echo-v2")
	if err := os.WriteFile(v2, append(must(os.ReadFile(v1)), "v2"...), 0o755); err != nil { // same code, new sha256
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "kedge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rt := router.New(nil)
	sink, err := rt.Register("sink", "", router.Options{Capacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	loaders := modules.Loaders{modules.Process: process.NewLoader(fast)}
	plan := func(path string) []modules.Planned {
		p, err := modules.Plan("test.yaml", map[string]any{"modules": map[string]any{"echo": echoBlock(path, map[string]any{"forwardTo": "sink"})}},
			nil, nil, loaders)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	mgr := modules.NewManager(modules.Deps{NodeName: "n", Router: rt, Store: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := mgr.Start(context.Background(), plan(v1)); err != nil {
		t.Fatal(err)
	}
	defer mgr.Stop(context.Background())

	const total = 400
	sent := make(chan error, 1)
	go func() {
		for i := 1; i <= total; i++ {
			if err := rt.Send(context.Background(), "echo", request(t, "forward", i)); err != nil {
				sent <- err
				return
			}
			time.Sleep(time.Millisecond) // a steady stream that outlasts the new instance's start

		}
		sent <- nil
	}()
	rep, err := mgr.Swap(context.Background(), plan(v2)[0])
	if err != nil {
		t.Fatalf("swap: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var handlers []string // the plugin process that handled each message, in order
	for want := 1; want <= total; want++ {
		m, err := sink.Receive(ctx)
		if err != nil {
			t.Fatalf("message %d never reached the sink: %v", want, err)
		}
		var got int
		if err := m.DecodeContent(&got); err != nil || got != want {
			t.Fatalf("sink got %d (%v), want %d: lost, duplicated or reordered", got, err, want)
		}
		if len(handlers) == 0 || handlers[len(handlers)-1] != m.Header.Type {
			handlers = append(handlers, m.Header.Type)
		}
	}
	if len(handlers) != 2 {
		t.Errorf("handled by processes %v in turn, want v1 then v2 (the swap happened mid-stream)", handlers)
	}
	if pids := processesOf(v1); len(pids) > 0 {
		t.Errorf("v1 still runs after the swap: %v", pids)
	}
	if pids := processesOf(v2); len(pids) != 1 {
		t.Errorf("v2 processes: %v, want 1", pids)
	}
	t.Logf("swap: paused %s, %d queued at the switch", rep.Paused, rep.Queued)
}

// A plugin stamped with -X main.version=1.2.3 reports it in its Start response and the manager's
// status (module ls) shows it as the release, beside the file's sha256; an unstamped one shows "-".
// The release follows a hot swap from one to the other.
func TestModuleStatusShowsThePluginsStampedRelease(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, name := range []string{"echo", "echo-1.2.3"} {
		files[name] = filepath.Join(dir, name)
		if err := os.WriteFile(files[name], must(os.ReadFile(filepath.Join(bin, name))), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "kedge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	loaders := modules.Loaders{modules.Process: process.NewLoader(fast)}
	plan := func(path string) modules.Planned {
		p, err := modules.Plan("test.yaml", map[string]any{"modules": map[string]any{"echo": echoBlock(path, nil)}}, nil, nil, loaders)
		if err != nil {
			t.Fatal(err)
		}
		return p[0]
	}
	mgr := modules.NewManager(modules.Deps{NodeName: "n", Router: router.New(nil), Store: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx := context.Background()
	if err := mgr.Start(ctx, []modules.Planned{plan(files["echo"])}); err != nil {
		t.Fatal(err)
	}
	defer mgr.Stop(ctx)
	for i, tt := range []struct {
		file, wantRelease string
	}{
		{"echo", "-"},
		{"echo-1.2.3", "1.2.3"},
		{"echo", "-"},
	} {
		if i > 0 {
			if _, err := mgr.Swap(ctx, plan(files[tt.file])); err != nil {
				t.Fatalf("swap to %s: %v", tt.file, err)
			}
		}
		st := mgr.Status(ctx)
		sum := "sha256:" + sha256File(files[tt.file])[:12]
		if len(st) != 1 || st[0].Release != tt.wantRelease || st[0].SHA256 != sum {
			t.Fatalf("%s: status %+v, want release %q and %s", tt.file, st, tt.wantRelease, sum)
		}
	}
}
