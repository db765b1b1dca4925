// Package instrument rewrites a WebAssembly module so the host can stop it in a loop without
// wazero's termination checks: it adds two mutable i32 globals, a stop flag exported as StopExport
// and a budget, and at the entry of every function and the top of every loop body a check: the budget counts down by one, and when
// it reaches zero it is refilled (Budget), the guest yields to Go through `memory.grow 0` (native code
// exits to the Go runtime there, so the goroutine can be preempted: a garbage collection's
// stop-the-world, and the host's watchdog, never wait on a guest looping in native code), and the
// stop flag is read: once the host has set it to 1 the guest traps (unreachable).
//
// The check costs a load, a store and a not-taken branch per loop iteration and per call (a
// nanosecond or two), where wazero's checks (WithCloseOnContextDone) leave native code for Go at
// every loop header and start a goroutine for every call. A set flag is seen within Budget checks.
// The entry checks cover code without loops that still runs for ages: a recursion tree (naive
// fib(60) is 10^12 calls, never deeper than 60) never hits the stack limit. Every control-flow
// path that runs unboundedly long passes a loop header or a function entry again and again.
//
// The instruction decoder knows the MVP, sign extension, saturating truncation, bulk memory,
// reference types and multi-value block types. Anything else (SIMD, threads, exceptions, tail
// calls, …) and a module without a memory are refused with an error: the caller must then stop the
// module another way.
package instrument

import (
	"errors"
	"fmt"
	"strings"
)

// StopExport is the name the stop global is exported under. A module exporting it already is refused.
const StopExport = "kedge.stop"

// Budget is how many checks (loop iterations and function entries) run between two yields to Go,
// which is also how many at most run after the host set the stop flag.
const Budget = 1 << 14

// loopCheck is the code inserted after each loop's block type and at each function's entry:
//
//	global.get budget; i32.const 1; i32.sub; global.set budget
//	global.get budget; i32.eqz; if
//	  i32.const Budget; global.set budget
//	  i32.const 0; memory.grow 0; drop   ;; an exit to Go: preemptible
//	  global.get stop; if; unreachable; end
//	end
func loopCheck(stop, budget uint32) []byte {
	g := func(op byte, idx uint32) []byte { return appendU32([]byte{op}, idx) }
	var b []byte
	b = append(append(b, g(0x23, budget)...), 0x41, 1, 0x6B)
	b = append(b, g(0x24, budget)...)
	b = append(append(b, g(0x23, budget)...), 0x45, 0x04, 0x40)
	b = append(appendSleb(append(b, 0x41), Budget), g(0x24, budget)...)
	b = append(b, 0x41, 0, 0x40, 0, 0x1A)
	b = append(append(b, g(0x23, stop)...), 0x04, 0x40, 0x00, 0x0B)
	return append(b, 0x0B)
}

var magic = []byte{0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00}

// Section ids.
const (
	secCustom    = 0
	secImport    = 2
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secCode      = 10
	secDataCount = 12
	secTag       = 13
)

// order is where a known section goes in a module (the binary format fixes the order); 0 for custom.
func order(id byte) (int, bool) {
	switch id {
	case secCustom:
		return 0, true
	case 1, 2, 3, 4, 5:
		return int(id) * 10, true
	case secTag:
		return 55, true
	case 6, 7, 8, 9:
		return int(id) * 10, true
	case secDataCount:
		return 95, true
	case 10, 11:
		return int(id) * 10, true
	}
	return 0, false
}

// Result says what Module did.
type Result struct {
	// StopGlobal is the index of the stop global in the module's global index space; the budget's
	// is the next.
	StopGlobal uint32
	// Loops is how many loop checks were inserted.
	Loops int
	// Functions is how many function-entry checks were inserted (one per defined function).
	Functions int
}

type section struct {
	id   byte
	body []byte
}

// Module returns wasm with the stop global and a check in every loop and at every function entry. It never changes wasm. An
// error names what it could not handle (an unknown opcode, a malformed section, a module that
// exports StopExport already); the module must then not be run as if it could be stopped.
// Custom sections named .debug_* (DWARF) are dropped: their code offsets would no longer be right.
func Module(wasm []byte) ([]byte, Result, error) {
	var res Result
	if len(wasm) < len(magic) || string(wasm[:4]) != string(magic[:4]) {
		return nil, res, errors.New("not a WebAssembly module (no \\0asm header)")
	}
	if string(wasm[4:8]) != string(magic[4:]) {
		return nil, res, fmt.Errorf("unsupported WebAssembly binary version % x", wasm[4:8])
	}
	var secs []section
	r := reader{b: wasm, pos: 8}
	last := 0
	for !r.done() {
		id := r.byte()
		size := r.u32()
		if r.err != nil {
			return nil, res, fmt.Errorf("section header at offset %d: %w", r.pos, r.err)
		}
		if uint64(size) > uint64(len(wasm)-r.pos) {
			return nil, res, fmt.Errorf("section %d at offset %d: size %d runs past the end of the module", id, r.pos, size)
		}
		body := wasm[r.pos : r.pos+int(size)]
		r.pos += int(size)
		o, ok := order(id)
		if !ok {
			return nil, res, fmt.Errorf("unknown section id %d", id)
		}
		if id != secCustom {
			if o <= last {
				return nil, res, fmt.Errorf("section %d out of order or repeated", id)
			}
			last = o
		} else {
			name, err := customName(body)
			if err != nil {
				return nil, res, err
			}
			if strings.HasPrefix(name, ".debug_") {
				continue
			}
		}
		secs = append(secs, section{id, body})
	}

	var importedGlobals, definedGlobals, memories uint32
	var err error
	for _, s := range secs {
		switch s.id {
		case secImport:
			if importedGlobals, memories, err = countImports(s.body); err != nil {
				return nil, res, fmt.Errorf("import section: %w", err)
			}
		case secMemory:
			rr := reader{b: s.body}
			memories += rr.u32()
			if rr.err != nil {
				return nil, res, fmt.Errorf("memory section: %w", rr.err)
			}
		case secGlobal:
			rr := reader{b: s.body}
			definedGlobals = rr.u32()
			if rr.err != nil {
				return nil, res, fmt.Errorf("global section: %w", rr.err)
			}
		}
	}
	if memories == 0 {
		return nil, res, errors.New("the module has no memory (its loops would yield to Go through memory.grow 0)")
	}
	stop := importedGlobals + definedGlobals
	if stop < importedGlobals || stop+1 < stop {
		return nil, res, errors.New("too many globals")
	}
	res.StopGlobal = stop
	check := loopCheck(stop, stop+1)

	var haveGlobal, haveExport bool
	for i := range secs {
		s := &secs[i]
		switch s.id {
		case secGlobal:
			haveGlobal = true
			s.body = appendGlobal(s.body, definedGlobals)
		case secExport:
			haveExport = true
			if s.body, err = appendExport(s.body, stop); err != nil {
				return nil, res, fmt.Errorf("export section: %w", err)
			}
		case secCode:
			if s.body, res.Loops, res.Functions, err = instrumentCode(s.body, check); err != nil {
				return nil, res, fmt.Errorf("code section: %w", err)
			}
		}
	}
	if !haveGlobal {
		secs = insert(secs, section{secGlobal, appendGlobal([]byte{0}, 0)})
	}
	if !haveExport {
		body, _ := appendExport([]byte{0}, stop)
		secs = insert(secs, section{secExport, body})
	}

	out := make([]byte, 0, len(wasm)+(res.Loops+res.Functions)*len(check)+64)
	out = append(out, magic...)
	for _, s := range secs {
		out = append(out, s.id)
		out = appendU32(out, uint32(len(s.body)))
		out = append(out, s.body...)
	}
	return out, res, nil
}

// insert puts s before the first non-custom section that must follow it.
func insert(secs []section, s section) []section {
	o, _ := order(s.id)
	at := len(secs)
	for i, x := range secs {
		if xo, _ := order(x.id); x.id != secCustom && xo > o {
			at = i
			break
		}
	}
	secs = append(secs, section{})
	copy(secs[at+1:], secs[at:])
	secs[at] = s
	return secs
}

func customName(body []byte) (string, error) {
	r := reader{b: body}
	name := r.name()
	if r.err != nil {
		return "", fmt.Errorf("custom section name: %w", r.err)
	}
	return name, nil
}

// countImports reads the import section and counts the globals and memories it imports.
func countImports(body []byte) (globals, memories uint32, err error) {
	r := reader{b: body}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case 0x00: // function: type index
			r.u32()
		case 0x01: // table: reference type, limits
			r.byte()
			r.limits()
		case 0x02: // memory: limits
			r.limits()
			memories++
		case 0x03: // global: value type, mutability
			r.byte()
			r.byte()
			globals++
		default:
			if r.err == nil {
				return 0, 0, fmt.Errorf("import %d: unsupported import kind 0x%02x", i, kind)
			}
		}
	}
	if r.err != nil {
		return 0, 0, r.err
	}
	if !r.done() {
		return 0, 0, errors.New("trailing bytes")
	}
	return globals, memories, nil
}

// appendGlobal returns a global section with two more (mut i32) globals: the stop flag, 0, and the
// budget, Budget.
func appendGlobal(body []byte, count uint32) []byte {
	r := reader{b: body}
	r.u32()
	out := appendU32(make([]byte, 0, len(body)+16), count+2)
	out = append(out, body[r.pos:]...)
	out = append(out, 0x7F, 0x01, 0x41, 0x00, 0x0B)
	out = appendSleb(append(out, 0x7F, 0x01, 0x41), Budget)
	return append(out, 0x0B)
}

// appendExport returns an export section that also exports global stop as StopExport.
func appendExport(body []byte, stop uint32) ([]byte, error) {
	r := reader{b: body}
	n := r.u32()
	start := r.pos
	for i := uint32(0); i < n && r.err == nil; i++ {
		if name := r.name(); name == StopExport && r.err == nil {
			return nil, fmt.Errorf("the module already exports %q, the name reserved for the host's stop flag", StopExport)
		}
		r.byte()
		r.u32()
	}
	if r.err != nil {
		return nil, r.err
	}
	if !r.done() {
		return nil, errors.New("trailing bytes")
	}
	out := appendU32(make([]byte, 0, len(body)+len(StopExport)+10), n+1)
	out = append(out, body[start:]...)
	out = appendU32(out, uint32(len(StopExport)))
	out = append(out, StopExport...)
	out = append(out, 0x03)
	return appendU32(out, stop), nil
}

// instrumentCode returns the code section with check at the entry of every function and after
// every loop's block type, and how many loop and entry checks it inserted.
func instrumentCode(body []byte, check []byte) ([]byte, int, int, error) {
	r := reader{b: body}
	n := r.u32()
	if r.err != nil {
		return nil, 0, 0, r.err
	}
	out := appendU32(make([]byte, 0, len(body)+len(body)/16), n)
	loops := 0
	var fn []byte
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		if r.err != nil {
			return nil, 0, 0, fmt.Errorf("function %d: %w", i, r.err)
		}
		if uint64(size) > uint64(len(body)-r.pos) {
			return nil, 0, 0, fmt.Errorf("function %d: size %d runs past the section", i, size)
		}
		code := body[r.pos : r.pos+int(size)]
		r.pos += int(size)
		var k int
		var err error
		fn, k, err = instrumentFunc(fn[:0], code, check)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("function %d: %w", i, err)
		}
		loops += k
		out = appendU32(out, uint32(len(fn)))
		out = append(out, fn...)
	}
	if !r.done() {
		return nil, 0, 0, errors.New("trailing bytes after the last function")
	}
	return out, loops, int(n), nil
}

// instrumentFunc appends to out the function body code with check at its entry (after the local
// declarations, before the first instruction) and after every loop's block type. The entry check
// stops code without loops (a recursion tree: each call is short, the whole runs for ages below the
// stack limit); the loop checks stop loops within a function.
func instrumentFunc(out, code, check []byte) ([]byte, int, error) {
	r := reader{b: code}
	groups := r.u32()
	for i := uint32(0); i < groups && r.err == nil; i++ {
		r.u32()  // how many
		r.byte() // value type
	}
	if r.err != nil {
		return nil, 0, fmt.Errorf("locals: %w", r.err)
	}
	if r.done() {
		return nil, 0, errors.New("empty body: no end")
	}
	out = append(out, code[:r.pos]...)
	out = append(out, check...)
	copied, loops := r.pos, 0
	for !r.done() {
		at := r.pos
		op := r.byte()
		switch {
		case op == 0x03: // loop
			r.blockType()
			if r.err == nil {
				out = append(out, code[copied:r.pos]...)
				out = append(out, check...)
				copied = r.pos
				loops++
			}
		case op == 0x02 || op == 0x04: // block, if
			r.blockType()
		case op <= 0x01, op == 0x05, op == 0x0B, op == 0x0F, op == 0x1A, op == 0x1B, op == 0xD1,
			op >= 0x45 && op <= 0xC4: // no immediates
		case op == 0x0C, op == 0x0D, op == 0x10, op == 0xD2, op >= 0x20 && op <= 0x26,
			op == 0x3F, op == 0x40: // one index
			r.u32()
		case op == 0x0E: // br_table
			n := r.u32()
			for i := uint32(0); i < n && r.err == nil; i++ {
				r.u32()
			}
			r.u32()
		case op == 0x11: // call_indirect: type, table
			r.u32()
			r.u32()
		case op == 0x1C: // select with types
			n := r.u32()
			for i := uint32(0); i < n && r.err == nil; i++ {
				r.byte()
			}
		case op >= 0x28 && op <= 0x3E: // loads and stores: memarg
			r.u32()
			r.u32()
		case op == 0x41:
			r.sleb(32)
		case op == 0x42:
			r.sleb(64)
		case op == 0x43:
			r.skip(4)
		case op == 0x44:
			r.skip(8)
		case op == 0xD0: // ref.null
			r.byte()
		case op == 0xFC:
			sub := r.u32()
			switch {
			case sub <= 7: // saturating truncations
			case sub == 8, sub == 10, sub == 12, sub == 14: // memory.init, memory.copy, table.init, table.copy
				r.u32()
				r.u32()
			case sub == 9, sub == 11, sub == 13, sub >= 15 && sub <= 17:
				r.u32()
			default:
				if r.err == nil {
					return nil, 0, fmt.Errorf("unsupported instruction 0xFC %d at offset %d", sub, at)
				}
			}
		default:
			return nil, 0, fmt.Errorf("unsupported instruction 0x%02X at offset %d", op, at)
		}
		if r.err != nil {
			return nil, 0, fmt.Errorf("instruction 0x%02X at offset %d: %w", op, at, r.err)
		}
	}
	return append(out, code[copied:]...), loops, nil
}

// reader decodes the binary format; the first error sticks and makes every read return zero.
type reader struct {
	b   []byte
	pos int
	err error
}

var errShort = errors.New("unexpected end")

func (r *reader) done() bool { return r.err != nil || r.pos >= len(r.b) }

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.pos >= len(r.b) {
		r.err = errShort
		return 0
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

func (r *reader) skip(n int) {
	if r.err == nil && len(r.b)-r.pos < n {
		r.err = errShort
	}
	if r.err == nil {
		r.pos += n
	}
}

// u32 reads an unsigned LEB128 of at most 32 bits.
func (r *reader) u32() uint32 {
	var v uint32
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 28 && c > 0x0F {
			r.err = errors.New("integer too large")
			return 0
		}
		v |= uint32(c&0x7F) << shift
		if c < 0x80 {
			return v
		}
	}
	r.err = errors.New("integer too long")
	return 0
}

// sleb skips a signed LEB128 of at most bits bits.
func (r *reader) sleb(bits int) {
	for n := 0; n < (bits+6)/7; n++ {
		if c := r.byte(); r.err != nil || c < 0x80 {
			return
		}
	}
	r.err = errors.New("integer too long")
}

// blockType skips a block type: empty, a value type, or a type index (s33).
func (r *reader) blockType() { r.sleb(33) }

func (r *reader) name() string {
	n := r.u32()
	if r.err != nil {
		return ""
	}
	if uint64(n) > uint64(len(r.b)-r.pos) {
		r.err = errShort
		return ""
	}
	s := string(r.b[r.pos : r.pos+int(n)])
	r.pos += int(n)
	return s
}

// limits skips table or memory limits: flags, min, and max when flags say so (64-bit for memory64).
func (r *reader) limits() {
	flags := r.byte()
	if flags > 0x07 {
		if r.err == nil {
			r.err = fmt.Errorf("unsupported limits flags 0x%02x", flags)
		}
		return
	}
	r.sleb(64)
	if flags&1 != 0 {
		r.sleb(64)
	}
}

func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendSleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
