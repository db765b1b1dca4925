package process_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/process"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/host/store"
)

// kib is a 1 KiB message body: a JSON string of 1022 characters plus its quotes.
var kib = []byte(`"` + strings.Repeat("k", 1022) + `"`)

// BenchmarkRoundTrip1KiB: a 1 KiB request into the plugin module through the router and the real
// manager (SendSync), and the module's reply (its length) back. sdk/sdktest's
// BenchmarkBuiltinRoundTrip1KiB has the same shape for a builtin module.
func BenchmarkRoundTrip1KiB(b *testing.B) {
	h := sdktest.RunProcess(b, filepath.Join(bin, "echo"), nil, sdktest.Named("echo"),
		sdktest.Logger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	req, err := message.New(sdktest.Source, "test", "ack", "bench").WithContent(kib)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		resp, err := h.SendSync(req, 10*time.Second)
		if err != nil || string(resp.Content) != "1024" {
			b.Fatalf("round trip: %v (%s back)", err, resp.Content)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/roundtrip")
}

// BenchmarkPluginStart: config check (checksum), launch, go-plugin handshake with AutoMTLS, the
// module's Start, then Stop and the process's exit.
func BenchmarkPluginStart(b *testing.B) {
	plugin := filepath.Join(bin, "echo")
	sum := sha256Of(b, plugin)
	db, err := store.Open(filepath.Join(b.TempDir(), "kedge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	loaders := modules.Loaders{modules.Process: process.NewLoader(process.Options{})}
	mgr := modules.NewManager(modules.Deps{NodeName: "bench", Router: router.New(nil), Store: db,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	tree := map[string]any{"modules": map[string]any{"echo": map[string]any{"runtime": "process", "path": plugin, "sha256": sum}}}
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		plan, err := modules.Plan("bench", tree, nil, nil, loaders)
		if err != nil {
			b.Fatal(err)
		}
		if err := mgr.Start(ctx, plan); err != nil {
			b.Fatal(err)
		}
		if err := mgr.Stop(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/start+stop")
}

// BenchmarkHealthPing: one bare unary gRPC call to the plugin (Health, via the manager's readiness
// check), the machine's baseline for the round trip above: measured in the same run, their ratio
// holds when other work slows the machine down.
func BenchmarkHealthPing(b *testing.B) {
	h := sdktest.RunProcess(b, filepath.Join(bin, "echo"), nil, sdktest.Named("echo"),
		sdktest.Logger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if err := h.Healthy(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/call")
}
