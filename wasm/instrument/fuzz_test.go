package instrument

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"
)

// FuzzInstrument: arbitrary bytes never panic, and a module wazero accepts is either refused with an
// error or comes out as a module wazero accepts. The seeds are the
// hand-made modules of the other tests, the corpus in testdata/fuzz and, unless -short, the echo
// example built for wasip1 as Go guests are.
func FuzzInstrument(f *testing.F) {
	for _, m := range [][]byte{noGlobals, importedAndDefined, nested, branches, bulk, spin, env} {
		f.Add(m)
	}
	if !testing.Short() {
		if echo, err := buildEcho(f.TempDir()); err != nil {
			f.Logf("the echo guest is not a seed: %v", err)
		} else {
			f.Add(echo)
		}
	}
	ctx := context.Background()
	// The interpreter validates like the compiler and compiles far faster (under -race especially).
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	f.Fuzz(func(t *testing.T, in []byte) {
		keep := append([]byte(nil), in...)
		out, _, err := Module(in)
		if string(in) != string(keep) {
			t.Fatal("Module changed its input")
		}
		if err != nil {
			return
		}
		if len(in) < 1<<20 && hugeCount(in) {
			return // wazero would allocate the declared count up front: gigabytes, not our bug
		}
		orig, err := rt.CompileModule(ctx, in)
		if err != nil {
			return // not valid to begin with: nothing is promised about the output
		}
		defer orig.Close(ctx)
		c, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("valid module in, invalid module out: %v", err)
		}
		defer c.Close(ctx)
	})
}

// hugeCount says whether b holds a LEB128 of three or more bytes whose value is far beyond what
// b could hold: wazero's decoder allocates a vector's declared length before reading it (up to
// 4 GiB for a made-up type section), which kills the fuzzing process. The echo seed (over 1 MiB) is
// checked whatever it holds.
func hugeCount(b []byte) bool {
	for i := range b {
		var v uint64
		n := 0
		for ; n < 5 && i+n < len(b); n++ {
			v |= uint64(b[i+n]&0x7F) << (7 * n)
			if b[i+n] < 0x80 {
				break
			}
		}
		if n >= 2 && v > uint64(len(b))*8+1024 {
			return true
		}
	}
	return false
}

// buildEcho builds wasm/examples/echo as the runtime tests do and returns its bytes.
func buildEcho(dir string) ([]byte, error) {
	out := filepath.Join(dir, "echo.wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out, "../examples/echo")
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, &buildError{err, string(msg)}
	}
	return os.ReadFile(out)
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }
