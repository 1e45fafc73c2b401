//go:build wasip1

//lint:file-ignore U1000 the ef_* functions are called by the host through //go:wasmexport

package guest

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Func is a processor: it maps one tensor list to another. Returning an
// error rejects the input (the host reports the message to the caller); a
// panic crashes the module instance, which the host discards.
type Func func(in []tensor.Tensor) ([]tensor.Tensor, error)

var (
	handler Func
	input   []byte // owned by the host between ef_alloc and the next ef_alloc
	output  []byte // valid until the next call into the module
)

// Handle registers f as the module's processor. Call it from an init
// function: the host calls ef_process only after the module's
// initialization (_initialize) has run.
func Handle(f Func) { handler = f }

//go:wasmexport ef_abi_version
func abiVersion() uint32 { return ABIVersion }

// ef_alloc returns a buffer of size bytes for the host to write the input
// into. It stays valid, and may be reused by the host for inputs of at most
// size bytes, until the next ef_alloc call.
//
//go:wasmexport ef_alloc
func alloc(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	if uint32(cap(input)) < size {
		input = make([]byte, size)
	}
	input = input[:cap(input)]
	return addr(input)
}

// ef_process decodes the tensor list at ptr (inside the ef_alloc buffer),
// runs the handler and returns the encoded result as ptr<<32 | len, or an
// error message with ErrorFlag set in len.
//
//go:wasmexport ef_process
func process(ptr, n uint32) uint64 {
	base := addr(input)
	if len(input) == 0 || ptr < base || uint64(ptr-base)+uint64(n) > uint64(len(input)) {
		return fail(fmt.Sprintf("input region [%d, +%d) is not inside the ef_alloc buffer", ptr, n))
	}
	if handler == nil {
		return fail("no processor registered: call guest.Handle from an init function")
	}
	in, err := tensor.DecodeBinary(input[ptr-base : ptr-base+n])
	if err != nil {
		return fail("decoding input: " + err.Error())
	}
	out, err := handler(in)
	// Let the runtime's goroutines (the GC's mark workers above all) run:
	// an export returns to the host without scheduling them, and a
	// module that never yields never finishes a GC cycle.
	runtime.Gosched()
	if err != nil {
		return fail(err.Error())
	}
	output, err = appendTensors(output[:0], out)
	if err != nil {
		return fail("encoding output: " + err.Error())
	}
	return pack(output, 0)
}

func fail(msg string) uint64 {
	output = append(output[:0], msg...)
	return pack(output, ErrorFlag)
}

func pack(b []byte, flag uint32) uint64 {
	if len(b) == 0 {
		return uint64(flag)
	}
	return uint64(addr(b))<<32 | uint64(uint32(len(b))|flag)
}

// addr is the linear-memory address of b's first byte (wasm32 pointers fit
// in 32 bits).
func addr(b []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}
