package frame_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

// The shipped pre-processor is C (../pre.c); these tests hold it to the
// native transform, package frame, through the real host (shared/processor
// on wazero): the same outputs, the features within featureTolerance, the
// same rejections in the same words. The Go build of the same transform
// (../goguest) is checked on a few frames too.

const (
	cModule          = "testbed/bundles/silero-vad/pre"
	goModule         = "testbed/bundles/silero-vad/pre/goguest"
	featureTolerance = 1e-5 // absolute, or relative above 1
)

// cacheDir is a compilation cache shared by the tests of one run, so each
// module is compiled once.
var cacheDir string

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithTempDir(m, "frame-wasm-cache-", &cacheDir))
}

// load builds the module at dir and loads it through processor.New. It
// fails if the host had to fall back from its interrupt instrumentation
// (it logs a warning then), so the C module is known to be interruptible.
func load(t testing.TB, dir string) *processor.Processor {
	t.Helper()
	return loadWith(t, dir, processor.Config{})
}

func loadWith(t testing.TB, dir string, cfg processor.Config) *processor.Processor {
	t.Helper()
	wasm, err := os.ReadFile(testenv.BuildWASM(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.CacheDir, cfg.PoolSize = cacheDir, 1
	p, err := processor.New(context.Background(), "pre.wasm", wasm, cfg, log)
	if err != nil {
		t.Fatalf("loading %s: %v", dir, err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	if logs.Len() > 0 {
		t.Fatalf("loading %s logged warnings:\n%s", dir, logs.String())
	}
	return p
}

type testFrame struct {
	name string
	raw  []byte
}

// frames are the frames the tests run through both implementations: edge
// cases (silence, full scale, DC, impulses, the Nyquist frequency, a sine
// in each band) and random ones at every level.
func frames() []testFrame {
	fill := func(f func(i int) int16) []byte {
		b := make([]byte, frame.Bytes)
		for i := range frame.Samples {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(f(i)))
		}
		return b
	}
	constant := func(v int16) []byte { return fill(func(int) int16 { return v }) }
	impulse := func(at int, v int16) []byte {
		return fill(func(i int) int16 {
			if i == at {
				return v
			}
			return 0
		})
	}
	sine := func(hz, amp float64) []byte {
		return fill(func(i int) int16 {
			return int16(math.Round(amp * 32767 * math.Sin(2*math.Pi*hz*float64(i)/frame.SampleRate)))
		})
	}
	fs := []testFrame{
		{"silence", constant(0)},
		{"full-scale positive", constant(math.MaxInt16)},
		{"full-scale negative", constant(math.MinInt16)},
		{"nyquist", fill(func(i int) int16 { return int16(math.MaxInt16 - (i%2)*math.MaxUint16) })},
		{"bytes 0x80", bytes.Repeat([]byte{0x80}, frame.Bytes)},
		{"bytes 0xff", bytes.Repeat([]byte{0xff}, frame.Bytes)}, // -1: DC of one step
		{"dc +1", constant(1)},
		{"dc +1000", constant(1000)},
		{"dc -20000", constant(-20000)},
		{"two-sine", fill(func(i int) int16 {
			x := 0.5*math.Sin(2*math.Pi*220*float64(i)/frame.SampleRate) + 0.1*math.Sin(2*math.Pi*1375*float64(i)/frame.SampleRate)
			return int16(math.Round(x * 32768))
		})},
	}
	for _, at := range []int{0, 1, 255, 256, 511} {
		for _, v := range []int16{1, -1, math.MaxInt16, math.MinInt16} {
			fs = append(fs, testFrame{fmt.Sprintf("impulse %d at %d", v, at), impulse(at, v)})
		}
	}
	for _, hz := range []float64{31.25, 150, 300, 600, 1000, 2000, 3000, 5000, 7999} {
		fs = append(fs, testFrame{fmt.Sprintf("sine %v Hz", hz), sine(hz, 0.7)})
	}
	r := rand.New(rand.NewPCG(7, 11))
	for n := range 200 {
		scale := math.Pow(2, float64(n%16)) // every level from ±1 to full scale
		fs = append(fs, testFrame{fmt.Sprintf("random %d (scale %v)", n, scale), fill(func(int) int16 {
			if n%5 == 4 {
				return int16(max(math.MinInt16, min(math.MaxInt16, math.Round(r.NormFloat64()*scale/4))))
			}
			return int16(r.IntN(int(2*scale)) - int(scale))
		})})
	}
	return fs
}

// compareOutputs checks got (from a module) against want (native): the
// same tensors in the same order, bit-identical model inputs, features
// within featureTolerance. It returns the largest feature difference.
func compareOutputs(t *testing.T, what string, got, want []tensor.Tensor) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d outputs, want %d", what, len(got), len(want))
	}
	worst := 0.0
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Datatype != w.Datatype || !reflect.DeepEqual(g.Shape, w.Shape) {
			t.Fatalf("%s: output %d is %q %s %v, want %q %s %v", what, i, g.Name, g.Datatype, g.Shape, w.Name, w.Datatype, w.Shape)
		}
		if w.Name != frame.FeaturesName {
			if !reflect.DeepEqual(g.Data, w.Data) {
				t.Fatalf("%s: output %q differs:\n got %v\nwant %v", what, w.Name, g.Data, w.Data)
			}
			continue
		}
		gf, wf := g.Data.([]float32), w.Data.([]float32)
		for k := range wf {
			d := math.Abs(float64(gf[k]) - float64(wf[k]))
			if d > featureTolerance*max(1, math.Abs(float64(wf[k]))) || math.IsNaN(float64(gf[k])) {
				t.Errorf("%s: %s = %v, native %v (difference %g)", what, frame.Features[k], gf[k], wf[k], d)
			}
			worst = max(worst, d)
		}
	}
	return worst
}

// matchNative runs frame f through the module p and through the native
// transform and compares them (compareOutputs); it returns the largest
// feature difference.
func matchNative(t *testing.T, p *processor.Processor, f testFrame) float64 {
	t.Helper()
	want, err := frame.Transform(f.raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.ProcessRaw(context.Background(), f.raw)
	if err != nil {
		t.Fatalf("%s: %v", f.name, err)
	}
	return compareOutputs(t, f.name, got, want)
}

func TestWASMMatchesNative(t *testing.T) {
	for _, engine := range []struct {
		name string
		cfg  processor.Config
		n    int // frames to run
	}{
		{"compiler", processor.Config{}, len(frames())},
		// Where wazero has no compiler (32-bit ARM, say): SIMD included.
		{"interpreter", processor.Config{Interpreter: true}, 20},
	} {
		t.Run(engine.name, func(t *testing.T) {
			p := loadWith(t, cModule, engine.cfg)
			worst := 0.0
			for _, f := range frames()[:engine.n] {
				worst = max(worst, matchNative(t, p, f))
			}
			t.Logf("%d frames; largest feature difference %g", engine.n, worst)
		})
	}
}

// TestGoGuestMatchesNative keeps the Go build of the transform (the
// example of a Go processor, and BenchmarkPre's reference) working.
func TestGoGuestMatchesNative(t *testing.T) {
	p := load(t, goModule)
	for _, f := range frames()[:12] {
		matchNative(t, p, f)
	}
}

// hostMessage is how the host reports a module's rejection message.
func hostMessage(msg string) string {
	const limit = 1024 // the host keeps this much of the message
	if len(msg) > limit {
		msg = msg[:limit] + "…"
	}
	return fmt.Sprintf("processor pre.wasm: %v: %s", processor.ErrRejected, msg)
}

func TestWASMRejectsLikeNative(t *testing.T) {
	raw := func(name string, dt tensor.Datatype, shape ...int64) tensor.Tensor {
		z, err := tensor.Zeros(name, dt, shape)
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	pcm := func(shape ...int64) tensor.Tensor { return raw(frame.RawName, tensor.Uint8, shape...) }
	many := make([]tensor.Tensor, 300) // a description longer than the host keeps
	for i := range many {
		many[i] = raw(fmt.Sprintf("t%d", i), tensor.FP32, 1, int64(i))
	}
	tests := []struct {
		name string
		in   []tensor.Tensor
	}{
		{"none", nil},
		{"empty", []tensor.Tensor{pcm(0)}},
		{"one byte scalar", []tensor.Tensor{pcm()}},
		{"short", []tensor.Tensor{pcm(1022)}},
		{"odd", []tensor.Tensor{pcm(1023)}},
		{"one more", []tensor.Tensor{pcm(1025)}},
		{"long", []tensor.Tensor{pcm(2, 1024)}},
		{"two", []tensor.Tensor{pcm(frame.Bytes), pcm(frame.Bytes)}},
		{"raw second", []tensor.Tensor{raw("x", tensor.FP32, 1), pcm(frame.Bytes)}},
		{"many", many},
		{"empty shape dims", []tensor.Tensor{raw("a", tensor.Int8, 0, 3), raw("b", tensor.FP64, 2, 0, 1)}},
	}
	for _, dt := range tensor.Datatypes {
		if dt != tensor.Uint8 {
			tests = append(tests, struct {
				name string
				in   []tensor.Tensor
			}{"type " + string(dt), []tensor.Tensor{raw(frame.RawName, dt, frame.Bytes/int64(dt.Size()))}})
		}
	}
	for _, name := range []string{
		"", "pcm", "RAW", "raw ", "ra", "rawr", `a"b\c`, "tab\there\nnl\r\a\b\f\v", "\x00\x01\x1f\x7f",
		"ñandú", "日本語", "🙂", "\u0080\u009f", "\u00a0nbsp\u00ad", "bidi\u202eevil\u2066", "\ufeffbom",
		"\ue000\uf8ff", "\ufff9\ufffc\ufffd\uffff", "\U000e0041tag", "\U000f0000\U0010fffd",
		"\xff\xfe", "\xe2\x82", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xe2\x82\xacb",
	} {
		tests = append(tests, struct {
			name string
			in   []tensor.Tensor
		}{fmt.Sprintf("name %q", name), []tensor.Tensor{raw(name, tensor.Uint8, frame.Bytes)}})
	}

	p := load(t, cModule)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, nerr := frame.Process(tt.in)
			if nerr == nil {
				t.Fatal("native Process accepted the input")
			}
			_, err := p.Process(context.Background(), tt.in)
			if err == nil {
				t.Fatal("the module accepted the input")
			}
			if got, want := err.Error(), hostMessage(nerr.Error()); got != want {
				t.Fatalf("module:\n%s\nnative:\n%s", got, want)
			}
		})
	}

	// Any shape of 1024 bytes is a frame, as natively; the instance keeps
	// serving after rejections.
	for _, shape := range [][]int64{{1024}, {2, 512}, {1, 1, 1024}} {
		in := []tensor.Tensor{pcm(shape...)}
		want, err := frame.Process(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Process(context.Background(), in)
		if err != nil {
			t.Fatalf("shape %v: %v", shape, err)
		}
		compareOutputs(t, fmt.Sprint(shape), got, want)
	}
}

// TestWASMMemoryLimit: an input the module cannot grow its memory for
// traps in ef_alloc, which the host reports as its memory limit; the next
// call gets a fresh instance.
func TestWASMMemoryLimit(t *testing.T) {
	ctx := context.Background()
	p := loadWith(t, cModule, processor.Config{MemoryLimit: 2 << 16})
	if _, err := p.ProcessRaw(ctx, make([]byte, 100<<10)); !errors.Is(err, processor.ErrMemory) {
		t.Fatalf("100 KiB input under a 128 KiB limit: err = %v, want ErrMemory", err)
	}
	raw := frames()[9].raw
	want, err := frame.Transform(raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.ProcessRaw(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	compareOutputs(t, "after the memory error", got, want)
}

// rawModule runs the C module directly on wazero, so that a test can hand
// ef_process any bytes, not only what the host encodes.
type rawModule struct {
	mod            api.Module
	alloc, process api.Function
	inPtr, inCap   uint32
	stack          [2]uint64
}

func newRawModule(tb testing.TB) *rawModule {
	tb.Helper()
	wasm, err := os.ReadFile(testenv.BuildWASM(tb, cModule))
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	tb.Cleanup(func() { rt.Close(ctx) })
	mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	if err != nil {
		tb.Fatal(err)
	}
	return &rawModule{mod: mod, alloc: mod.ExportedFunction("ef_alloc"), process: mod.ExportedFunction("ef_process")}
}

// call runs ef_process on b and returns the output list or the error
// message.
func (m *rawModule) call(tb testing.TB, b []byte) (out []byte, msg string) {
	ctx := context.Background()
	if n := uint32(len(b)); n > m.inCap || m.inCap == 0 {
		m.stack[0] = api.EncodeU32(n)
		if err := m.alloc.CallWithStack(ctx, m.stack[:]); err != nil {
			tb.Fatalf("ef_alloc(%d): %v", n, err)
		}
		m.inPtr, m.inCap = api.DecodeU32(m.stack[0]), max(n, 1)
	}
	if !m.mod.Memory().Write(m.inPtr, b) {
		tb.Fatalf("ef_alloc buffer %d outside memory", m.inPtr)
	}
	m.stack[0], m.stack[1] = api.EncodeU32(m.inPtr), api.EncodeU32(uint32(len(b)))
	if err := m.process.CallWithStack(ctx, m.stack[:]); err != nil {
		tb.Fatalf("ef_process trapped on % x: %v", b[:min(len(b), 64)], err)
	}
	ptr, size := uint32(m.stack[0]>>32), uint32(m.stack[0])
	region, ok := m.mod.Memory().Read(ptr, size&^guest.ErrorFlag)
	if !ok {
		tb.Fatalf("result region [%d, +%d) outside memory", ptr, size&^guest.ErrorFlag)
	}
	if size&guest.ErrorFlag != 0 {
		return nil, string(region)
	}
	return region, ""
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// checkRaw holds the module's answer to the bytes b to what the Go guest
// would answer: tensor.DecodeBinary's error, frame.Process's error, or
// the same outputs.
func checkRaw(t *testing.T, m *rawModule, b []byte) {
	out, msg := m.call(t, b)
	var want string
	in, err := tensor.DecodeBinary(b)
	if err != nil {
		want = "decoding input: " + err.Error()
	} else if res, err := frame.Process(in); err != nil {
		want = err.Error()
	} else {
		if msg != "" {
			t.Fatalf("module rejected what native accepts: %s", msg)
		}
		got, err := tensor.DecodeBinary(out)
		if err != nil {
			t.Fatalf("module output: %v", err)
		}
		compareOutputs(t, "raw call", got, res)
		return
	}
	if msg == "" {
		t.Fatalf("module accepted what native rejects (%s)", want)
	}
	// The host keeps the first 1024 bytes of a message (the module
	// keeps 4096). Go quotes names with Unicode's table of printable
	// runes, which the module only approximates (it copies unassigned
	// code points): where either message holds a non-ASCII rune, hold
	// them to agreeing up to the first name.
	msg, want = hostMessage(msg), hostMessage(want)
	if !isASCII(want) || !isASCII(msg) {
		want, _, _ = strings.Cut(want, `"`)
		msg, _, _ = strings.Cut(msg, `"`)
	}
	if msg != want {
		t.Fatalf("module:\n%s\nnative:\n%s", msg, want)
	}
}

// encodings are tensor lists, valid and not, for the decoder.
func encodings(tb testing.TB) [][]byte {
	frameList, err := tensor.AppendBinary(nil, []tensor.Tensor{processor.RawTensor(frames()[9].raw)})
	if err != nil {
		tb.Fatal(err)
	}
	two, err := tensor.AppendBinary(nil, []tensor.Tensor{
		{Name: "b", Datatype: tensor.Bool, Shape: []int64{2}, Data: []bool{true, false}},
		{Name: "x", Datatype: tensor.FP32, Shape: []int64{}, Data: []float32{1}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	header := func(count uint32) []byte { return binary.LittleEndian.AppendUint32([]byte("EFT1"), count) }
	tensorHead := func(name string, dtype, rank byte, dims ...int64) []byte {
		b := binary.LittleEndian.AppendUint16(nil, uint16(len(name)))
		b = append(append(b, name...), dtype, rank)
		for _, d := range dims {
			b = binary.LittleEndian.AppendUint64(b, uint64(d))
		}
		return b
	}
	badBool := bytes.Clone(two)
	badBool[bytes.Index(badBool, []byte{1, 0, 'x'})] = 2 // the first BOOL element
	return [][]byte{
		frameList,
		two,
		header(0),
		nil,
		[]byte("EFT"),
		[]byte("EFT2\x00\x00\x00\x00"),
		header(1)[:6],
		header(2000),
		append(header(0), 0),
		append(bytes.Clone(frameList), 1, 2, 3),
		frameList[:len(frameList)-1],
		frameList[:20],
		badBool,
		append(header(1), tensorHead("t", 8, 0)...),
		append(header(1), tensorHead("t", 1, 17)...),
		binary.LittleEndian.AppendUint32(append(header(1), tensorHead("neg", 1, 1, -1)...), 0),
		binary.LittleEndian.AppendUint32(append(header(1), tensorHead("big", 1, 2, 1<<40, 1<<40)...), 0),
		binary.LittleEndian.AppendUint32(append(header(1), tensorHead("zero", 1, 3, 1<<40, 1<<40, 0)...), 0),
		binary.LittleEndian.AppendUint32(append(header(1), tensorHead("mismatch", 6, 1, 3)...), 11),
		binary.LittleEndian.AppendUint32(append(header(1), tensorHead("\xff\"", 1, 1, 3)...), 3),
	}
}

func TestWASMDecoder(t *testing.T) {
	m := newRawModule(t)
	for i, b := range encodings(t) {
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkRaw(t, m, b) })
	}
	// An input region outside the ef_alloc buffer is refused.
	m.stack[0], m.stack[1] = api.EncodeU32(m.inPtr), api.EncodeU32(m.inCap+1)
	if err := m.process.CallWithStack(context.Background(), m.stack[:]); err != nil {
		t.Fatal(err)
	}
	if size := uint32(m.stack[0]); size&guest.ErrorFlag == 0 {
		t.Fatal("ef_process accepted a region past its buffer")
	}
	// Inputs larger than any before grow the memory.
	checkRaw(t, m, append(encodings(t)[0], make([]byte, 1<<20)...))
}

// FuzzWASMDecode feeds the C module's decoder arbitrary bytes (through
// ef_process, bypassing the host's encoder) and holds its answers to the
// Go decoder's and transform's.
func FuzzWASMDecode(f *testing.F) {
	for _, b := range encodings(f) {
		f.Add(b)
	}
	m := newRawModule(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkRaw(t, m, b)
	})
}
