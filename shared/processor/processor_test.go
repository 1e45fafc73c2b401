package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// cacheDir is a compilation cache shared by the tests of one run, so the
// Go-built module is compiled once.
var cacheDir string

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithTempDir(m, "processor-cache-", &cacheDir))
}

// wat compiles testdata/NAME.wat with wat2wasm (Debian package wabt).
func wat(t testing.TB, name string) []byte {
	t.Helper()
	bin, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Fatalf("wat2wasm not found (apt-get install wabt): %v", err)
	}
	out := filepath.Join(t.TempDir(), name+".wasm")
	if b, err := exec.Command(bin, filepath.Join("testdata", name+".wat"), "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm %s: %v\n%s", name, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func goModule(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.BuildWASM(t, "shared/processor/testdata/gotest"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newProc(t testing.TB, name string, wasm []byte, cfg Config) *Processor {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = cacheDir
	}
	if cfg.Timeout == 0 {
		// Tests that are not about the deadline must not meet it on a
		// busy machine: the 1 s default is for devices, not for a test
		// sharing two cores with a full suite.
		cfg.Timeout = time.Minute
	}
	p, err := New(context.Background(), name, wasm, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

func sample() []tensor.Tensor {
	return []tensor.Tensor{
		RawTensor([]byte("hello")),
		{Name: "x", Datatype: tensor.FP32, Shape: []int64{2, 2}, Data: []float32{1, -2, 3.5, 0}},
		{Name: "n", Datatype: tensor.Int64, Shape: []int64{}, Data: []int64{16000}},
		{Name: "b", Datatype: tensor.Bool, Shape: []int64{3}, Data: []bool{true, false, true}},
		{Name: "i8", Datatype: tensor.Int8, Shape: []int64{2}, Data: []int8{-128, 127}},
		{Name: "i16", Datatype: tensor.Int16, Shape: []int64{2}, Data: []int16{-32768, 12345}},
		{Name: "i32", Datatype: tensor.Int32, Shape: []int64{1, 2}, Data: []int32{-1, 1 << 30}},
		{Name: "f64", Datatype: tensor.FP64, Shape: []int64{2}, Data: []float64{-0.5, 1e300}},
		{Name: "empty", Datatype: tensor.FP32, Shape: []int64{0, 3}, Data: []float32{}},
	}
}

func named(name string) []tensor.Tensor {
	return []tensor.Tensor{{Name: name, Datatype: tensor.Uint8, Shape: []int64{1}, Data: []byte{1}}}
}

func TestEcho(t *testing.T) {
	for name, wasm := range map[string][]byte{"echo.wat": wat(t, "echo"), "gotest": goModule(t)} {
		t.Run(name, func(t *testing.T) {
			p := newProc(t, name, wasm, Config{})
			for range 3 {
				out, err := p.Process(context.Background(), sample())
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(out, sample()) {
					t.Fatalf("echo = %+v, want %+v", out, sample())
				}
			}
			// A larger input makes the host ask for a larger buffer.
			big := RawTensor(bytes.Repeat([]byte{7}, 40000))
			out, err := p.Process(context.Background(), []tensor.Tensor{big})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(out, []tensor.Tensor{big}) {
				t.Fatal("large echo differs")
			}
			out, err = p.ProcessRaw(context.Background(), nil)
			if err != nil || len(out) != 1 || out[0].Name != RawName || len(out[0].Data.([]byte)) != 0 {
				t.Fatalf("ProcessRaw(nil) = %+v, %v", out, err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		module string
		want   []error
		msg    string
	}{
		{"noprocess", []error{ErrModule}, `missing export "ef_process"`},
		{"nomemory", []error{ErrModule}, `missing export "memory"`},
		{"version2", []error{ErrModule}, "ABI version 2, this host implements version 1"},
		{"badsig", []error{ErrModule}, `export "ef_process" has type (i32, i32) -> (i32), want (i32, i32) -> (i64)`},
		{"imports", []error{ErrModule}, "imports env.now"},
		{"bigmem", []error{ErrModule, ErrMemory}, "initial memory is 134217728 bytes"},
		{"command", []error{ErrModule}, "exports _start"},
		{"initpanic", []error{ErrModule, ErrTrap}, "_initialize"},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			_, err := New(context.Background(), tt.module, wat(t, tt.module), Config{}, nil)
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("New error = %v, want %v", err, want)
				}
			}
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("New error = %v, want it to mention %q", err, tt.msg)
			}
		})
	}
	if _, err := New(context.Background(), "junk", []byte("\x00asm junk"), Config{}, nil); !errors.Is(err, ErrModule) {
		t.Errorf("New(junk) = %v, want ErrModule", err)
	}
	if _, err := Load(context.Background(), filepath.Join(t.TempDir(), "missing.wasm"), Config{}, nil); !errors.Is(err, ErrModule) {
		t.Errorf("Load(missing) = %v, want ErrModule", err)
	}
}

// TestCallErrors checks each failure a call can meet, twice: the second
// call proves that the host replaced the instance and keeps working.
func TestCallErrors(t *testing.T) {
	tests := []struct {
		module string
		cfg    Config
		want   error
		msg    string
	}{
		{"reject", Config{}, ErrRejected, "frame too short"},
		{"trap", Config{}, ErrTrap, "unreachable"},
		{"loop", Config{Timeout: 50 * time.Millisecond}, ErrTimeout, "deadline exceeded"},
		{"hog", Config{MemoryLimit: 4 << 20}, ErrMemory, "limit 4194304 bytes"},
		{"badout", Config{}, ErrModule, "outside the module's memory"},
		{"garbage", Config{}, ErrModule, "bad magic"},
		{"badalloc", Config{}, ErrModule, "ef_alloc"},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			p := newProc(t, tt.module, wat(t, tt.module), tt.cfg)
			for i := range 2 {
				_, err := p.Process(context.Background(), sample())
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("call %d: error = %v, want %v mentioning %q", i, err, tt.want, tt.msg)
				}
			}
		})
	}
}

// TestGoModuleFailures drives the Go-built module through every failure
// and checks that it serves normally after each. Only "loop" has a short
// deadline: the others must end on the failure they provoke, whatever the
// machine's load (a hog on a busy core takes seconds to reach its limit,
// and must be stopped by the limit, not by a deadline that raced it).
func TestGoModuleFailures(t *testing.T) {
	const patient = 10 * time.Minute
	tests := []struct {
		input   string
		timeout time.Duration
		want    error
		msg     string
	}{
		{"reject", patient, ErrRejected, `cannot take a tensor named "reject"`},
		{"panic", patient, ErrTrap, "panic: boom: the handler panicked"},
		{"loop", 200 * time.Millisecond, ErrTimeout, "deadline"},
		{"hog", patient, ErrMemory, "limit 33554432 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.input, func(t *testing.T) {
			p := newProc(t, "gotest", goModule(t), Config{MemoryLimit: 32 << 20, Timeout: tt.timeout, PoolSize: 1})
			_, err := p.Process(context.Background(), named(tt.input))
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
			out, err := p.Process(context.Background(), sample())
			if err != nil || !reflect.DeepEqual(out, sample()) {
				t.Fatalf("echo after %s: %+v, %v", tt.input, out, err)
			}
		})
	}
}

func TestSandbox(t *testing.T) {
	p := newProc(t, "gotest", goModule(t), Config{})
	out, err := p.Process(context.Background(), named("sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	report := string(out[0].Data.([]byte))
	for _, want := range []string{"readdir=true", "readfile=true", "env=0", "args=0"} {
		if !strings.Contains(report, want) {
			t.Errorf("sandbox report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "year="+time.Now().Format("2006")) {
		t.Errorf("the module sees the real clock:\n%s", report)
	}
	// Randomness is deterministic: a fresh instance sees the same bytes.
	q := newProc(t, "gotest", goModule(t), Config{})
	out2, err := q.Process(context.Background(), named("sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out2[0].Data.([]byte)); got != report {
		t.Errorf("two fresh instances saw different sandboxes:\n%s\n---\n%s", report, got)
	}
	t.Logf("sandbox report:\n%s", report)
}

func TestStderrBounded(t *testing.T) {
	b := &boundedBuffer{limit: 8}
	b.Write([]byte("0123"))
	b.Write([]byte("456789"))
	if got := b.String(); got != "01234567…" {
		t.Errorf("bounded buffer = %q", got)
	}
	b.Reset()
	b.Write([]byte("ab"))
	if got := b.String(); got != "ab" {
		t.Errorf("after Reset = %q", got)
	}
}

// TestConcurrent calls one processor from many goroutines (run with
// -race), some calls crashing their instance.
func TestConcurrent(t *testing.T) {
	p := newProc(t, "gotest", goModule(t), Config{PoolSize: 2})
	var eg errgroup.Group
	for g := range 6 {
		eg.Go(func() error {
			for n := range 10 {
				if g == 0 && n%5 == 0 {
					if _, err := p.Process(context.Background(), named("panic")); !errors.Is(err, ErrTrap) {
						return fmt.Errorf("panic: %v, want ErrTrap", err)
					}
					continue
				}
				in := sample()
				in[1].Data = []float32{float32(g), float32(n), 0, 0}
				out, err := p.Process(context.Background(), in)
				if err != nil {
					return err
				}
				if !reflect.DeepEqual(out, in) {
					return errors.New("echo returned another call's tensors")
				}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestContextCancel(t *testing.T) {
	// The processor's own deadline is far away: only the context can end
	// the loop while the test runs.
	p := newProc(t, "gotest", goModule(t), Config{Timeout: 10 * time.Minute, PoolSize: 1})
	if _, err := p.Process(context.Background(), sample()); err != nil { // the instance exists before the clock starts
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := p.Process(ctx, named("loop"))
	if !errors.Is(err, ErrTimeout) && !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want the call cut short", err)
	}
	if ctx.Err() == nil {
		t.Fatalf("the call ended with %v before its context did", err)
	}
	// The only slot is free again, and the next call gets a new instance.
	if _, err := p.Process(context.Background(), sample()); err != nil {
		t.Fatal(err)
	}
	// A context that is already done does not take an instance.
	p2 := newProc(t, "loop", wat(t, "loop"), Config{PoolSize: 1, Timeout: 20 * time.Millisecond})
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := p2.Process(done, sample()); err == nil {
		t.Fatal("Process with a cancelled context succeeded")
	}
}

func TestInterpreter(t *testing.T) {
	p := newProc(t, "echo", wat(t, "echo"), Config{Interpreter: true})
	if out, err := p.Process(context.Background(), sample()); err != nil || !reflect.DeepEqual(out, sample()) {
		t.Fatalf("interpreter echo: %v", err)
	}
	l := newProc(t, "loop", wat(t, "loop"), Config{Interpreter: true, Timeout: 50 * time.Millisecond})
	if _, err := l.Process(context.Background(), sample()); !errors.Is(err, ErrTimeout) {
		t.Fatalf("interpreter loop: %v, want ErrTimeout", err)
	}
}

func TestCompilationCacheDir(t *testing.T) {
	dir := t.TempDir()
	wasm := wat(t, "echo")
	for range 2 {
		p := newProc(t, "echo", wasm, Config{CacheDir: dir})
		if _, err := p.Process(context.Background(), sample()); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) == 0 {
		t.Fatalf("compilation cache %s is empty", dir)
	}
}

func TestClose(t *testing.T) {
	p := newProc(t, "echo", wat(t, "echo"), Config{})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Process(context.Background(), sample()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Process after Close = %v, want ErrClosed", err)
	}
}

func TestInvalidInput(t *testing.T) {
	p := newProc(t, "echo", wat(t, "echo"), Config{})
	bad := tensor.Tensor{Name: "x", Datatype: tensor.FP32, Shape: []int64{3}, Data: []float32{1}}
	if _, err := p.Process(context.Background(), []tensor.Tensor{bad}); !errors.Is(err, ErrRejected) || !errors.Is(err, tensor.ErrShape) {
		t.Fatalf("inconsistent tensor: %v, want ErrRejected wrapping tensor.ErrShape", err)
	}
	if _, err := p.Process(context.Background(), sample()); err != nil {
		t.Fatal(err)
	}
}

// TestGuestCollectsGarbage calls a Go module many times. An export
// returns to the host without scheduling the module's other goroutines;
// without the guest package yielding after each call, the module's
// garbage collector stalls after a few hundred thousand calls and its
// heap grows until the memory limit.
func TestGuestCollectsGarbage(t *testing.T) {
	p := newProc(t, "gotest", goModule(t), Config{PoolSize: 1})
	in := []tensor.Tensor{RawTensor(make([]byte, 1024))}
	calls := 400_000
	if raceEnabled {
		calls /= 4 // too slow under the race detector to reach the stall; still a soak
	}
	for i := range calls {
		if _, err := p.Process(context.Background(), in); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	inst := <-p.idle
	defer func() { p.idle <- inst }()
	if got := len(inst.mem.buf); got > 16<<20 {
		t.Errorf("after %d calls the module's memory is %d MiB", calls, got>>20)
	}
}
