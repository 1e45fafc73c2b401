package api

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// sileroTwoSine is Silero VAD v5's output for the two-sine frame with zero
// state (shared/DESIGN.md §10).
const sileroTwoSine = 0.0690874

// wasmCache is a WASM compilation cache shared by the tests of one run.
var wasmCache string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "api-wasm-cache-")
	if err != nil {
		panic(err)
	}
	wasmCache = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sileroBundle lays out an unpacked Silero VAD bundle in a temporary
// directory: the real model (make deps) and the real PCM pre-processor,
// built from testbed/bundles/silero-vad/pre.
func sileroBundle(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.Symlink(testenv.SileroModel(tb), filepath.Join(dir, "model.onnx")); err != nil {
		tb.Fatal(err)
	}
	wasm, err := os.ReadFile(testenv.BuildWASM(tb, "testbed/bundles/silero-vad/pre"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pre.wasm"), wasm, 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// sileroManifest describes sileroBundle's files as bundle version.
func sileroManifest(version string) *bundle.Manifest {
	return &bundle.Manifest{
		SchemaVersion: bundle.SchemaVersion,
		Name:          "silero-vad",
		Version:       version,
		Runtime: bundle.Runtime{
			Model: "model.onnx",
			Inputs: []tensor.Spec{
				{Name: "input", Datatype: tensor.FP32, Shape: []int64{-1, 512}},
				{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, -1, 128}},
				{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}},
			},
			Outputs: []tensor.Spec{
				{Name: "output", Datatype: tensor.FP32, Shape: []int64{-1, 1}},
				{Name: "stateN", Datatype: tensor.FP32, Shape: []int64{2, -1, 128}},
			},
			Pre:                &bundle.Processor{Module: "pre.wasm"},
			ExecutionProviders: []string{"cpu"},
		},
	}
}

// sileroPredictor loads the real Silero VAD v5 bundle, as bundle version,
// with the real ONNX Runtime.
func sileroPredictor(tb testing.TB, version string) *model.Model {
	tb.Helper()
	m, err := model.Load(context.Background(), sileroBundle(tb), sileroManifest(version), model.Options{
		ORTLibrary: testenv.ORTLibrary(tb),
		WASM:       processor.Config{CacheDir: wasmCache},
	})
	if err != nil {
		tb.Fatalf("loading the Silero bundle: %v", err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// pcm quantizes samples to the pre-processor's input: 16-bit
// little-endian PCM.
func pcm(x []float32) []byte {
	b := make([]byte, 2*len(x))
	for i, v := range x {
		s := math.Round(float64(v) * 32768)
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(max(-32768, min(32767, s)))))
	}
	return b
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-5 }
