package model

import (
	"context"
	"runtime"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// BenchmarkSilero compares one Silero VAD frame through bare
// onnxruntime_go (an AdvancedSession with preallocated tensors, the least
// a Go caller can do) with model.Infer on tensors (validation, tensor
// conversion, output copies) and on raw PCM (plus the WASM
// pre-processor). Both sessions use the same thread settings; ort-bare
// runs twice, before and after, to show the noise of a shared machine.
// (The pre-processor alone, native beside WASM, is BenchmarkPre in
// testbed/bundles/silero-vad/pre/frame.)
func BenchmarkSilero(b *testing.B) {
	if err := onnx.Init(testenv.ORTLibrary(b)); err != nil {
		b.Fatal(err)
	}
	frameData := testbundle.TwoSine()

	bare := func(b *testing.B) {
		input, err := ort.NewTensor(ort.NewShape(1, 512), append([]float32(nil), frameData...))
		if err != nil {
			b.Fatal(err)
		}
		defer input.Destroy()
		state, err := ort.NewEmptyTensor[float32](ort.NewShape(2, 1, 128))
		if err != nil {
			b.Fatal(err)
		}
		defer state.Destroy()
		sr, err := ort.NewTensor(ort.NewShape(1), []int64{16000})
		if err != nil {
			b.Fatal(err)
		}
		defer sr.Destroy()
		output, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 1))
		if err != nil {
			b.Fatal(err)
		}
		defer output.Destroy()
		stateN, err := ort.NewEmptyTensor[float32](ort.NewShape(2, 1, 128))
		if err != nil {
			b.Fatal(err)
		}
		defer stateN.Destroy()
		so, err := ort.NewSessionOptions()
		if err != nil {
			b.Fatal(err)
		}
		defer so.Destroy()
		must(b, so.SetIntraOpNumThreads(min(2, runtime.NumCPU())))
		must(b, so.SetInterOpNumThreads(1))
		must(b, so.SetExecutionMode(ort.ExecutionModeSequential))
		sess, err := ort.NewAdvancedSession(testenv.SileroModel(b),
			[]string{"input", "state", "sr"}, []string{"output", "stateN"},
			[]ort.Value{input, state, sr}, []ort.Value{output, stateN}, so)
		if err != nil {
			b.Fatal(err)
		}
		defer sess.Destroy()
		for b.Loop() {
			if err := sess.Run(); err != nil {
				b.Fatal(err)
			}
		}
		if got := output.GetData()[0]; got < 0.069 || got > 0.0692 {
			b.Fatalf("output %v", got)
		}
	}
	b.Run("ort-bare", bare)

	md := load(b, testbundle.SileroDir(b), sileroManifest())
	ctx := context.Background()
	b.Run("model-infer-tensors", func(b *testing.B) {
		in := Input{Tensors: sileroTensors(frameData)}
		for b.Loop() {
			if _, err := md.Infer(ctx, in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ort-bare-again", bare)
	b.Run("model-infer-raw", func(b *testing.B) {
		in := Input{Raw: testbundle.PCM(frameData)}
		for b.Loop() {
			if _, err := md.Infer(ctx, in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}
