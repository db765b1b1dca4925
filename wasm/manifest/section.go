package manifest

import (
	"bytes"
	"errors"
	"fmt"
)

var (
	// ErrNotWASM: the file is not a WebAssembly binary module.
	ErrNotWASM = errors.New("not a WebAssembly module")
	// ErrNoManifest: the module carries no "kedge.manifest" section.
	ErrNoManifest = errors.New("no " + SectionName + " section: pack the guest with wasmpack -manifest")
)

var header = []byte("\x00asm\x01\x00\x00\x00")

// Read finds and parses the manifest in a .wasm file's bytes. The module must carry exactly one
// "kedge.manifest" section.
func Read(wasm []byte) (Manifest, error) {
	m, _, err := Split(wasm)
	return m, err
}

// Split is Read that also returns the module without its manifest section: the code to compile.
// Compiled code is cached by a hash of what is compiled, so modules that differ only in their
// manifests share it. code aliases wasm when the section is last (as wasmpack puts it).
func Split(wasm []byte) (m Manifest, code []byte, err error) {
	var found []byte
	var at [2]int
	n := 0
	err = walk(wasm, func(name string, payload []byte, start, end int) {
		if name == SectionName {
			found, at, n = payload, [2]int{start, end}, n+1
		}
	})
	switch {
	case err != nil:
		return Manifest{}, nil, err
	case n == 0:
		return Manifest{}, nil, ErrNoManifest
	case n > 1:
		return Manifest{}, nil, fmt.Errorf("%d %s sections: a module carries exactly one", n, SectionName)
	}
	if m, err = Parse(found); err != nil {
		return Manifest{}, nil, err
	}
	if at[1] == len(wasm) {
		return m, wasm[:at[0]:at[0]], nil
	}
	return m, append(append(make([]byte, 0, len(wasm)), wasm[:at[0]]...), wasm[at[1]:]...), nil
}

// Embed returns wasm with m as its only "kedge.manifest" section, appended at the end (any old one
// is removed). The manifest is written with its defaults filled in, so the binary states every
// limit.
func Embed(wasm []byte, m Manifest) ([]byte, error) {
	m.applyDefaults()
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var drop [][2]int
	if err := walk(wasm, func(name string, _ []byte, start, end int) {
		if name == SectionName {
			drop = append(drop, [2]int{start, end})
		}
	}); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(wasm)+512)
	at := 0
	for _, d := range drop {
		out = append(out, wasm[at:d[0]]...)
		at = d[1]
	}
	out = append(out, wasm[at:]...)
	payload := m.Marshal()
	body := appendULEB(nil, uint32(len(SectionName)))
	body = append(body, SectionName...)
	body = append(body, payload...)
	out = append(out, 0) // custom section id
	out = appendULEB(out, uint32(len(body)))
	return append(out, body...), nil
}

// walk checks the module header and the framing of every section, calling fn for each custom
// section with its name, payload and byte range in wasm.
func walk(wasm []byte, fn func(name string, payload []byte, start, end int)) error {
	if len(wasm) < len(header) || !bytes.Equal(wasm[:4], header[:4]) {
		return fmt.Errorf("%w: the file does not start with the \\0asm magic", ErrNotWASM)
	}
	if !bytes.Equal(wasm[4:8], header[4:]) {
		return fmt.Errorf("%w: binary format version %x, want 1", ErrNotWASM, wasm[4:8])
	}
	at := len(header)
	for at < len(wasm) {
		start := at
		id := wasm[at]
		size, n, err := readULEB(wasm[at+1:])
		if err != nil {
			return fmt.Errorf("%w: section at byte %d: size: %v", ErrNotWASM, start, err)
		}
		at += 1 + n
		if uint64(size) > uint64(len(wasm)-at) {
			return fmt.Errorf("%w: section at byte %d claims %d bytes, %d left", ErrNotWASM, start, size, len(wasm)-at)
		}
		body := wasm[at : at+int(size)]
		at += int(size)
		if id != 0 {
			continue
		}
		nameLen, n, err := readULEB(body)
		if err != nil || uint64(nameLen) > uint64(len(body)-n) {
			return fmt.Errorf("%w: custom section at byte %d has a malformed name", ErrNotWASM, start)
		}
		fn(string(body[n:n+int(nameLen)]), body[n+int(nameLen):], start, at)
	}
	return nil
}

// readULEB reads an unsigned 32-bit LEB128 number (at most 5 bytes).
func readULEB(b []byte) (v uint32, n int, err error) {
	for shift := 0; n < 5; shift += 7 {
		if n >= len(b) {
			return 0, 0, errors.New("truncated number")
		}
		c := b[n]
		n++
		if n == 5 && c > 0x0f {
			return 0, 0, errors.New("number exceeds 32 bits")
		}
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, n, nil
		}
	}
	return 0, 0, errors.New("number longer than 5 bytes")
}

func appendULEB(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
