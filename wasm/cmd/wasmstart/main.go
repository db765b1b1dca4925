// Command wasmstart measures how long a packed WASM module takes to become ready in Kedge's WASM
// runtime: a cold compile (into an empty compilation cache), then starts that find it in the on-disk
// cache as an edgecore restart does (a new loader over the same directory), each split into prepare
// (read, verify, instrument, compile or load from the cache) and instantiate (the guest's runtime
// initialiser and Init).
//
//	wasmstart -in _bin/wasm/thermocodec.wasm [-n 5] [-config '{"key":"value"}']
//
// Build it for another architecture to measure there, e.g. GOARCH=arm64 and qemu-aarch64-static.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
	wasmrt "github.com/kedge-io/kedge/wasm/runtime"
)

func main() {
	in := flag.String("in", "", "packed .wasm module (wasmpack output)")
	n := flag.Int("n", 5, "cached starts to measure")
	config := flag.String("config", "{}", "the module's settings as a JSON object, passed to its Init")
	flag.Parse()
	if err := run(*in, *n, *config); err != nil {
		fmt.Fprintln(os.Stderr, "wasmstart:", err)
		os.Exit(1)
	}
}

func run(path string, n int, config string) error {
	if path == "" {
		return errors.New("-in is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	var settings map[string]any
	if err := json.Unmarshal([]byte(config), &settings); err != nil {
		return fmt.Errorf("-config: %w", err)
	}
	spec := modules.Spec{Name: "measured", Group: "codec", Config: settings,
		Settings: modules.Settings{Runtime: modules.WASM, Path: path, SHA256: hex.EncodeToString(sum[:])}}
	dir, err := os.MkdirTemp("", "wasmstart-cache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Printf("%s (%d KiB) on %s/%s, GOMAXPROCS %d\n", path, len(b)/1024, runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	prep, inst, err := startOnce(dir, spec)
	if err != nil {
		return fmt.Errorf("cold start: %w", err)
	}
	fmt.Printf("cold:   compile %8s  instantiate %8s\n", prep.Round(time.Millisecond), inst.Round(time.Millisecond))
	var preps, insts []time.Duration
	for range n {
		prep, inst, err := startOnce(dir, spec)
		if err != nil {
			return fmt.Errorf("cached start: %w", err)
		}
		preps, insts = append(preps, prep), append(insts, inst)
	}
	if n > 0 {
		fmt.Printf("cached: load    %8s  instantiate %8s  (median of %d restarts over the same cache directory)\n",
			median(preps).Round(time.Millisecond), median(insts).Round(time.Millisecond), n)
	}
	return nil
}

// startOnce is one edgecore start: a new loader over dir, the module prepared, started and stopped.
func startOnce(dir string, spec modules.Spec) (prepare, instantiate time.Duration, err error) {
	ctx := context.Background()
	l, err := wasmrt.NewLoader(wasmrt.Options{CacheDir: dir})
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	m, err := l.New(spec)
	if err != nil {
		return 0, 0, err
	}
	began := time.Now()
	if err := m.(modules.Preparer).Prepare(ctx); err != nil {
		return 0, 0, err
	}
	prepare = time.Since(began)
	began = time.Now()
	if err := m.Start(ctx, host{}); err != nil {
		return 0, 0, err
	}
	instantiate = time.Since(began)
	return prepare, instantiate, m.Stop(ctx)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// host is what a module sees of edgecore here: nothing to talk to.
type host struct{}

var errAlone = errors.New("wasmstart runs the module alone: no other modules")

func (host) Name() string                                           { return "measured" }
func (host) NodeName() string                                       { return "wasmstart" }
func (host) Send(context.Context, string, sdk.Message) error        { return errAlone }
func (host) SendToGroup(context.Context, string, sdk.Message) error { return errAlone }
func (host) SendSync(context.Context, string, sdk.Message, time.Duration) (sdk.Message, error) {
	return sdk.Message{}, errAlone
}
func (host) Reply(context.Context, sdk.Message) error { return errAlone }
func (host) Store() sdk.Store                         { return nil }
func (host) Logger() *slog.Logger                     { return slog.New(slog.DiscardHandler) }
func (host) Metrics() prometheus.Registerer           { return prometheus.NewRegistry() }
