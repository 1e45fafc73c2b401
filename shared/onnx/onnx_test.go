package onnx

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// The two-sine frame and the Silero VAD v5 output for it with zero state,
// checked with onnxruntime_go and onnxruntime-node (see shared/DESIGN.md).
const (
	sileroTwoSine = 0.0690874
	sileroTol     = 1e-5
)

func sileroInputs(frame []float32) []tensor.Tensor {
	return []tensor.Tensor{
		{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, 512}, Data: frame},
		{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, 1, 128}, Data: make([]float32, 256)},
		{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}},
	}
}

func initORT(t testing.TB) {
	t.Helper()
	if err := Init(testenv.ORTLibrary(t)); err != nil {
		t.Fatalf("Init: %v", err)
	}
}

func newSilero(t testing.TB, opts Options) *Session {
	t.Helper()
	initORT(t)
	s, err := NewSession(testenv.SileroModel(t), opts)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestInitIdempotentAndExclusive(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Init(lib)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Init %d: %v", i, err)
		}
	}
	if err := Init(""); err != nil {
		t.Fatalf(`Init("") after Init: %v`, err)
	}
	// The same library through a symlink is the same library.
	link := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.Symlink(lib, link); err != nil {
		t.Fatal(err)
	}
	if err := Init(link); err != nil {
		t.Fatalf("Init via symlink: %v", err)
	}
	other := filepath.Join(t.TempDir(), "libother.so")
	if err := os.WriteFile(other, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Init(other)
	if !errors.Is(err, ErrLibrary) || !strings.Contains(err.Error(), "already initialized") {
		t.Fatalf("Init with another library: got %v, want ErrLibrary naming the conflict", err)
	}
	if err := Init(filepath.Join(t.TempDir(), "missing.so")); !errors.Is(err, ErrLibrary) {
		t.Fatalf("Init with a missing library: got %v, want ErrLibrary", err)
	}
	if v := Version(); !strings.HasPrefix(v, "1.24") {
		t.Errorf("Version() = %q, want 1.24.x", v)
	}
}

func TestDefaultLibraryPath(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	t.Run("repo cache", func(t *testing.T) {
		t.Setenv(EnvLibraryPath, "")
		got, err := DefaultLibraryPath()
		if err != nil {
			t.Fatal(err)
		}
		// Unless an installed library takes precedence, the walk up
		// from the package directory finds the repository cache.
		if _, err := os.Stat(filepath.Join(SystemLibraryDir, LibraryName())); err != nil && got != lib {
			t.Errorf("DefaultLibraryPath() = %q, want %q", got, lib)
		}
	})
	t.Run("env", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "custom.so")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvLibraryPath, p)
		if got, err := DefaultLibraryPath(); err != nil || got != p {
			t.Errorf("DefaultLibraryPath() = %q, %v; want %q", got, err, p)
		}
	})
	t.Run("env missing", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "missing.so")
		t.Setenv(EnvLibraryPath, p)
		_, err := DefaultLibraryPath()
		if !errors.Is(err, ErrLibrary) || !strings.Contains(err.Error(), p) {
			t.Errorf("DefaultLibraryPath() error = %v, want ErrLibrary naming %s", err, p)
		}
	})
	t.Run("system library path before the checkout", func(t *testing.T) {
		// The package directory is inside the checkout, so the repository
		// cache would be found too; the system library path comes first.
		if _, err := os.Stat(filepath.Join(SystemLibraryDir, LibraryName())); err == nil {
			t.Fatalf("%s exists on this machine; this case needs a machine without it", SystemLibraryDir)
		}
		dir := t.TempDir()
		p := filepath.Join(dir, LibraryName())
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvLibraryPath, "")
		t.Setenv("LD_LIBRARY_PATH", "/nonexistent-edgefleet:"+dir)
		if got, err := DefaultLibraryPath(); err != nil || got != p {
			t.Errorf("DefaultLibraryPath() = %q, %v; want %q from $LD_LIBRARY_PATH", got, err, p)
		}
	})
	t.Run("nowhere", func(t *testing.T) {
		t.Setenv(EnvLibraryPath, "")
		ld := filepath.Join(t.TempDir(), "ld")
		t.Setenv("LD_LIBRARY_PATH", ld)
		t.Chdir(t.TempDir())
		if _, err := os.Stat(filepath.Join(SystemLibraryDir, LibraryName())); err == nil {
			t.Fatalf("%s exists on this machine; this case needs a machine without it", SystemLibraryDir)
		}
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		_, err = DefaultLibraryPath()
		if !errors.Is(err, ErrLibrary) {
			t.Fatalf("DefaultLibraryPath() error = %v, want ErrLibrary", err)
		}
		for _, dir := range []string{filepath.Dir(exe), SystemLibraryDir, ld, "/usr/lib"} {
			if !strings.Contains(err.Error(), filepath.Join(dir, LibraryName())) {
				t.Errorf("DefaultLibraryPath() error = %v, want it to list %s", err, dir)
			}
		}
		if !strings.Contains(err.Error(), EnvLibraryPath) || !strings.Contains(err.Error(), "runtime.ortLibrary") {
			t.Errorf("DefaultLibraryPath() error = %v, want it to name the config key and $%s", err, EnvLibraryPath)
		}
	})
}

func TestInspectSilero(t *testing.T) {
	initORT(t)
	in, out, err := Inspect(testenv.SileroModel(t))
	if err != nil {
		t.Fatal(err)
	}
	wantIn := []tensor.Spec{
		{Name: "input", Datatype: tensor.FP32, Shape: []int64{-1, -1}},
		{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, -1, 128}},
		{Name: "sr", Datatype: tensor.Int64, Shape: []int64{}},
	}
	wantOut := []tensor.Spec{
		{Name: "output", Datatype: tensor.FP32, Shape: []int64{-1, 1}},
		{Name: "stateN", Datatype: tensor.FP32, Shape: []int64{-1, -1, -1}},
	}
	if !equalSpecs(in, wantIn) || !equalSpecs(out, wantOut) {
		t.Errorf("Inspect = %+v, %+v; want %+v, %+v", in, out, wantIn, wantOut)
	}

	bad := filepath.Join(t.TempDir(), "bad.onnx")
	if err := os.WriteFile(bad, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Inspect(bad); !errors.Is(err, ErrModel) {
		t.Errorf("Inspect(garbage) error = %v, want ErrModel", err)
	}
	if _, _, err := Inspect(filepath.Join(t.TempDir(), "missing.onnx")); !errors.Is(err, ErrModel) {
		t.Errorf("Inspect(missing) error = %v, want ErrModel", err)
	}
}

func equalSpecs(a, b []tensor.Spec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Datatype != b[i].Datatype || len(a[i].Shape) != len(b[i].Shape) {
			return false
		}
		for j := range a[i].Shape {
			if a[i].Shape[j] != b[i].Shape[j] {
				return false
			}
		}
	}
	return true
}

func TestSileroTwoSine(t *testing.T) {
	s := newSilero(t, Options{})
	if s.Provider() != ProviderCPU {
		t.Errorf("Provider() = %q, want cpu", s.Provider())
	}
	for _, scalar := range []bool{false, true} {
		in := sileroInputs(testbundle.TwoSine())
		if scalar {
			in[2].Shape = []int64{} // the model's own rank-0 sr
		}
		out, err := s.Run(context.Background(), in)
		if err != nil {
			t.Fatalf("Run (scalar sr %v): %v", scalar, err)
		}
		if len(out) != 2 || out[0].Name != "output" || out[1].Name != "stateN" {
			t.Fatalf("outputs = %v, want output, stateN", out)
		}
		got := out[0].Data.([]float32)
		if len(got) != 1 || math.Abs(float64(got[0])-sileroTwoSine) > sileroTol {
			t.Errorf("output = %v, want %v ± %g", got, sileroTwoSine, sileroTol)
		}
		if want := []int64{2, 1, 128}; !equalShape(out[1].Shape, want) {
			t.Errorf("stateN shape = %v, want %v", out[1].Shape, want)
		}
	}
}

func equalShape(a, b []int64) bool {
	return equalSpecs([]tensor.Spec{{Shape: a}}, []tensor.Spec{{Shape: b}})
}

func TestProviderFallback(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s := newSilero(t, Options{Providers: []string{ProviderCUDA, "", ProviderCPU}, Logger: log})
	if s.Provider() != ProviderCPU {
		t.Fatalf("Provider() = %q, want cpu", s.Provider())
	}
	fb := s.Fallbacks()
	if len(fb) != 1 || fb[0].Provider != ProviderCUDA || !errors.Is(fb[0].Err, ErrNotInstalled) {
		t.Fatalf("Fallbacks() = %v, want CUDA not installed (the CPU build of ONNX Runtime)", fb)
	}
	t.Logf("cuda fallback: %v", fb[0])
	// One line, at info level, naming the provider in use and why CUDA
	// was skipped.
	if lines := strings.Split(strings.TrimSpace(logs.String()), "\n"); len(lines) != 1 ||
		!strings.Contains(lines[0], "level=INFO") || !strings.Contains(lines[0], "provider=cpu") ||
		!strings.Contains(lines[0], "libonnxruntime_providers_cuda.so") {
		t.Errorf("want one info line naming cpu and the missing CUDA library; log:\n%s", logs.String())
	}
	if _, err := s.Run(context.Background(), sileroInputs(testbundle.TwoSine())); err != nil {
		t.Fatalf("Run after fallback: %v", err)
	}

	// Without CPU in the list, it is still the last resort.
	s2 := newSilero(t, Options{Providers: []string{ProviderTensorRT, ProviderCUDA}})
	if s2.Provider() != ProviderCPU || len(s2.Fallbacks()) != 2 {
		t.Errorf("Provider() = %q with fallbacks %v, want cpu after tensorrt and cuda", s2.Provider(), s2.Fallbacks())
	}
}

// quietChildEnv makes TestHelperQuietProviders do its work.
const quietChildEnv = "EDGEFLEET_ONNX_QUIET_CHILD"

// TestHelperQuietProviders is the child of TestProviderProbeIsQuiet: it
// creates a session preferring every provider there is. Run directly, it
// does nothing.
func TestHelperQuietProviders(t *testing.T) {
	if os.Getenv(quietChildEnv) == "" {
		return
	}
	s := newSilero(t, Options{Providers: Providers})
	t.Logf("provider %s, skipped %v", s.Provider(), s.Fallbacks())
}

// TestProviderProbeIsQuiet checks what ONNX Runtime itself prints (to the
// process's stderr, past Go's logging) while a session passes over every
// provider this CPU build lacks: nothing at error level.
func TestProviderProbeIsQuiet(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperQuietProviders$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), quietChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "provider cpu") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "[E:onnxruntime") || strings.Contains(line, "providers_shared.so: cannot open") {
			t.Errorf("ONNX Runtime printed an error while probing providers: %s", line)
		}
	}
}

func TestProviderInstalled(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := providerInstalled(dir, ProviderCUDA); !errors.Is(err, ErrNotInstalled) ||
		!strings.Contains(err.Error(), "libonnxruntime_providers_shared.so, libonnxruntime_providers_cuda.so") {
		t.Errorf("empty dir: %v, want both CUDA libraries named", err)
	}
	touch("libonnxruntime_providers_shared.so")
	if err := providerInstalled(dir, ProviderCUDA); !errors.Is(err, ErrNotInstalled) ||
		strings.Contains(err.Error(), "providers_shared") || !strings.Contains(err.Error(), dir) {
		t.Errorf("bridge only: %v, want the CUDA library named, in %s", err, dir)
	}
	touch("libonnxruntime_providers_cuda.so")
	if err := providerInstalled(dir, ProviderCUDA); err != nil {
		t.Errorf("CUDA libraries present: %v", err)
	}
	if err := providerInstalled(dir, ProviderTensorRT); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("TensorRT without its library: %v", err)
	}
	for _, p := range []string{ProviderCPU, ProviderQNN, ProviderXNNPACK} {
		if err := providerInstalled(dir, p); err != nil {
			t.Errorf("%s: %v, want it left to ONNX Runtime", p, err)
		}
	}
	if err := providerInstalled(dir, ProviderDirectML); !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "windows") {
		t.Errorf("DirectML on linux: %v", err)
	}
}

func TestUnknownProvider(t *testing.T) {
	initORT(t)
	_, err := NewSession(testenv.SileroModel(t), Options{Providers: []string{"cuda", "tpu9000"}})
	if !errors.Is(err, ErrProvider) || !strings.Contains(err.Error(), "tpu9000") {
		t.Fatalf("NewSession with unknown provider: %v, want ErrProvider naming it", err)
	}
}

func TestRunBadInputs(t *testing.T) {
	s := newSilero(t, Options{})
	tests := []struct {
		name   string
		mutate func([]tensor.Tensor) []tensor.Tensor
		want   error
		msg    string
	}{
		{"missing", func(in []tensor.Tensor) []tensor.Tensor { return in[:2] }, tensor.ErrName, `"sr"`},
		{"extra", func(in []tensor.Tensor) []tensor.Tensor {
			return append(in, tensor.Tensor{Name: "bogus", Datatype: tensor.FP32, Shape: []int64{1}, Data: []float32{1}})
		}, tensor.ErrName, `"bogus"`},
		{"twice", func(in []tensor.Tensor) []tensor.Tensor { return append(in, in[0]) }, tensor.ErrName, "twice"},
		{"dtype", func(in []tensor.Tensor) []tensor.Tensor {
			in[2] = tensor.Tensor{Name: "sr", Datatype: tensor.Int32, Shape: []int64{1}, Data: []int32{16000}}
			return in
		}, tensor.ErrDatatype, `"sr"`},
		{"rank", func(in []tensor.Tensor) []tensor.Tensor { in[0].Shape = []int64{512}; return in }, tensor.ErrShape, `"input"`},
		{"fixed dim", func(in []tensor.Tensor) []tensor.Tensor {
			in[1] = tensor.Tensor{Name: "state", Datatype: tensor.FP32, Shape: []int64{3, 1, 128}, Data: make([]float32, 384)}
			return in
		}, tensor.ErrShape, `"state"`},
		{"zero dim", func(in []tensor.Tensor) []tensor.Tensor {
			in[0] = tensor.Tensor{Name: "input", Datatype: tensor.FP32, Shape: []int64{0, 512}, Data: []float32{}}
			return in
		}, tensor.ErrShape, `"input"`},
		{"data length", func(in []tensor.Tensor) []tensor.Tensor { in[0].Data = make([]float32, 3); return in }, tensor.ErrShape, `"input"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Run(context.Background(), tt.mutate(sileroInputs(testbundle.TwoSine())))
			if !errors.Is(err, ErrInput) || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Run error = %v, want ErrInput and %v mentioning %s", err, tt.want, tt.msg)
			}
		})
	}
	// The session keeps working.
	if _, err := s.Run(context.Background(), sileroInputs(testbundle.TwoSine())); err != nil {
		t.Fatal(err)
	}
}

func TestRunCancelled(t *testing.T) {
	s := newSilero(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Run(ctx, sileroInputs(testbundle.TwoSine())); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with cancelled context: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	out, err := s.Run(ctx, sileroInputs(testbundle.TwoSine()))
	if err != nil {
		t.Fatalf("Run with live cancellable context: %v", err)
	}
	if got := out[0].Data.([]float32)[0]; math.Abs(float64(got)-sileroTwoSine) > sileroTol {
		t.Errorf("output = %v", got)
	}
}

// TestConcurrentRun runs one session from many goroutines; run it with
// -race. Every goroutine feeds its own frame and checks its own answer.
func TestConcurrentRun(t *testing.T) {
	s := newSilero(t, Options{})
	frames := make([][]float32, 4)
	want := make([]float32, len(frames))
	for i := range frames {
		f := testbundle.TwoSine()
		for j := range f {
			f[j] *= float32(i+1) / 4
		}
		frames[i] = f
		out, err := s.Run(context.Background(), sileroInputs(f))
		if err != nil {
			t.Fatal(err)
		}
		want[i] = out[0].Data.([]float32)[0]
	}
	var eg errgroup.Group
	for g := range 8 {
		eg.Go(func() error {
			for n := range 25 {
				i := (g + n) % len(frames)
				out, err := s.Run(context.Background(), sileroInputs(frames[i]))
				if err != nil {
					return err
				}
				if got := out[0].Data.([]float32)[0]; got != want[i] {
					return errors.New("concurrent result differs from sequential one")
				}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestSessionOptions(t *testing.T) {
	off := false
	for _, opts := range []Options{
		{IntraOpThreads: 1, InterOpThreads: 1, CPUMemArena: &off, GraphOptimization: OptimizeDisabled},
		{IntraOpThreads: 2, InterOpThreads: 2, ParallelExecution: true, GraphOptimization: OptimizeBasic},
	} {
		s := newSilero(t, opts)
		out, err := s.Run(context.Background(), sileroInputs(testbundle.TwoSine()))
		if err != nil {
			t.Fatalf("%+v: %v", opts, err)
		}
		if got := out[0].Data.([]float32)[0]; math.Abs(float64(got)-sileroTwoSine) > sileroTol {
			t.Errorf("%+v: output = %v, want %v", opts, got, sileroTwoSine)
		}
	}
	initORT(t)
	if _, err := NewSession(testenv.SileroModel(t), Options{GraphOptimization: 42}); err == nil {
		t.Error("NewSession with an unknown optimization level succeeded")
	}
}

func TestClose(t *testing.T) {
	s := newSilero(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Run(context.Background(), sileroInputs(testbundle.TwoSine())); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
}

// TestOutputShapeCache checks that outputs are preallocated after a first
// run, and that a wrong guess (output shapes that depend on more than the
// input shapes) costs a retry, not a failure.
func TestOutputShapeCache(t *testing.T) {
	s := newSilero(t, Options{})
	ctx := context.Background()
	for range 2 {
		out, err := s.Run(ctx, sileroInputs(testbundle.TwoSine()))
		if err != nil {
			t.Fatal(err)
		}
		if got := out[0].Data.([]float32)[0]; math.Abs(float64(got)-sileroTwoSine) > sileroTol {
			t.Fatalf("output = %v", got)
		}
	}
	if len(s.shapes.m) != 1 {
		t.Fatalf("shape cache holds %d entries, want 1", len(s.shapes.m))
	}
	// Poison the entry: the next run guesses wrong shapes.
	for k := range s.shapes.m {
		s.shapes.m[k] = [][]int64{{3, 1}, {2, 3, 128}}
	}
	out, err := s.Run(ctx, sileroInputs(testbundle.TwoSine()))
	if err != nil {
		t.Fatalf("Run after a wrong guess: %v", err)
	}
	if !equalShape(out[0].Shape, []int64{1, 1}) || !equalShape(out[1].Shape, []int64{2, 1, 128}) {
		t.Fatalf("output shapes %v %v", out[0].Shape, out[1].Shape)
	}
	for k, v := range s.shapes.m {
		if v != nil {
			t.Fatalf("entry %q still cached after a wrong guess", k)
		}
	}
	// A batch of two is a new entry.
	two := append(testbundle.TwoSine(), testbundle.TwoSine()...)
	in := []tensor.Tensor{
		{Name: "input", Datatype: tensor.FP32, Shape: []int64{2, 512}, Data: two},
		{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, 2, 128}, Data: make([]float32, 512)},
		{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}},
	}
	for range 2 {
		out, err := s.Run(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		got := out[0].Data.([]float32)
		if !equalShape(out[0].Shape, []int64{2, 1}) || math.Abs(float64(got[1])-sileroTwoSine) > sileroTol {
			t.Fatalf("batch output %v %v", out[0].Shape, got)
		}
	}
}
