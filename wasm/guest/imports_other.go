//go:build !wasip1

package guest

import (
	"time"
	"unsafe"

	"github.com/kedge-io/kedge/wasm/abi"
)

// Outside a WASM host every call fails, so a guest package still compiles for vet and tools.

const notWasm = "guest: not running in a Kedge WASM host (build with GOOS=wasip1 GOARCH=wasm)"

func unavailable() int32 { return -int32(abi.Internal) }

func hostSend(unsafe.Pointer, uint32, unsafe.Pointer, uint32) int32      { return unavailable() }
func hostSendGroup(unsafe.Pointer, uint32, unsafe.Pointer, uint32) int32 { return unavailable() }
func hostReply(unsafe.Pointer, uint32) int32                             { return unavailable() }
func hostReplyContent(unsafe.Pointer, uint32) int32                      { return unavailable() }
func hostStoreGet(unsafe.Pointer, uint32, unsafe.Pointer, uint32) int32  { return unavailable() }
func hostStorePut(unsafe.Pointer, uint32, unsafe.Pointer, uint32, int64) int32 {
	return unavailable()
}
func hostStoreDelete(unsafe.Pointer, uint32) int32                       { return unavailable() }
func hostStoreList(unsafe.Pointer, uint32, unsafe.Pointer, uint32) int32 { return unavailable() }
func hostLog(int32, unsafe.Pointer, uint32) int32                        { return unavailable() }
func hostNow() int64                                                     { return time.Now().UnixNano() }

func hostLastError(out unsafe.Pointer, outCap uint32) int32 {
	if int(outCap) >= len(notWasm) {
		copy(unsafe.Slice((*byte)(out), outCap), notWasm)
	}
	return int32(len(notWasm))
}
