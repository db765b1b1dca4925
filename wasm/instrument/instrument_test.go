package instrument

import (
	"context"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// A small assembler for hand-made test modules.

func u(v uint32) []byte { return appendU32(nil, v) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func vec(items ...[]byte) []byte { return cat(u(uint32(len(items))), cat(items...)) }

func str(s string) []byte { return cat(u(uint32(len(s))), []byte(s)) }

func sec(id byte, items ...[]byte) []byte {
	body := vec(items...)
	return cat([]byte{id}, u(uint32(len(body))), body)
}

func rawSec(id byte, body []byte) []byte { return cat([]byte{id}, u(uint32(len(body))), body) }

func module(secs ...[]byte) []byte { return cat(magic, cat(secs...)) }

func fnType(params, results string) []byte {
	return cat([]byte{0x60}, vec(types(params)...), vec(types(results)...))
}

func types(s string) [][]byte {
	var out [][]byte
	for _, c := range s {
		out = append(out, []byte{map[rune]byte{'i': 0x7F, 'I': 0x7E, 'f': 0x7D, 'F': 0x7C}[c]})
	}
	return out
}

// body is a function body: locals as (count, type) pairs, then the code (the final end is added).
func body(locals [][2]byte, code ...[]byte) []byte {
	var ls [][]byte
	for _, l := range locals {
		ls = append(ls, []byte{l[0], l[1]})
	}
	b := cat(vec(ls...), cat(code...), []byte{0x0B})
	return cat(u(uint32(len(b))), b)
}

func exportFunc(name string, idx uint32) []byte { return cat(str(name), []byte{0x00}, u(idx)) }

func f32(v float32) []byte {
	b := make([]byte, 5)
	b[0] = 0x43
	bits := math.Float32bits(v)
	for i := range 4 {
		b[1+i] = byte(bits >> (8 * i))
	}
	return b
}

func f64(v float64) []byte {
	b := make([]byte, 9)
	b[0] = 0x44
	bits := math.Float64bits(v)
	for i := range 8 {
		b[1+i] = byte(bits >> (8 * i))
	}
	return b
}

var (
	i32 = [2]byte{1, 0x7F}
	// A countdown loop over param 0 adding addend to local 1: loop ... br_if 0 end.
	countdown = func(addend []byte) []byte {
		return cat([]byte{0x03, 0x40, 0x20, 1}, addend, []byte{0x6A, 0x21, 1, 0x20, 0, 0x41, 1, 0x6B, 0x22, 0, 0x0D, 0, 0x0B})
	}
)

// noGlobals: sum(n) = n + (n-1) + ... + 1, in a loop; no global section at all.
var noGlobals = module(
	sec(1, fnType("i", "i")),
	sec(3, u(0)),
	sec(5, []byte{0x00, 1}),
	sec(7, exportFunc("run", 0)),
	sec(10, body([][2]byte{i32}, countdown([]byte{0x20, 0}), []byte{0x20, 1})),
)

// importedAndDefined reads an imported global and two defined ones in its loop.
var importedAndDefined = module(
	sec(1, fnType("i", "i")),
	sec(2, cat(str("env"), str("g"), []byte{0x03, 0x7F, 0x00})),
	sec(3, u(0)),
	sec(5, []byte{0x00, 1}),
	sec(6, []byte{0x7F, 0x01, 0x41, 5, 0x0B}, []byte{0x7E, 0x00, 0x42, 7, 0x0B}),
	sec(7, exportFunc("run", 0)),
	sec(10, body([][2]byte{i32},
		// loop: acc += g0 + g1; g1 += 1
		countdown([]byte{0x23, 0, 0x23, 1, 0x6A, 0x23, 1, 0x41, 1, 0x6A, 0x24, 1}),
		[]byte{0x20, 1, 0x23, 2, 0xA7, 0x6A}, // + (i32) g2
	)),
)

// env exports the global importedAndDefined imports.
var env = module(
	sec(6, []byte{0x7F, 0x00, 0x41, 3, 0x0B}),
	sec(7, cat(str("g"), []byte{0x03, 0})),
)

// nested: mul(a, b) by counting in nested loops; the inner loop has a type-index block type
// (multi-value: it takes the running total as a parameter and returns it).
var nested = module(
	sec(1, fnType("ii", "i"), fnType("i", "i")),
	sec(3, u(0)),
	sec(5, []byte{0x00, 1}),
	sec(7, exportFunc("run", 0)),
	sec(10, body([][2]byte{{2, 0x7F}}, // locals 2 (total), 3 (j)
		[]byte{0x03, 0x40},                // loop a times
		[]byte{0x20, 1, 0x21, 3, 0x20, 2}, // j = b; push total
		[]byte{0x03, 1},                   // loop (type 1): total -> total
		[]byte{0x41, 1, 0x6A, 0x20, 3, 0x41, 1, 0x6B, 0x22, 3, 0x0D, 0}, // total+1; j--; br_if 0 (j != 0)
		[]byte{0x0B, 0x21, 2}, // end; total = result
		[]byte{0x20, 0, 0x41, 1, 0x6B, 0x22, 0, 0x0D, 0, 0x0B}, // a--; br_if 0; end
		[]byte{0x20, 2},
	)),
)

// branches: loops inside blocks and ifs, chosen by br_table on n%3.
var branches = module(
	sec(1, fnType("i", "i")),
	sec(3, u(0)),
	sec(5, []byte{0x00, 1}),
	sec(7, exportFunc("run", 0)),
	sec(10, body([][2]byte{i32},
		[]byte{0x02, 0x40, 0x02, 0x40, 0x02, 0x40},             // block block block
		[]byte{0x20, 0, 0x41, 3, 0x70, 0x0E, 2, 0, 1, 2, 0x0B}, // br_table [0 1] 2 (n % 3); end
		countdown([]byte{0x41, 2}),                             // case 0: acc = 2n
		[]byte{0x0C, 1, 0x0B},                                  // br 1 (out); end
		[]byte{0x20, 0, 0x41, 4, 0x4B, 0x04, 0x40},             // case 1: if n > 4
		countdown([]byte{0x41, 3}),                             // acc = 3n
		[]byte{0x05, 0x41, 0xE4, 0x00, 0x21, 1, 0x0B},          // else acc = 100; end
		[]byte{0x0B},                            // end (case 2 lands here)
		[]byte{0x20, 1, 0x41, 0xE8, 0x07, 0x6A}, // acc + 1000
	)),
)

// bulk: every 0xFC instruction, reference types, table.get/set, typed select and sign extension,
// each in functions with a loop.
var bulk = module(
	sec(1, fnType("", "I"), fnType("", "i")),
	sec(3, u(0), u(1), u(1), u(1)),
	sec(4, []byte{0x70, 0x00, 2}), // table: funcref, min 2
	sec(5, []byte{0x00, 1}),       // memory: min 1 page
	sec(7, exportFunc("sat", 0), exportFunc("mem", 1), exportFunc("tab", 2), exportFunc("seven", 3)),
	sec(9, cat([]byte{0x01, 0x00}, vec(u(3)))), // passive element segment: func 3
	rawSec(12, u(1)), // data count
	sec(10,
		body(nil, []byte{0x03, 0x40, 0x0B},
			f32(3.7), []byte{0xFC, 0, 0xAC},
			f32(-3.7), []byte{0xFC, 1, 0xAD, 0x7C},
			f64(1e20), []byte{0xFC, 2, 0xAC, 0x7C},
			f64(5.5), []byte{0xFC, 3, 0xAD, 0x7C},
			f32(1e30), []byte{0xFC, 4, 0x7C},
			f32(9), []byte{0xFC, 5, 0x7C},
			f64(-2.5), []byte{0xFC, 6, 0x7C},
			f64(2.5), []byte{0xFC, 7, 0x7C},
			[]byte{0x42, 0x80, 0x01, 0xC2, 0x7C}, // i64.extend8_s(128) = -128
		),
		body(nil, []byte{0x03, 0x40, 0x0B},
			[]byte{0x41, 0, 0x41, 0, 0x41, 5, 0xFC, 8, 0, 0}, // memory.init data 0 → [0, 5)
			[]byte{0xFC, 9, 0}, // data.drop 0
			[]byte{0x41, 10, 0x41, 0, 0x41, 5, 0xFC, 10, 0, 0},       // memory.copy [0,5) → 10
			[]byte{0x41, 20, 0x41, 0x41, 0x41, 3, 0xFC, 11, 0},       // memory.fill 20..23 = 'A'
			[]byte{0x41, 0, 0x28, 2, 10, 0x41, 0, 0x28, 2, 20, 0x6A}, // load(10) + load(20)
			[]byte{0x41, 0x80, 0x01, 0xC0, 0x6A},                     // + i32.extend8_s(128)
			[]byte{0x41, 0x80, 0x80, 0x02, 0xC1, 0x6A},               // + i32.extend16_s(32768)
		),
		body(nil, []byte{0x03, 0x40, 0x0B},
			[]byte{0x41, 0, 0x41, 0, 0x41, 1, 0xFC, 12, 0, 0}, // table.init elem 0 → table[0]
			[]byte{0xFC, 13, 0}, // elem.drop 0
			[]byte{0x41, 1, 0x41, 0, 0x41, 1, 0xFC, 14, 0, 0},               // table.copy table[0] → table[1]
			[]byte{0xD0, 0x70, 0x41, 2, 0xFC, 15, 0, 0x1A},                  // table.grow by 2 (null); drop
			[]byte{0x41, 2, 0xD2, 3, 0x41, 2, 0xFC, 17, 0},                  // table.fill [2,4) = func 3
			[]byte{0x41, 0, 0xD0, 0x70, 0x26, 0},                            // table.set 0 = null
			[]byte{0x41, 0, 0x25, 0, 0xD1},                                  // ref.is_null(table.get 0) = 1
			[]byte{0xFC, 16, 0, 0x6A},                                       // + table.size = 4 → 5
			[]byte{0x41, 3, 0x11, 1, 0, 0x6A},                               // + call_indirect table[3] = 12
			[]byte{0x41, 1, 0x11, 1, 0, 0x6A},                               // + call_indirect table[1] = 19
			[]byte{0x41, 0xE4, 0x00, 0x41, 1, 0x41, 1, 0x1C, 1, 0x7F, 0x6A}, // + select (result i32) 100 = 119
		),
		body(nil, []byte{0x41, 7}),
	),
	sec(11, cat([]byte{0x01}, str("hello"))), // passive data segment
)

func TestModuleKeepsBehaviourAndAddsTheStopGlobal(t *testing.T) {
	tests := []struct {
		name      string
		wasm      []byte
		fn        string
		args      []uint64
		want      uint64
		stopIndex uint32
		loops     int
	}{
		{"a loop-free recursion gets only entry checks", fib, "fib", []uint64{20}, 6765, 1, 0},
		{"a module without globals gets a global section", noGlobals, "run", []uint64{10}, 55, 0, 1},
		{"the stop global follows imported and defined globals", importedAndDefined, "run", []uint64{4},
			// g0=3, g1 = 5,6,7,8 → 4*3 + 26 = 38, + g2 7
			45, 3, 1},
		{"nested loops with a type-index block type", nested, "run", []uint64{6, 7}, 42, 0, 2},
		{"br_table to a loop in a block", branches, "run", []uint64{6}, 1012, 0, 2},
		{"a loop in an if", branches, "run", []uint64{7}, 1021, 0, 2},
		{"the else of an if", branches, "run", []uint64{4}, 1100, 0, 2},
		{"a loop running longer than the budget", noGlobals, "run", []uint64{3 * Budget}, 3 * Budget * (3*Budget + 1) / 2 & 0xFFFFFFFF, 0, 1},
		{"br_table default", branches, "run", []uint64{5}, 1000, 0, 2},
		{"saturating truncations and sign extension", bulk, "sat", nil, 0, 0, 3},
		{"bulk memory", bulk, "mem", nil, 0, 0, 3},
		{"table operations and reference types", bulk, "tab", nil, 119, 0, 3},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, res, err := Module(tt.wasm)
			if err != nil {
				t.Fatalf("Module: %v", err)
			}
			if res.StopGlobal != tt.stopIndex || res.Loops != tt.loops || res.Functions != functions(t, tt.wasm) {
				t.Errorf("result %+v, want stop global %d, %d loops and an entry check per function", res, tt.stopIndex, tt.loops)
			}
			want := run(t, ctx, tt.wasm, tt.fn, tt.args)
			if tt.want != 0 && want != tt.want {
				t.Fatalf("the original module returns %d, the test expects %d", want, tt.want)
			}
			if got := run(t, ctx, out, tt.fn, tt.args); got != want {
				t.Errorf("instrumented module returns %d, the original %d", got, want)
			}
		})
	}
}

// functions counts the functions a module defines (the code section's count).
func functions(t *testing.T, wasm []byte) int {
	t.Helper()
	n := 0
	r := reader{b: wasm, pos: len(magic)}
	for !r.done() {
		id, size := r.byte(), r.u32()
		if id == secCode {
			rr := reader{b: r.b[r.pos : r.pos+int(size)]}
			n = int(rr.u32())
		}
		r.skip(int(size))
	}
	return n
}

// newRuntime is a compiler runtime without wazero's termination checks, with env instantiated.
func newRuntime(t *testing.T, ctx context.Context) wazero.Runtime {
	t.Helper()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(false))
	t.Cleanup(func() { rt.Close(ctx) })
	if _, err := rt.InstantiateWithConfig(ctx, env, wazero.NewModuleConfig().WithName("env")); err != nil {
		t.Fatal(err)
	}
	return rt
}

func run(t *testing.T, ctx context.Context, wasm []byte, fn string, args []uint64) uint64 {
	t.Helper()
	rt := newRuntime(t, ctx)
	mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	res, err := mod.ExportedFunction(fn).Call(ctx, args...)
	if err != nil {
		t.Fatalf("%s: %v", fn, err)
	}
	return res[0]
}

// spin sets its global "running" to 1, then loops forever.
var spin = module(
	sec(1, fnType("", "")),
	sec(3, u(0)),
	sec(5, []byte{0x00, 1}),
	sec(6, []byte{0x7F, 0x01, 0x41, 0, 0x0B}),
	sec(7, exportFunc("spin", 0), cat(str("running"), []byte{0x03, 0})),
	sec(10, body(nil, []byte{0x41, 1, 0x24, 0, 0x03, 0x40, 0x0C, 0, 0x0B})),
)

// fib is naive recursive Fibonacci without a loop (if and call only); its "spin" sets the global
// "running" to 1 and computes fib(60): some 10^12 calls, never deeper than 60.
var fib = module(
	sec(1, fnType("i", "i"), fnType("", "")),
	sec(3, u(0), u(1)),
	sec(5, []byte{0x00, 1}),
	sec(6, []byte{0x7F, 0x01, 0x41, 0, 0x0B}),
	sec(7, exportFunc("fib", 0), exportFunc("spin", 1), cat(str("running"), []byte{0x03, 0})),
	sec(10,
		body(nil, []byte{
			0x20, 0, 0x41, 2, 0x49, 0x04, 0x7F, // if n < 2 (result i32)
			0x20, 0, // n
			0x05, 0x20, 0, 0x41, 1, 0x6B, 0x10, 0, // else fib(n-1)
			0x20, 0, 0x41, 2, 0x6B, 0x10, 0, 0x6A, // + fib(n-2)
			0x0B}),
		body(nil, []byte{0x41, 1, 0x24, 0, 0x41, 60, 0x10, 0, 0x1A}),
	),
)

func TestSettingStopMakesARunningGuestTrap(t *testing.T) {
	for _, tt := range []struct {
		name string
		wasm []byte
	}{
		{"an endless loop", spin},
		{"a loop-free exponential recursion", fib},
	} {
		t.Run(tt.name, func(t *testing.T) { stopRunning(t, tt.wasm) })
	}
}

// stopRunning runs the instrumented module's "spin", checks a garbage collection does not wait on
// it, sets the stop flag and wants the guest to trap.
func stopRunning(t *testing.T, wasm []byte) {
	ctx := context.Background()
	out, _, err := Module(wasm)
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, ctx)
	mod, err := rt.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	stop, ok := mod.ExportedGlobal(StopExport).(api.MutableGlobal)
	if !ok {
		t.Fatalf("%s is not exported as a mutable global", StopExport)
	}
	if stop.Get() != 0 {
		t.Fatalf("stop starts at %d, want 0", stop.Get())
	}
	done := make(chan error, 1)
	go func() {
		_, err := mod.ExportedFunction("spin").Call(ctx)
		done <- err
	}()
	running := mod.ExportedGlobal("running")
	for deadline := time.Now().Add(30 * time.Second); running.Get() != 1; {
		if time.Now().After(deadline) {
			t.Fatal("the guest never started its loop")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the loop returned before stop was set: %v", err)
	default:
	}
	// A collection stops the world: it must not wait forever on the goroutine in the guest's loop.
	gcDone := make(chan struct{})
	go func() { runtime.GC(); close(gcDone) }()
	select {
	case <-gcDone:
	case <-time.After(30 * time.Second):
		t.Fatal("a garbage collection waited 30s for the looping guest")
	}
	stop.Set(1)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("the loop ended with %v, want an unreachable trap", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the loop did not stop within 30s of stop being set")
	}
}

func TestModuleRefusesWhatItCannotInstrument(t *testing.T) {
	simd := module(
		sec(1, fnType("", "")),
		sec(3, u(0)),
		sec(5, []byte{0x00, 1}),
		sec(10, body(nil, []byte{0xFD, 12}, make([]byte, 16), []byte{0x1A})), // v128.const; drop
	)
	tests := []struct {
		name, wantErr string
		wasm          []byte
	}{
		{"a module that exports kedge.stop already", `already exports "kedge.stop"`, module(
			sec(1, fnType("", "")), sec(3, u(0)), sec(5, []byte{0x00, 1}), sec(7, exportFunc(StopExport, 0)), sec(10, body(nil)))},
		{"an unknown opcode (SIMD)", "unsupported instruction 0xFD", simd},
		{"an unknown 0xFC instruction", "unsupported instruction 0xFC 18", module(
			sec(1, fnType("", "")), sec(3, u(0)), sec(5, []byte{0x00, 1}), sec(10, body(nil, []byte{0xFC, 18})))},
		{"a module without memory", "has no memory", module(
			sec(1, fnType("", "")), sec(3, u(0)), sec(10, body(nil, []byte{0x03, 0x40, 0x0B})))},
		{"not WebAssembly", "not a WebAssembly module", []byte("hello world")},
		{"a truncated section", "runs past the end", append(module(), 10, 20, 1)},
		{"a function running past its section", "runs past the section", module(sec(5, []byte{0x00, 1}), rawSec(10, []byte{1, 9, 0}))},
		{"an unknown section", "unknown section id 14", module(rawSec(14, nil))},
		{"sections out of order", "out of order", module(sec(3), sec(1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Module(tt.wasm)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestModuleWithoutExportsGetsAnExportSectionAndDropsDWARF(t *testing.T) {
	in := module(
		sec(1, fnType("", "")),
		sec(3, u(0)),
		sec(5, []byte{0x00, 1}),
		rawSec(0, cat(str(".debug_info"), []byte{1, 2, 3})),
		sec(10, body(nil, []byte{0x03, 0x40, 0x0B})),
		rawSec(0, cat(str("name"), []byte{})),
	)
	out, res, err := Module(in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), ".debug_info") {
		t.Error("the DWARF section is still there")
	}
	if !strings.Contains(string(out), "name") {
		t.Error("the name section was dropped")
	}
	ctx := context.Background()
	rt := newRuntime(t, ctx)
	mod, err := rt.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	if mod.ExportedGlobal(StopExport) == nil || res.Loops != 1 {
		t.Fatalf("%s exported: %v, %d loops; want it and 1", StopExport, mod.ExportedGlobal(StopExport) != nil, res.Loops)
	}
}
