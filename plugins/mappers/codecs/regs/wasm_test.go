package regs_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper"
	"github.com/kedge-io/kedge/test/slow"
	wasmrt "github.com/kedge-io/kedge/wasm/runtime"
)

// The packed WASM build of wasm/examples/regscodec and its sha256, made by TestMain.
var guestPath, guestSum string

var wasmLoader *wasmrt.Loader

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "kedge-regs-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		cache := filepath.Join(dir, "cache")
		if err := buildGuest(dir, cache); err != nil {
			fmt.Fprintln(os.Stderr, "build the regscodec guest:", err)
			return 1
		}
		if wasmLoader, err = wasmrt.NewLoader(wasmrt.Options{CacheDir: cache}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer wasmLoader.Close()
		return m.Run()
	}()
	os.Exit(code)
}

const example = "../../../../wasm/examples/regscodec"

// buildGuest builds wasmpack (claiming the wazero version this test binary stamps on its cache) and
// the guest, packs it with its manifest and compiles it ahead into cache — the steps of `make wasm`.
func buildGuest(dir, cache string) error {
	wasmpack, raw, out := filepath.Join(dir, "wasmpack"), filepath.Join(dir, "regs.raw.wasm"), filepath.Join(dir, "regs.wasm")
	for _, cmd := range []*exec.Cmd{
		goCommand(nil, "build", "-o", wasmpack, "-ldflags=-X github.com/tetratelabs/wazero/internal/version.version="+wazeroVersion(), "../../../../wasm/cmd/wasmpack"),
		goCommand([]string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"}, "build", "-buildmode=c-shared", "-trimpath", "-o", raw, example),
		exec.Command(wasmpack, "-manifest", filepath.Join(example, "manifest.yaml"), "-in", raw, "-out", out, "-cache", cache),
	} {
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, b)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	s := sha256.Sum256(b)
	guestPath, guestSum = out, hex.EncodeToString(s[:])
	return nil
}

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

func goCommand(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Env = append(append(os.Environ(), "GOFLAGS="), env...)
	return cmd
}

// caller is a module that only hands its host to the test (to send codec requests as a mapper does).
type caller struct{ h chan sdk.Host }

func (c *caller) Start(_ context.Context, h sdk.Host) error { c.h <- h; return nil }
func (c *caller) Handle(context.Context, sdk.Message) error { return nil }
func (c *caller) Stop(context.Context) error                { return nil }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startCodec runs the WASM regs-codec under a module manager beside a caller module and returns the
// mapper SDK's codec client on the caller's host.
func startCodec(t *testing.T) mapper.Codec {
	t.Helper()
	c := &caller{h: make(chan sdk.Host, 1)}
	registered := []sdk.Info{{Name: "caller", Group: "test", New: func() sdk.Module { return c }}}
	blocks := map[string]any{
		"regs-codec": map[string]any{"enable": true, "runtime": "wasm", "path": guestPath, "sha256": guestSum},
		"caller":     map[string]any{"enable": true},
	}
	plan, err := modules.Plan("test", map[string]any{"modules": blocks}, nil, registered, modules.Loaders{modules.WASM: wasmLoader})
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "kedge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	reg := prometheus.NewRegistry()
	mgr := modules.NewManager(modules.Deps{NodeName: "node-1", Router: router.New(reg), Store: db,
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Metrics: reg, StartTimeout: slow.Scale(60 * time.Second), StopTimeout: 10 * time.Second})
	if err := mgr.Start(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()) })
	return mapper.Codec{Host: <-c.h, Timeout: slow.Scale(10 * time.Second)}
}

// On the codec path (the mapper SDK's decode/encode requests to a codec module run as WASM), a
// visitor without dataType gets the model property's type, as the modbus mapper's own decoding does:
// a FLOAT over two words is a float32, an INT an int32, a BOOLEAN a non-zero word, with each word
// order; a desired value is encoded the same way; what cannot work is refused naming the model type.
func TestWASMRegisterCodecTakesTheModelTypeWhenTheVisitorHasNoDataType(t *testing.T) {
	codec := startCodec(t)
	dev := mapper.DeviceRef{Namespace: "default", Name: "plc-1"}
	prop := func(typ, visitor string) mapper.Property {
		return mapper.Property{Name: "p", Type: typ, Visitor: json.RawMessage(visitor)}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, typ, visitor string
		raw                []uint16
		want               string
	}{
		{"FLOAT float32 ABCD", "FLOAT", `{"codec":"regs-codec","modbus":{"register":"HoldingRegister","offset":0,"limit":2}}`, []uint16{0x41BE, 0x0000}, "23.75"},
		{"FLOAT float32 CDAB (isRegisterSwap)", "FLOAT", `{"codec":"regs-codec","isRegisterSwap":true}`, []uint16{0x0000, 0x41BE}, "23.75"},
		{"FLOAT float32 BADC (isSwap)", "FLOAT", `{"codec":"regs-codec","isSwap":true}`, []uint16{0xBE41, 0x0000}, "23.75"},
		{"FLOAT float32 DCBA (both)", "FLOAT", `{"codec":"regs-codec","isSwap":true,"isRegisterSwap":true}`, []uint16{0x0000, 0xBE41}, "23.75"},
		{"INT int32", "INT", `{"codec":"regs-codec"}`, []uint16{0xFFFF, 0xFFFE}, "-2"},
		{"BOOLEAN", "BOOLEAN", `{"codec":"regs-codec"}`, []uint16{3}, "true"},
		{"explicit dataType wins", "FLOAT", `{"codec":"regs-codec","dataType":"uint32"}`, []uint16{0x41BE, 0x0000}, "1102970880"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := codec.Decode(ctx, "regs-codec", dev, prop(tc.typ, tc.visitor), mapper.RawRegisters(tc.raw...))
			if err != nil {
				t.Fatal(err)
			}
			got, err := mapper.FormatValue(tc.typ, v)
			if err != nil || got != tc.want {
				t.Fatalf("decode %v as %s = %q, %v; want %s", tc.raw, tc.typ, got, err, tc.want)
			}
		})
	}
	t.Run("a desired FLOAT is written as float32 words", func(t *testing.T) {
		raw, err := codec.Encode(ctx, "regs-codec", dev, prop("FLOAT", `{"codec":"regs-codec","modbus":{"register":"HoldingRegister","offset":0,"limit":2}}`), 23.75)
		if err != nil {
			t.Fatal(err)
		}
		if regs, err := raw.Registers(); err != nil || fmt.Sprint(regs) != "[16830 0]" {
			t.Fatalf("encode 23.75 FLOAT = %v, %v; want [16830 0] (float32 0x41BE0000)", regs, err)
		}
	})
	t.Run("a FLOAT over one word is refused naming the model type", func(t *testing.T) {
		_, err := codec.Decode(ctx, "regs-codec", dev, prop("FLOAT", `{"codec":"regs-codec"}`), mapper.RawRegisters(1))
		if err == nil || !strings.Contains(err.Error(), "model type FLOAT with limit 1") {
			t.Fatalf("decode one word as FLOAT: %v; want a refusal naming model type FLOAT with limit 1", err)
		}
	})
}
