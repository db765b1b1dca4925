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
		if _, err := rt.CompileModule(ctx, in); err != nil {
			return // not valid to begin with: nothing is promised about the output
		}
		c, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("valid module in, invalid module out: %v", err)
		}
		defer c.Close(ctx)
	})
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
