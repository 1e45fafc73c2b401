package variants_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
	"github.com/edgefleet/edgefleet/testbed/bundles/variants"
)

// shipped is the bundle's own pre-processor, for the benchmark.
const shipped = "testbed/bundles/silero-vad/pre"

func load(tb testing.TB, dir string) *processor.Processor {
	tb.Helper()
	wasm, err := os.ReadFile(testenv.BuildWASM(tb, dir))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := processor.New(context.Background(), filepath.Base(dir)+".wasm", wasm, processor.Config{PoolSize: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatalf("loading %s: %v", dir, err)
	}
	tb.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// pcm encodes samples in [-1, 1) as the frame's 16-bit PCM.
func pcm(f func(i int) float64) []byte {
	b := make([]byte, frame.Bytes)
	for i := range frame.Samples {
		v := max(math.MinInt16, min(math.MaxInt16, math.Round(f(i)*32768)))
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(v)))
	}
	return b
}

// twoSine is the smoke frame, quiet and loud frames.
var (
	twoSine = pcm(func(i int) float64 {
		t := float64(i) / frame.SampleRate
		return 0.5*math.Sin(2*math.Pi*220*t) + 0.1*math.Sin(2*math.Pi*1375*t)
	})
	quiet = pcm(func(i int) float64 { return 0.3 * math.Sin(2*math.Pi*440*float64(i)/frame.SampleRate) })
	loud  = pcm(func(i int) float64 { return 0.99 * math.Sin(2*math.Pi*300*float64(i)/frame.SampleRate) })
)

func input(t *testing.T, ts []tensor.Tensor) []float32 {
	t.Helper()
	for _, x := range ts {
		if x.Name == "input" {
			return x.Data.([]float32)
		}
	}
	t.Fatalf("no input tensor in %d outputs", len(ts))
	return nil
}

// TestSlowPre: the slow variant answers exactly as the transform does.
func TestSlowPre(t *testing.T) {
	p := load(t, variants.SlowPre)
	for _, f := range [][]byte{twoSine, quiet, loud} {
		want, err := frame.Transform(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.ProcessRaw(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("slowpre's outputs differ from the transform's:\n got %v\nwant %v", got, want)
		}
	}
}

// TestLimiter: frames below the threshold go through unchanged; a loud
// one reaches the model attenuated, with its drift features those of the
// frame as sent.
func TestLimiter(t *testing.T) {
	p := load(t, variants.Limiter)
	for _, f := range [][]byte{twoSine, quiet} {
		want, _ := frame.Transform(f)
		got, err := p.ProcessRaw(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("limiter changed a frame below its threshold")
		}
	}
	want, _ := frame.Transform(loud)
	got, err := p.ProcessRaw(t.Context(), loud)
	if err != nil {
		t.Fatal(err)
	}
	w, g := input(t, want), input(t, got)
	for i := range w {
		if g[i] != w[i]*variants.LimiterGain {
			t.Fatalf("sample %d: %v, want %v × %v", i, g[i], w[i], variants.LimiterGain)
		}
	}
	if !reflect.DeepEqual(got[len(got)-1], want[len(want)-1]) {
		t.Fatalf("features %v, want those of the frame sent %v", got[len(got)-1], want[len(want)-1])
	}
}

// TestConstants keeps the modules' constants and the package's in step.
func TestConstants(t *testing.T) {
	for _, c := range []struct {
		dir, name string
		value     any
	}{
		{variants.SlowPre, "burnRounds", variants.BurnRounds},
		{variants.Limiter, "threshold", variants.LimiterThreshold},
		{variants.Limiter, "gain", variants.LimiterGain},
	} {
		src, err := os.ReadFile(filepath.Join(testenv.Root(t), c.dir, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)\b` + c.name + `\s*=\s*([0-9_.]+)\s*$`).FindSubmatch(src)
		if m == nil {
			t.Fatalf("%s: no constant %s", c.dir, c.name)
		}
		var v float64
		if _, err := fmt.Sscan(strings.ReplaceAll(string(m[1]), "_", ""), &v); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint(c.value); fmt.Sprint(v) != want && fmt.Sprintf("%.0f", v) != want {
			t.Fatalf("%s: %s = %s, package variants says %s", c.dir, c.name, m[1], want)
		}
	}
}

// BenchmarkPre: the shipped pre-processor beside the two variants, one
// frame per op (slowpre's difference is its burn).
func BenchmarkPre(b *testing.B) {
	for _, m := range []struct{ name, dir string }{{"shipped", shipped}, {"slowpre", variants.SlowPre}, {"limiter", variants.Limiter}} {
		p := load(b, m.dir)
		b.Run(m.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := p.ProcessRaw(context.Background(), loud); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
