//go:build wasm

package abi

import "unsafe"

// move copies len(dst) bytes from src. In a guest, copy() branches around its memmove when source
// and destination are the same, and a taken branch costs ~30 ns under wazero's termination checks;
// memmove itself is one memory.copy instruction.
func move(dst []byte, src *byte) {
	memmove(unsafe.Pointer(unsafe.SliceData(dst)), unsafe.Pointer(src), uintptr(len(dst)))
}

//go:linkname memmove runtime.memmove
//go:noescape
func memmove(to, from unsafe.Pointer, n uintptr)
