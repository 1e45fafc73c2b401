//go:build wasip1

// Command pre is the Silero VAD bundle's WASM pre-processor: one frame of
// 16-bit little-endian PCM at 16 kHz (a UINT8 tensor "raw" of 1024 bytes)
// in; the model's inputs (input, state, sr) and the frame's drift
// features out. The transform is package frame; this file only binds it
// to the processor ABI (docs/wasm-abi.md). Build it as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath \
//	    -o testbed/bundles/silero-vad/pre.wasm ./testbed/bundles/silero-vad/pre
package main

import (
	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

func init() { guest.Handle(frame.Process) }

func main() {}
