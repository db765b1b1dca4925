package wasmruntime

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/wasm/compile"
)

// BenchmarkRoundTrip1KiB sends a 1 KiB message into the echo guest and waits for its reply, through
// the real module manager and router.SendSync, as any module would.
func BenchmarkRoundTrip1KiB(b *testing.B) {
	roundTrip1KiB(b, nil)
}

// BenchmarkRoundTrip1KiBNotInterruptible is the same with the echo configured interruptible: false
// (compiled without wazero's termination checks).
func BenchmarkRoundTrip1KiBNotInterruptible(b *testing.B) {
	roundTrip1KiB(b, map[string]any{"interruptible": false})
}

func roundTrip1KiB(b *testing.B, settings map[string]any) {
	e := start(b, map[string]any{"echo": wasmBlock(b, guests.echo, settings)})
	req := message.New("bench", "", message.OpQuery, "bench/item")
	req.Content = []byte(`"` + strings.Repeat("x", 1024-2) + `"`)
	ctx := context.Background()
	b.SetBytes(int64(len(req.Content)))
	b.ReportAllocs()
	for b.Loop() {
		req.Header.ID = message.NewID()
		r, err := e.rt.SendSync(ctx, "echo", req, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Content) != len(req.Content) {
			b.Fatalf("reply %s has %d bytes of content, want %d: %.300s", r.Route.Operation, len(r.Content), len(req.Content), r.Content)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/roundtrip")
}

// BenchmarkRoundTripScaler is a driver-shaped round trip: the scaler decodes JSON, reads and writes
// its store (SQLite, synchronous=normal), forwards a reading to another module and answers.
func BenchmarkRoundTripScaler(b *testing.B) {
	e := start(b, map[string]any{"scaler": wasmBlock(b, guests.scaler, map[string]any{"scale": 0.1, "offset": -40, "to": "twin-recorder"})})
	go func() {
		for range e.sink { // the forwarded readings
		}
	}()
	req, _ := message.New("bench", "", "update", "device/d1/register/temp").WithContent(map[string]int{"raw": 700})
	ctx := context.Background()
	for b.Loop() {
		req.Header.ID = message.NewID()
		r, err := e.rt.SendSync(ctx, "scaler", req, 10*time.Second)
		if err != nil || r.Route.Operation != message.OpResponse {
			b.Fatalf("reply %s %s: %v", r, r.Content, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/roundtrip")
}

// BenchmarkCompileCold compiles the echo guest with an empty compilation cache every time.
func BenchmarkCompileCold(b *testing.B) {
	code := echoCode(b)
	ctx := context.Background()
	for b.Loop() {
		rt := wazero.NewRuntimeWithConfig(ctx, compile.ConfigForStop(compile.StopCheck).WithCompilationCache(wazero.NewCompilationCache()))
		if _, err := rt.CompileModule(compile.Workers(ctx), code); err != nil {
			b.Fatal(err)
		}
		rt.Close(ctx)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/compile")
}

// BenchmarkCompileCached compiles the echo guest from a warm on-disk cache as a freshly started
// edgecore would: a new cache over the same directory, so nothing is shared in memory.
func BenchmarkCompileCached(b *testing.B) {
	code := echoCode(b)
	dir := b.TempDir()
	ctx := context.Background()
	compileOnce := func() {
		cache, err := wazero.NewCompilationCacheWithDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		rt := wazero.NewRuntimeWithConfig(ctx, compile.ConfigForStop(compile.StopCheck).WithCompilationCache(cache))
		if _, err := rt.CompileModule(compile.Workers(ctx), code); err != nil {
			b.Fatal(err)
		}
		rt.Close(ctx)
		cache.Close(ctx)
	}
	compileOnce() // fill the directory
	b.ResetTimer()
	for b.Loop() {
		compileOnce()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/compile")
}

// BenchmarkInstantiate makes a fresh instance of the compiled echo guest, including the Go
// runtime's initialiser and the guest's Init: what a killed module costs its next message.
func BenchmarkInstantiate(b *testing.B) {
	spec := modules.Spec{Name: "echo", Group: "echo", Settings: modules.Settings{Runtime: modules.WASM, Path: guests.echo, SHA256: sumOf(b, guests.echo)}}
	mod, err := loader.New(spec)
	if err != nil {
		b.Fatal(err)
	}
	e := newEnv(b)
	planned := []modules.Planned{{Info: sdk.Info{Name: "echo", Group: "echo"}, Settings: spec.Settings, Module: mod}}
	if err := e.mgr.Start(context.Background(), planned); err != nil {
		b.Fatal(err)
	}
	defer e.mgr.Stop(context.Background())
	m := mod.(*Module)
	for b.Loop() {
		in, err := m.instantiate(m.life)
		if err != nil {
			b.Fatal(err)
		}
		in.close()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/instantiate")
}

// echoCode is the echo guest as the runtime compiles it by default: instrumented.
func echoCode(b *testing.B) []byte {
	code, stop, err := compile.Prepare(rawEchoCode(b), true)
	if err != nil || stop != compile.StopCheck {
		b.Fatalf("the echo guest is not instrumented (%s): %v", stop, err)
	}
	return code
}

func rawEchoCode(b *testing.B) []byte {
	wasm, err := os.ReadFile(guests.echo)
	if err != nil {
		b.Fatal(err)
	}
	_, code, err := compile.Code(wasm)
	if err != nil {
		b.Fatal(err)
	}
	return code
}

// BenchmarkInstrumentEcho instruments the echo guest (2.3 MB) as every start of the module does,
// before the compilation cache is looked up.
func BenchmarkInstrumentEcho(b *testing.B) {
	code := rawEchoCode(b)
	b.SetBytes(int64(len(code)))
	for b.Loop() {
		if _, _, err := compile.Prepare(code, true); err != nil {
			b.Fatal(err)
		}
	}
}
