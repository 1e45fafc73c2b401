//go:build wasip1

// Command slowpre is the Silero VAD pre-processor made slow on purpose
// (see package testbed/bundles/variants): it burns burnRounds xorshift
// rounds of CPU, then runs the same transform as the shipped one.
package main

import (
	"errors"

	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

// burnRounds is variants.BurnRounds.
const burnRounds = 20_000_000

func init() { guest.Handle(process) }

func process(in []tensor.Tensor) ([]tensor.Tensor, error) {
	x := uint64(len(in))<<32 | 0x9e3779b9
	for range burnRounds {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	// xorshift never reaches 0 from a non-zero seed; the test keeps the
	// compiler from dropping the loop.
	if x == 0 {
		return nil, errors.New("slowpre: unreachable")
	}
	return frame.Process(in)
}

func main() {}
