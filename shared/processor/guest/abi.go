// Package guest is the Go side of the edgefleet WASM processor ABI (see
// docs/wasm-abi.md): a processor written in Go imports it, registers its
// function with Handle from an init function, and is built as a WASI
// reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o pre.wasm ./pre
//
// The package exports ef_abi_version, ef_alloc and ef_process for the
// module; the exports exist only in wasip1 builds. Only the constants below
// build for other platforms, so the host can check it agrees with them.
package guest

// ABIVersion is the ABI version this package implements, returned by the
// module's ef_abi_version export.
const ABIVersion = 1

// ErrorFlag is set in the length half of ef_process's result when the
// region holds a UTF-8 error message instead of an encoded tensor list.
const ErrorFlag = 1 << 31
