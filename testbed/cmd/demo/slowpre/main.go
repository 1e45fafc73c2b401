//go:build wasip1

// Command slowpre is the demo's deliberately bad Silero VAD
// pre-processor: it computes exactly what the real one computes (package
// frame, so the bundle's smoke vectors pass and every answer is right),
// but first burns a fixed amount of CPU on every call, some 20 to 40 ms on
// a desktop-class core, where the real one takes well under a
// millisecond. A bundle built with it installs fine and answers
// correctly; only its latency gives it away, which is what the rollout's
// latencyP95 gate is there to catch (make demo, testbed/cmd/demo).
//
// Build it as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath \
//	    -o slow-pre.wasm ./testbed/cmd/demo/slowpre
package main

import (
	"errors"

	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

// burnRounds is the work wasted per call: xorshift rounds. The count is
// fixed rather than timed because a WASI guest's clock may be virtual.
const burnRounds = 12_000_000

func init() { guest.Handle(process) }

func main() {}

func process(in []tensor.Tensor) ([]tensor.Tensor, error) {
	if burn(burnRounds) == 0 {
		// Never: xorshift64 does not reach 0 from a non-zero seed. The
		// check keeps the compiler from dropping the loop.
		return nil, errors.New("slowpre: burn reached zero")
	}
	return frame.Process(in)
}

// burn runs n rounds of xorshift64 and returns the state.
func burn(n int) uint64 {
	x := uint64(0x9E3779B97F4A7C15)
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}
