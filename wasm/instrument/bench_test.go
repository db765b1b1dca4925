package instrument

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
)

// BenchmarkLoop1000 calls a function looping 1000 times (a countdown adding into a local): as built,
// instrumented (Kedge's check per iteration), and with wazero's termination checks instead.
func BenchmarkLoop1000(b *testing.B) {
	instrumented, _, err := Module(noGlobals)
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct {
		name   string
		wasm   []byte
		checks bool
	}{
		{"plain", noGlobals, false},
		{"instrumented", instrumented, false},
		{"wazero-checks", noGlobals, true},
	} {
		b.Run(bb.name, func(b *testing.B) {
			ctx := context.Background()
			rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(bb.checks))
			defer rt.Close(ctx)
			mod, err := rt.Instantiate(ctx, bb.wasm)
			if err != nil {
				b.Fatal(err)
			}
			run := mod.ExportedFunction("run")
			stack := make([]uint64, 1)
			for b.Loop() {
				stack[0] = 1000
				if err := run.CallWithStack(ctx, stack); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
