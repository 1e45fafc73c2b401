//go:build wasip1

// Command limiter is the Silero VAD pre-processor with a limiter bug (see
// package testbed/bundles/variants): frames peaking at threshold or more
// reach the model attenuated by gain; the others are transformed exactly
// as by the shipped pre-processor.
package main

import (
	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

// threshold and gain are variants.LimiterThreshold and LimiterGain.
const (
	threshold = 0.9
	gain      = 0.1
)

func init() { guest.Handle(process) }

func process(in []tensor.Tensor) ([]tensor.Tensor, error) {
	out, err := frame.Process(in)
	if err != nil {
		return nil, err
	}
	for _, t := range out {
		x, ok := t.Data.([]float32)
		if t.Name != "input" || !ok {
			continue
		}
		var peak float32
		for _, v := range x {
			peak = max(peak, v, -v)
		}
		if peak >= threshold {
			for i := range x {
				x[i] *= gain
			}
		}
	}
	return out, nil
}

func main() {}
