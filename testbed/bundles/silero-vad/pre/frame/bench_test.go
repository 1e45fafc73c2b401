package frame_test

import (
	"context"
	"testing"

	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

// BenchmarkPre compares the Silero pre-processor as WASM (through the
// processor pool: encode, copy in, run, copy out, decode) with the same
// transform in Go compiled natively (package frame), on the two-sine
// frame. The shipped module is C (../pre.c, built with clang); wasm-go is
// the Go build of package frame (../goguest), kept for reference: Go's
// wasm code generation and the Go guest runtime's fixed cost per call make
// it several times slower.
func BenchmarkPre(b *testing.B) {
	raw := twoSine()
	b.Run("native", func(b *testing.B) {
		in := []tensor.Tensor{processor.RawTensor(raw)}
		for b.Loop() {
			if _, err := frame.Process(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	wasm := func(dir string) func(b *testing.B) {
		return func(b *testing.B) {
			p := load(b, dir)
			ctx := context.Background()
			for b.Loop() {
				if _, err := p.ProcessRaw(ctx, raw); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("wasm-c", wasm(cModule))
	b.Run("wasm-go", wasm(goModule))
}
