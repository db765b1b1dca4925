//go:build !wasm

package abi

import "unsafe"

// move copies len(dst) bytes from src (see move_wasm.go for why it is not copy in a guest).
func move(dst []byte, src *byte) {
	copy(dst, unsafe.Slice(src, len(dst)))
}
