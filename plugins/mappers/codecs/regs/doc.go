// Package regs is the register codec, regs-codec: plain register words ↔ numbers and booleans, the
// data type from the visitor's dataType or, without one, from the model property's type (package
// words; its WASM build is wasm/examples/regscodec). The package's tests run the WASM build behind
// the mapper SDK's codec requests.
package regs
