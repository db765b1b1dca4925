package thermo_test

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"

	wasmrt "github.com/kedge-io/kedge/wasm/runtime"
)

// guest is one packed build of wasm/examples/thermocodec.
type guest struct{ path, sum string }

// Builds of the thermocodec guest, made by TestMain: v1 (Celsius), v2 (Kelvin), and the faults test
// build (v1 that hangs or exits when a visitor asks).
var guests struct{ v1, v2, faults guest }

// wasmLoader is shared so each guest is compiled once per run (ahead, by wasmpack, into its cache).
var wasmLoader *wasmrt.Loader

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "kedge-thermo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		cache := filepath.Join(dir, "cache")
		if err := buildGuests(dir, cache); err != nil {
			fmt.Fprintln(os.Stderr, "build thermocodec guests:", err)
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

const example = "../../../../wasm/examples/thermocodec"

// buildGuests builds wasmpack (without -race, claiming the wazero version this test binary stamps on
// its cache, as wasm/runtime's tests do) and the three guests, packs each with its manifest and
// compiles it ahead into cache — the same steps as `make wasm`.
func buildGuests(dir, cache string) error {
	wasmpack := filepath.Join(dir, "wasmpack")
	raw := func(n string) string { return filepath.Join(dir, n+".raw.wasm") }
	wasip1 := []string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"}
	build := func(name, tags string) *exec.Cmd {
		return goCommand(wasip1, "build", "-buildmode=c-shared", "-trimpath", "-tags="+tags, "-o", raw(name), example)
	}
	if err := runAll([]*exec.Cmd{
		goCommand(nil, "build", "-o", wasmpack, "-ldflags=-X github.com/tetratelabs/wazero/internal/version.version="+wazeroVersion(), "../../../../wasm/cmd/wasmpack"),
		build("v1", ""), build("v2", "thermocodec_v2"), build("faults", "thermocodec_faults"),
	}); err != nil {
		return err
	}
	out := func(n string) string { return filepath.Join(dir, n+".wasm") }
	pack := func(name, manifest string) *exec.Cmd {
		return exec.Command(wasmpack, "-manifest", filepath.Join(example, manifest), "-in", raw(name), "-out", out(name), "-cache", cache)
	}
	if err := runAll([]*exec.Cmd{pack("v1", "manifest.yaml"), pack("v2", "manifest-v2.yaml"), pack("faults", "manifest.yaml")}); err != nil {
		return err
	}
	for _, g := range []struct {
		name string
		to   *guest
	}{{"v1", &guests.v1}, {"v2", &guests.v2}, {"faults", &guests.faults}} {
		b, err := os.ReadFile(out(g.name))
		if err != nil {
			return err
		}
		s := sha256.Sum256(b)
		*g.to = guest{path: out(g.name), sum: hex.EncodeToString(s[:])}
	}
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

// runAll runs the commands two at a time (the test machines have two cores).
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
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
