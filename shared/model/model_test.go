package model

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// The Silero bundle's pre-processor (testbed/bundles/silero-vad/pre)
// takes one frame of 16-bit PCM and gives the model's inputs and a
// "features" tensor of six drift features. Its native reference, package
// frame there, is not imported: shared/ imports nothing under testbed/
// (docs/architecture.md, "Rooms and imports").
const (
	frameSamples = 512
	frameBytes   = 2 * frameSamples
	featuresName = "features"
	featureCount = 6
)

// cacheDir is a WASM compilation cache shared by the tests of one run.
var cacheDir string

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithTempDir(m, "model-wasm-cache-", &cacheDir))
}

// dequantized is what the pre-processor makes of testbundle.PCM(x).
func dequantized(x []float32) []float32 { return samples(testbundle.PCM(x)) }

// samples decodes 16-bit little-endian PCM to samples in [-1, 1), as the
// pre-processor does (x/32768).
func samples(b []byte) []float32 {
	out := make([]float32, len(b)/2)
	for i := range out {
		out[i] = float32(int16(binary.LittleEndian.Uint16(b[2*i:]))) / 32768
	}
	return out
}

func sileroTensors(frameData []float32) []tensor.Tensor {
	return []tensor.Tensor{
		{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, 512}, Data: frameData},
		{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, 1, 128}, Data: make([]float32, 256)},
		{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}},
	}
}

func scalarOutput(v float32) tensor.Tensor {
	return tensor.Tensor{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{v}}
}

// sileroManifest describes testbundle.SileroDir's files, with one tensor
// and one raw smoke vector.
func sileroManifest() *bundle.Manifest {
	m := testbundle.SileroManifest("5.0.0")
	m.Runtime.ExecutionProviders = []string{"cuda", "cpu"}
	m.Smoke = []bundle.SmokeVector{
		{
			Name:      "two-sine tensors",
			Inputs:    sileroTensors(testbundle.TwoSine()),
			Expected:  []tensor.Tensor{scalarOutput(testbundle.SileroOutput)},
			Tolerance: bundle.Tolerance{Abs: 1e-5},
		},
		{
			Name:      "two-sine pcm",
			Raw:       testbundle.PCM(testbundle.TwoSine()),
			Expected:  []tensor.Tensor{scalarOutput(testbundle.SileroOutput)},
			Tolerance: bundle.Tolerance{Abs: 1e-3},
		},
	}
	return m
}

func testOptions() Options {
	return Options{WASM: processor.Config{CacheDir: cacheDir}}
}

func load(t testing.TB, dir string, m *bundle.Manifest) *Model {
	t.Helper()
	opts := testOptions()
	opts.ORTLibrary = testenv.ORTLibrary(t)
	md, err := Load(context.Background(), dir, m, opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { md.Close() })
	return md
}

func checkOptions(t testing.TB) Options {
	opts := testOptions()
	opts.ORTLibrary = testenv.ORTLibrary(t)
	return opts
}

func TestCheckPasses(t *testing.T) {
	dir := testbundle.SileroDir(t)
	if err := Check(context.Background(), dir, sileroManifest(), checkOptions(t)); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestCheckManifestErrors(t *testing.T) {
	dir := testbundle.SileroDir(t)
	tests := []struct {
		name   string
		mutate func(m *bundle.Manifest)
		want   error
		msg    string
	}{
		{"input name", func(m *bundle.Manifest) { m.Runtime.Inputs[0].Name = "audio" }, ErrManifest, `input "input"`},
		{"input dtype", func(m *bundle.Manifest) { m.Runtime.Inputs[2].Datatype = tensor.Int32 }, ErrManifest, `input "sr" is declared INT32, the model takes INT64`},
		{"input rank", func(m *bundle.Manifest) { m.Runtime.Inputs[0].Shape = []int64{512} }, ErrManifest, `input "input" is declared with shape [512] (rank 1)`},
		{"dynamic where fixed", func(m *bundle.Manifest) { m.Runtime.Inputs[1].Shape = []int64{-1, -1, 128} }, ErrManifest, `input "state": dimension 0 is declared dynamic, the model fixes it to 2`},
		{"wrong fixed dim", func(m *bundle.Manifest) { m.Runtime.Inputs[1].Shape = []int64{2, -1, 64} }, ErrManifest, `input "state": dimension 2 is declared 64, the model's is 128`},
		{"zero dim", func(m *bundle.Manifest) { m.Runtime.Inputs[0].Shape = []int64{0, 512} }, ErrManifest, `dimension 0 is declared 0`},
		{"missing input", func(m *bundle.Manifest) { m.Runtime.Inputs = m.Runtime.Inputs[:2] }, ErrManifest, `input "sr" (INT64 []) is not declared`},
		{"extra input", func(m *bundle.Manifest) {
			m.Runtime.Inputs = append(m.Runtime.Inputs, tensor.Spec{Name: "gain", Datatype: tensor.FP32, Shape: []int64{1}})
		}, ErrManifest, `input "gain" is declared but the model has no such input`},
		{"output dtype", func(m *bundle.Manifest) { m.Runtime.Outputs[0].Datatype = tensor.FP64 }, ErrManifest, `output "output" is declared FP64`},
		{"output rank", func(m *bundle.Manifest) { m.Runtime.Outputs[0].Shape = []int64{1} }, ErrManifest, `output "output"`},
		{"output scalar lie", func(m *bundle.Manifest) { m.Runtime.Outputs[0].Shape = []int64{-1, 2} }, ErrManifest, `output "output": dimension 1 is declared 2, the model's is 1`},
		{"duplicate", func(m *bundle.Manifest) { m.Runtime.Outputs[1] = m.Runtime.Outputs[0] }, ErrManifest, `output "output" is declared twice`},
		{"model path", func(m *bundle.Manifest) { m.Runtime.Model = "../model.onnx" }, ErrManifest, "leaves the bundle directory"},
		{"model missing", func(m *bundle.Manifest) { m.Runtime.Model = "nope.onnx" }, ErrRuntime, "nope.onnx"},
		{"pre missing", func(m *bundle.Manifest) { m.Runtime.Pre.Module = "nope.wasm" }, ErrProcessor, "nope.wasm"},
		{"provider", func(m *bundle.Manifest) { m.Runtime.ExecutionProviders = []string{"warp-drive"} }, onnx.ErrProvider, "warp-drive"},
		{"smoke value", func(m *bundle.Manifest) { m.Smoke[0].Expected[0].Data = []float32{0.5} }, ErrSmoke, `vector "two-sine tensors": tensor "output": element 0 is 0.069`},
		{"smoke raw value", func(m *bundle.Manifest) { m.Smoke[1].Expected[0].Data = []float32{0.9} }, ErrSmoke, `vector "two-sine pcm"`},
		{"smoke shape", func(m *bundle.Manifest) {
			m.Smoke[0].Expected[0].Shape = []int64{1}
			m.Smoke[0].Expected[0].Data = []float32{0.07}
		}, ErrSmoke, "shape mismatch"},
		{"smoke output name", func(m *bundle.Manifest) { m.Smoke[0].Expected[0].Name = "prob" }, ErrSmoke, `expected output "prob" not produced`},
		{"smoke bad input", func(m *bundle.Manifest) { m.Smoke[0].Inputs[2].Data = []int64{16000, 8000} }, ErrSmoke, `tensor "sr"`},
		{"smoke raw length", func(m *bundle.Manifest) { m.Smoke[1].Raw = m.Smoke[1].Raw[:100] }, ErrInput, "100 bytes of PCM, want exactly 1024"},
		{"smoke both", func(m *bundle.Manifest) { m.Smoke[0].Raw = []byte{1, 2} }, ErrInput, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := sileroManifest()
			tt.mutate(m)
			err := Check(context.Background(), dir, m, checkOptions(t))
			t.Log(err)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Check error = %v\nwant %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestInferRawMatchesTensors(t *testing.T) {
	md := load(t, testbundle.SileroDir(t), sileroManifest())
	ctx := context.Background()
	raw, err := md.Infer(ctx, Input{Raw: testbundle.PCM(testbundle.TwoSine())})
	if err != nil {
		t.Fatal(err)
	}
	quantized, err := md.Infer(ctx, Input{Tensors: sileroTensors(dequantized(testbundle.TwoSine()))})
	if err != nil {
		t.Fatal(err)
	}
	exact, err := md.Infer(ctx, Input{Tensors: sileroTensors(testbundle.TwoSine())})
	if err != nil {
		t.Fatal(err)
	}
	got := raw.Tensors[0].Data.([]float32)[0]
	if q := quantized.Tensors[0].Data.([]float32)[0]; got != q {
		t.Errorf("raw path %v != tensor path on the same quantized samples %v", got, q)
	}
	if e := exact.Tensors[0].Data.([]float32)[0]; math.Abs(float64(got-e)) > 1e-3 || math.Abs(float64(e)-testbundle.SileroOutput) > 1e-5 {
		t.Errorf("raw path %v, tensor path %v, want both ≈ %v", got, e, testbundle.SileroOutput)
	}
	if len(raw.Features) != 1 || raw.Features[0].Name != featuresName {
		t.Fatalf("features = %+v, want one %q tensor", raw.Features, featuresName)
	}
	if want := []int64{1, featureCount}; raw.Features[0].Shape[0] != want[0] || raw.Features[0].Shape[1] != want[1] {
		t.Errorf("features shape = %v, want %v", raw.Features[0].Shape, want)
	}
	if len(exact.Features) != 0 {
		t.Errorf("tensor request returned features %v", exact.Features)
	}
	if md.Provider() != "cpu" {
		t.Errorf("Provider() = %q", md.Provider())
	}
	t.Logf("raw %v, exact %v, features %v", got, exact.Tensors[0].Data, raw.Features[0].Data)
}

// TestPreOutputs checks what the loaded model's WASM pre-processor makes
// of PCM: exactly the model's inputs (the samples over 32768, a zero
// state, the sample rate) and a features tensor of finite values. That the
// features are the native transform's, and that the model answers raw PCM
// as it answers the native transform's inputs, is tested with the
// transform (TestModelMatchesNative in
// testbed/bundles/silero-vad/pre/frame).
func TestPreOutputs(t *testing.T) {
	md := load(t, testbundle.SileroDir(t), sileroManifest())
	for _, in := range [][]byte{testbundle.PCM(testbundle.TwoSine()), make([]byte, frameBytes), testbundle.PCM(dequantized(testbundle.TwoSine()))[:frameBytes]} {
		got, err := md.pre.ProcessRaw(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		want := sileroTensors(samples(in))
		if len(got) != len(want)+1 {
			t.Fatalf("WASM gives %d tensors, want %d and the features", len(got), len(want))
		}
		for i := range want {
			if err := tensor.Close(got[i], want[i], 0, 0); err != nil || got[i].Name != want[i].Name {
				t.Errorf("tensor %d (%s): %q, %v", i, want[i].Name, got[i].Name, err)
			}
		}
		f := got[len(want)]
		if f.Name != featuresName || f.Datatype != tensor.FP32 || len(f.Shape) != 2 || f.Shape[0] != 1 || f.Shape[1] != featureCount {
			t.Fatalf("features tensor %q %s %v, want %q FP32 [1 %d]", f.Name, f.Datatype, f.Shape, featuresName, featureCount)
		}
		if err := f.Check(); err != nil {
			t.Error(err)
		}
		for k, v := range f.Data.([]float32) {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Errorf("feature %d is %v", k, v)
			}
		}
	}
}

func TestInferErrors(t *testing.T) {
	md := load(t, testbundle.SileroDir(t), sileroManifest())
	good := func() []tensor.Tensor { return sileroTensors(testbundle.TwoSine()) }
	nan := good()
	nan[0].Data.([]float32)[7] = float32(math.NaN())
	tests := []struct {
		name string
		in   Input
		want []error
		msg  string
	}{
		{"shape", Input{Tensors: func() []tensor.Tensor { in := good(); in[0].Shape = []int64{2, 256}; return in }()}, []error{ErrInput, tensor.ErrShape}, `tensor "input"`},
		{"rank", Input{Tensors: func() []tensor.Tensor { in := good(); in[2].Shape = []int64{}; return in }()}, []error{ErrInput, tensor.ErrShape}, `tensor "sr"`},
		{"dtype", Input{Tensors: func() []tensor.Tensor {
			in := good()
			in[1] = tensor.Tensor{Name: "state", Datatype: tensor.FP64, Shape: []int64{2, 1, 128}, Data: make([]float64, 256)}
			return in
		}()}, []error{ErrInput, tensor.ErrDatatype}, `tensor "state"`},
		{"nan", Input{Tensors: nan}, []error{ErrInput, tensor.ErrNotFinite}, "element 7"},
		{"missing", Input{Tensors: good()[:2]}, []error{ErrInput, tensor.ErrName}, `"sr"`},
		{"extra", Input{Tensors: append(good(), tensor.Tensor{Name: "x", Datatype: tensor.FP32, Shape: []int64{1}, Data: []float32{1}})}, []error{ErrInput, tensor.ErrName}, `"x"`},
		{"twice", Input{Tensors: append(good(), good()[0])}, []error{ErrInput, tensor.ErrName}, "twice"},
		{"data", Input{Tensors: func() []tensor.Tensor { in := good(); in[0].Data = []float32{1}; return in }()}, []error{ErrInput, tensor.ErrShape}, `tensor "input"`},
		{"both", Input{Tensors: good(), Raw: testbundle.PCM(testbundle.TwoSine())}, []error{ErrInput}, "not both"},
		{"nothing", Input{}, []error{ErrInput}, "no input"},
		{"raw length", Input{Raw: make([]byte, 1000)}, []error{ErrInput, processor.ErrRejected}, "1000 bytes of PCM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := md.Infer(context.Background(), tt.in)
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("Infer error = %v, want %v", err, want)
				}
			}
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Infer error = %v, want it to mention %q", err, tt.msg)
			}
		})
	}
	// The model keeps serving.
	if _, err := md.Infer(context.Background(), Input{Raw: testbundle.PCM(testbundle.TwoSine())}); err != nil {
		t.Fatal(err)
	}
}

func TestAllowNonFinite(t *testing.T) {
	m := sileroManifest()
	m.Runtime.AllowNonFinite = true
	md := load(t, testbundle.SileroDir(t), m)
	in := sileroTensors(testbundle.TwoSine())
	in[0].Data.([]float32)[3] = float32(math.Inf(1))
	if _, err := md.Infer(context.Background(), Input{Tensors: in}); err != nil {
		t.Fatalf("Infer with Inf allowed: %v", err)
	}
}

func TestNoPreProcessor(t *testing.T) {
	m := sileroManifest()
	m.Runtime.Pre = nil
	m.Smoke = m.Smoke[:1]
	md := load(t, testbundle.SileroDir(t), m)
	if _, err := md.Infer(context.Background(), Input{Raw: testbundle.PCM(testbundle.TwoSine())}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "no pre-processor") {
		t.Fatalf("raw input without a pre-processor: %v", err)
	}
	if err := md.Smoke(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// watModule compiles one of shared/processor's wat test modules.
func watModule(t testing.TB, name string) []byte {
	t.Helper()
	bin, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Fatalf("wat2wasm not found (apt-get install wabt): %v", err)
	}
	out := filepath.Join(t.TempDir(), name+".wasm")
	src := filepath.Join(testenv.Root(t), "shared", "processor", "testdata", name+".wat")
	if b, err := exec.Command(bin, src, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm %s: %v\n%s", name, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPostProcessor(t *testing.T) {
	dir := testbundle.SileroDir(t)
	for name, wasm := range map[string][]byte{"echo.wasm": watModule(t, "echo"), "trap.wasm": watModule(t, "trap")} {
		if err := os.WriteFile(filepath.Join(dir, name), wasm, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := sileroManifest()
	m.Runtime.Post = &bundle.Processor{Module: "echo.wasm"}
	if err := Check(context.Background(), dir, m, checkOptions(t)); err != nil {
		t.Fatalf("Check with an echo post-processor: %v", err)
	}
	m.Runtime.Post.Module = "trap.wasm"
	md := load(t, dir, m)
	_, err := md.Infer(context.Background(), Input{Raw: testbundle.PCM(testbundle.TwoSine())})
	if !errors.Is(err, ErrProcessor) || !errors.Is(err, processor.ErrTrap) || !strings.Contains(err.Error(), "post-processor") {
		t.Fatalf("trapping post-processor: %v", err)
	}
}

func TestProviders(t *testing.T) {
	dir := testbundle.SileroDir(t)
	m := sileroManifest()
	m.Runtime.ExecutionProviders = []string{"tensorrt", "cuda"}
	if md := load(t, dir, m); md.Provider() != "cpu" {
		t.Errorf("manifest [tensorrt cuda]: Provider() = %q, want cpu", md.Provider())
	}
	// A device override replaces the manifest's list, unknown names and all.
	m.Runtime.ExecutionProviders = []string{"warp-drive"}
	opts := checkOptions(t)
	opts.Providers = []string{"", "cuda", "cpu"}
	md, err := Load(context.Background(), dir, m, opts)
	if err != nil {
		t.Fatalf("Load with device override: %v", err)
	}
	defer md.Close()
	if md.Provider() != "cpu" {
		t.Errorf("Provider() = %q", md.Provider())
	}
}

func TestConcurrentInfer(t *testing.T) {
	md := load(t, testbundle.SileroDir(t), sileroManifest())
	ctx := context.Background()
	want, err := md.Infer(ctx, Input{Raw: testbundle.PCM(testbundle.TwoSine())})
	if err != nil {
		t.Fatal(err)
	}
	wantOut := want.Tensors[0].Data.([]float32)[0]
	var eg errgroup.Group
	for g := range 6 {
		eg.Go(func() error {
			for n := range 15 {
				in := Input{Raw: testbundle.PCM(testbundle.TwoSine())}
				if (g+n)%2 == 0 {
					in = Input{Tensors: sileroTensors(dequantized(testbundle.TwoSine()))}
				}
				out, err := md.Infer(ctx, in)
				if err != nil {
					return err
				}
				if got := out.Tensors[0].Data.([]float32)[0]; got != wantOut {
					return errors.New("concurrent result differs")
				}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestClose(t *testing.T) {
	md := load(t, testbundle.SileroDir(t), sileroManifest())
	if err := md.Close(); err != nil {
		t.Fatal(err)
	}
	if err := md.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := md.Infer(context.Background(), Input{Raw: testbundle.PCM(testbundle.TwoSine())}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Infer after Close = %v, want ErrClosed", err)
	}
	if md.Manifest().Name != "silero-vad" {
		t.Error("Manifest()")
	}
}
