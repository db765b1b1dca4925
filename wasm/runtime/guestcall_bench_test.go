package wasmruntime

import (
	"context"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/kedge-io/kedge/wasm/abi"
)

// BenchmarkGuestCall calls the echo guest's exports directly, without the router or the module
// manager, compiled three ways — with wazero's termination checks (wazero), instrumented with
// Kedge's loop checks (check, the default) and as built (none): what a call into a Go guest costs
// (version: an empty export; handle: a 1 KiB message decoded, answered and encoded, the reply host
// function a no-op).
func BenchmarkGuestCall(b *testing.B) {
	raw, instrumented := rawEchoCode(b), echoCode(b)
	msg := abi.Message{
		Header:  abi.Header{ID: "0123456789abcdef0123456789abcdef", Sync: true, Timestamp: 1},
		Route:   abi.Route{Source: "bench", Operation: "query", Resource: "bench/item"},
		Content: []byte(`"` + strings.Repeat("x", 1022) + `"`),
	}
	enc := abi.AppendMessage(nil, msg)
	for _, v := range []struct {
		name   string
		code   []byte
		checks bool
	}{{"wazero", raw, true}, {"check", instrumented, false}, {"none", raw, false}} {
		code, checks := v.code, v.checks
		ctx := context.Background()
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(checks))
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		hb := rt.NewHostModuleBuilder(abi.ImportModule)
		i32 := api.ValueTypeI32
		var replies int
		hb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, s []uint64) {
			replies++
			s[0] = 0
		}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(abi.ImportReply)
		hb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, s []uint64) {
			replies++
			s[0] = 0
		}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(abi.ImportReplyContent)
		i64 := api.ValueTypeI64
		noop := api.GoModuleFunc(func(_ context.Context, _ api.Module, s []uint64) {
			if len(s) > 0 {
				s[0] = 0
			}
		})
		for name, sig := range map[string][2][]api.ValueType{
			abi.ImportSend: {{i32, i32, i32, i32}, {i32}}, abi.ImportSendGroup: {{i32, i32, i32, i32}, {i32}},
			abi.ImportStoreGet: {{i32, i32, i32, i32}, {i32}}, abi.ImportStorePut: {{i32, i32, i32, i32, i64}, {i32}},
			abi.ImportStoreDelete: {{i32, i32}, {i32}}, abi.ImportStoreList: {{i32, i32, i32, i32}, {i32}},
			abi.ImportLog: {{i32, i32, i32}, {i32}}, abi.ImportNow: {nil, {i64}},
			abi.ImportLastError: {{i32, i32}, {i32}}, abi.ImportFail: {{i32, i32}, nil},
		} {
			hb.NewFunctionBuilder().WithGoModuleFunction(noop, sig[0], sig[1]).Export(name)
		}
		if _, err := hb.Instantiate(ctx); err != nil {
			b.Fatal(err)
		}
		cm, err := rt.CompileModule(ctx, code)
		if err != nil {
			b.Fatal(err)
		}
		mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithStartFunctions(abi.ExportInitialize))
		if err != nil {
			b.Fatal(err)
		}
		stack := make([]uint64, 1)
		init := abi.AppendInit(nil, abi.Init{Name: "echo", Config: []byte("{}")})
		stack[0] = 8192
		if err := mod.ExportedFunction(abi.ExportBuffer).CallWithStack(ctx, stack); err != nil {
			b.Fatal(err)
		}
		addr := uint32(stack[0])
		mod.Memory().Write(addr, init)
		stack[0] = uint64(len(init))
		if err := mod.ExportedFunction(abi.ExportInit).CallWithStack(ctx, stack); err != nil || stack[0] != 0 {
			b.Fatal(err, stack[0])
		}
		name := v.name
		b.Run("version/"+name, func(b *testing.B) {
			f := mod.ExportedFunction(abi.ExportVersion)
			for b.Loop() {
				if err := f.CallWithStack(ctx, stack); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("handle/"+name, func(b *testing.B) {
			f := mod.ExportedFunction(abi.ExportHandle)
			for b.Loop() {
				mod.Memory().Write(addr, enc)
				stack[0] = uint64(len(enc))
				if err := f.CallWithStack(ctx, stack); err != nil || stack[0] != 0 {
					b.Fatal(err, stack[0])
				}
			}
		})
		b.Run("bare/"+name, func(b *testing.B) {
			// a module with one export returning a constant: wazero's own cost of a call
			bare := []byte{0, 'a', 's', 'm', 1, 0, 0, 0,
				1, 5, 1, 0x60, 0, 1, 0x7f, // type: () -> i32
				3, 2, 1, 0, // func 0 has type 0
				7, 5, 1, 1, 'f', 0, 0, // export "f" = func 0
				10, 6, 1, 4, 0, 0x41, 1, 0x0b} // code: i32.const 1; end
			bm, err := rt.Instantiate(ctx, bare)
			if err != nil {
				b.Fatal(err)
			}
			f := bm.ExportedFunction("f")
			for b.Loop() {
				if err := f.CallWithStack(ctx, stack); err != nil {
					b.Fatal(err)
				}
			}
		})
		rt.Close(ctx)
	}
}
