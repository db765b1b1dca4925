//go:build wasip1

package guest

import (
	"runtime/debug"
	"strconv"
	"unsafe"

	"github.com/kedge-io/kedge/wasm/abi"
)

var (
	// in is the exchange buffer: the host writes the init block and each message into it.
	in []byte
	// strings holds the strings of the messages handed to Handle.
	strings abi.Arena
)

//go:wasmexport kedge_abi_version
func exportVersion() int32 { return abi.Version }

// exportBuffer returns the exchange buffer's address, growing it to at least size bytes. The host
// caches the address until it needs more room, so the buffer only moves here.
//
//go:wasmexport kedge_buffer
func exportBuffer(size int32) uint32 {
	if size < 0 {
		return 0
	}
	if cap(in) < int(size) || cap(in) == 0 {
		in = make([]byte, max(int(size), 4096))
	}
	in = in[:cap(in)]
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(in))))
}

//go:wasmexport kedge_init
func exportInit(n int32) (s int32) {
	if n < 0 || int(n) > len(in) {
		return fail(abi.Invalid, "init: length "+strconv.Itoa(int(n))+" exceeds the exchange buffer")
	}
	block, err := abi.DecodeInit(in[:n])
	if err != nil {
		return fail(abi.Invalid, err.Error())
	}
	name, node, group = block.Name, block.Node, block.Group
	if module == nil {
		return fail(abi.Failed, "no module registered: call guest.Register from an init function")
	}
	defer catch(&s)
	return result(module.Init(block.Config))
}

//go:wasmexport kedge_handle
func exportHandle(n int32) (s int32) {
	if n < 0 || int(n) > len(in) {
		return fail(abi.Invalid, "handle: length "+strconv.Itoa(int(n))+" exceeds the exchange buffer")
	}
	var err error
	current, err = abi.DecodeMessageView(in[:n], &strings)
	if err != nil {
		current.Route.Source = outside
		return fail(abi.Invalid, err.Error())
	}
	defer catch(&s) // also marks the end of the call for Reply
	return result(module.Handle(current))
}

// result is inlined (a call costs a guest under termination checks ~40 ns); failed is not.
func result(err error) int32 {
	if err != nil {
		return failed(err)
	}
	return int32(abi.OK)
}

func failed(err error) int32 { return fail(abi.Failed, err.Error()) }

// catch turns a panic into a failed status the host reports for this call only; the instance keeps
// its state, like a builtin module whose Handle panicked.
func catch(s *int32) {
	current.Route.Source = outside
	if r := recover(); r != nil {
		*s = fail(abi.Failed, "panic: "+describe(r)+"\n"+string(debug.Stack()))
	}
}

func fail(s abi.Status, msg string) int32 {
	hostFail(str(msg), uint32(len(msg)))
	return int32(s)
}

func describe(r any) string {
	switch v := r.(type) {
	case error:
		return v.Error()
	case string:
		return v
	case interface{ String() string }:
		return v.String()
	}
	return "a value that is neither an error nor a string"
}
