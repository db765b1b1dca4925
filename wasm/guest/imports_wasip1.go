//go:build wasip1

package guest

import "unsafe"

// The host functions of ABI version 1 (see wasm/abi and wasm/README.md).

//go:wasmimport kedge send
func hostSend(to unsafe.Pointer, toLen uint32, msg unsafe.Pointer, msgLen uint32) int32

//go:wasmimport kedge send_group
func hostSendGroup(group unsafe.Pointer, groupLen uint32, msg unsafe.Pointer, msgLen uint32) int32

//go:wasmimport kedge reply
func hostReply(msg unsafe.Pointer, msgLen uint32) int32

//go:wasmimport kedge reply_content
func hostReplyContent(content unsafe.Pointer, contentLen uint32) int32

//go:wasmimport kedge store_get
func hostStoreGet(key unsafe.Pointer, keyLen uint32, out unsafe.Pointer, outCap uint32) int32

//go:wasmimport kedge store_put
func hostStorePut(key unsafe.Pointer, keyLen uint32, val unsafe.Pointer, valLen uint32, rv int64) int32

//go:wasmimport kedge store_delete
func hostStoreDelete(key unsafe.Pointer, keyLen uint32) int32

//go:wasmimport kedge store_list
func hostStoreList(query unsafe.Pointer, queryLen uint32, out unsafe.Pointer, outCap uint32) int32

//go:wasmimport kedge log
func hostLog(level int32, msg unsafe.Pointer, msgLen uint32) int32

//go:wasmimport kedge now
func hostNow() int64

//go:wasmimport kedge last_error
func hostLastError(out unsafe.Pointer, outCap uint32) int32

//go:wasmimport kedge fail
func hostFail(msg unsafe.Pointer, msgLen uint32)
