//go:build wasip1

// Command goguest is the Silero VAD pre-processor built from Go: package
// frame bound to the processor ABI (docs/wasm-abi.md) by the Go guest SDK,
// shared/processor/guest. The bundle ships the C build one directory up
// (pre.c), which computes the same and runs several times faster; this
// one is kept as the reference the tests and BenchmarkPre compare it with,
// and as an example of a processor written in Go. Build it as a WASI
// reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath \
//	    -o goguest.wasm ./testbed/bundles/silero-vad/pre/goguest
package main

import (
	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

func init() { guest.Handle(frame.Process) }

func main() {}
