package frame_test

import (
	"context"
	"encoding/binary"
	"math"
	"reflect"
	"testing"

	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

// loadModel lays out the Silero bundle (testbundle.SileroDir: the real
// model, linked, and the C pre-processor built from source) and loads it
// as the agent and fleetctl do, through shared/model.
func loadModel(t testing.TB) *model.Model {
	t.Helper()
	md, err := model.Load(context.Background(), testbundle.SileroDir(t), testbundle.SileroManifest("5.0.0"), model.Options{
		ORTLibrary: testenv.ORTLibrary(t),
		WASM:       processor.Config{CacheDir: cacheDir},
	})
	if err != nil {
		t.Fatalf("model.Load: %v", err)
	}
	t.Cleanup(func() { md.Close() })
	return md
}

// twoSine is one frame of 220 Hz at half scale plus 1375 Hz at a tenth,
// as 16-bit PCM.
func twoSine() []byte {
	x := make([]float64, frame.Samples)
	for i := range x {
		fi := float64(i)
		x[i] = float64(float32(0.5*math.Sin(2*math.Pi*220*fi/frame.SampleRate) + 0.1*math.Sin(2*math.Pi*1375*fi/frame.SampleRate)))
	}
	b := make([]byte, frame.Bytes)
	for i, v := range x {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(max(-32768, min(32767, math.Round(v*32768))))))
	}
	return b
}

// TestModelMatchesNative holds the pre-processor of a model loaded by
// shared/model to the native transform: for every test frame (and the
// two-sine frame of shared/model's tests) the features a raw request
// returns are the native ones within featureTolerance, and the model
// answers the raw request exactly as it answers the native transform's
// model inputs.
func TestModelMatchesNative(t *testing.T) {
	md := loadModel(t)
	ctx := context.Background()
	fs := append(frames(), testFrame{"two-sine", twoSine()})
	for _, f := range fs {
		want, err := frame.Transform(f.raw)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := md.Infer(ctx, model.Input{Raw: f.raw})
		if err != nil {
			t.Fatalf("%s: raw request: %v", f.name, err)
		}
		native, err := md.Infer(ctx, model.Input{Tensors: want[:3]})
		if err != nil {
			t.Fatalf("%s: request with the native model inputs: %v", f.name, err)
		}
		if len(raw.Features) != 1 {
			t.Fatalf("%s: %d feature tensors, want 1", f.name, len(raw.Features))
		}
		compareOutputs(t, f.name, raw.Features, want[3:])
		if !reflect.DeepEqual(raw.Tensors, native.Tensors) {
			t.Fatalf("%s: the raw request's outputs differ from the native model inputs':\n got %v\nwant %v", f.name, raw.Tensors, native.Tensors)
		}
	}
	t.Logf("%d frames", len(fs))
}
