package frame

import (
	"encoding/binary"
	"errors"
	"math"
	"math/cmplx"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// pcm quantizes samples in [-1, 1) to 16-bit little-endian PCM.
func pcm(x []float64) []byte {
	b := make([]byte, 2*len(x))
	for i, v := range x {
		s := math.Round(v * 32768)
		s = max(-32768, min(32767, s))
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(s)))
	}
	return b
}

func sines(parts ...[2]float64) []float64 {
	x := make([]float64, Samples)
	for i := range x {
		for _, p := range parts {
			x[i] += p[1] * math.Sin(2*math.Pi*p[0]*float64(i)/SampleRate)
		}
	}
	return x
}

func TestTransformTwoSine(t *testing.T) {
	x := sines([2]float64{220, 0.5}, [2]float64{1375, 0.1})
	out, err := Transform(pcm(x))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"input", "state", "sr", "features"}
	for i, o := range out {
		if o.Name != names[i] {
			t.Fatalf("output %d is %q, want %q", i, o.Name, names[i])
		}
		if err := o.Check(); err != nil {
			t.Fatal(err)
		}
	}
	in := out[0].Data.([]float32)
	for i, v := range in {
		if math.Abs(float64(v)-x[i]) > 1.0/32768 {
			t.Fatalf("input[%d] = %v, want %v", i, v, x[i])
		}
	}
	for _, v := range out[1].Data.([]float32) {
		if v != 0 {
			t.Fatal("state is not zero")
		}
	}
	if sr := out[2].Data.([]int64); len(sr) != 1 || sr[0] != SampleRate || len(out[2].Shape) != 1 {
		t.Fatalf("sr = %v %v", out[2].Shape, sr)
	}
	f := out[3].Data.([]float32)
	if len(f) != len(Features) || out[3].Shape[1] != int64(len(Features)) {
		t.Fatalf("features = %v", out[3].Shape)
	}
	// rms² is the sum of the sines' mean squares (A²/2), up to the frame
	// not holding whole periods.
	if want := math.Sqrt(0.125 + 0.005); math.Abs(float64(f[0])-want) > 0.01 {
		t.Errorf("rms = %v, want ≈ %v", f[0], want)
	}
	if f[1] < 0.02 || f[1] > 0.2 {
		t.Errorf("zcr = %v, want a few crossings per 100 samples", f[1])
	}
	want := []float64{10 * math.Log10(0.125), -40, 10 * math.Log10(0.005), -40}
	for b, w := range want {
		got := float64(f[2+b])
		if w > -40 && math.Abs(got-w) > 1 {
			t.Errorf("%s = %.2f dB, want %.2f ± 1", Features[2+b], got, w)
		}
		if w == -40 && got > w {
			t.Errorf("%s = %.2f dB, want below %v (nothing there but leakage)", Features[2+b], got, w)
		}
	}
	t.Logf("features %v = %v", Features, f)
}

func TestSilence(t *testing.T) {
	out, err := Transform(make([]byte, Bytes))
	if err != nil {
		t.Fatal(err)
	}
	f := out[3].Data.([]float32)
	if f[0] != 0 || f[1] != 0 {
		t.Errorf("rms, zcr of silence = %v, %v", f[0], f[1])
	}
	for b := 2; b < len(f); b++ {
		if f[b] != -100 {
			t.Errorf("%s of silence = %v, want -100", Features[b], f[b])
		}
	}
}

func TestBandsSeparate(t *testing.T) {
	// A full-scale-ish sine in the middle of each band puts its energy
	// in that band.
	for b, hz := range []float64{150, 600, 2000, 5000} {
		out, err := Transform(pcm(sines([2]float64{hz, 0.7})))
		if err != nil {
			t.Fatal(err)
		}
		f := out[3].Data.([]float32)[2:]
		for o := range f {
			if o != b && f[o] > f[b]-20 {
				t.Errorf("%v Hz: band %s = %.1f dB, not far below %s = %.1f dB", hz, Features[2+o], f[o], Features[2+b], f[b])
			}
		}
	}
}

func TestFFTMatchesDFT(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var re, im [Samples]float64
	x := make([]complex128, Samples)
	for i := range x {
		x[i] = complex(r.Float64()-0.5, r.Float64()-0.5)
		re[i], im[i] = real(x[i]), imag(x[i])
	}
	fft(&re, &im)
	for k := 0; k < Samples; k += 37 {
		var want complex128
		for n, v := range x {
			want += v * cmplx.Rect(1, -2*math.Pi*float64(k*n)/Samples)
		}
		if got := complex(re[k], im[k]); cmplx.Abs(got-want) > 1e-9 {
			t.Fatalf("X[%d] = %v, DFT says %v", k, got, want)
		}
	}
}

func TestProcessErrors(t *testing.T) {
	raw := func(n int) tensor.Tensor {
		return tensor.Tensor{Name: RawName, Datatype: tensor.Uint8, Shape: []int64{int64(n)}, Data: make([]byte, n)}
	}
	tests := []struct {
		name string
		in   []tensor.Tensor
		msg  string
	}{
		{"none", nil, "no tensors"},
		{"short", []tensor.Tensor{raw(1022)}, "1022 bytes of PCM, want exactly 1024"},
		{"long", []tensor.Tensor{raw(2048)}, "2048 bytes"},
		{"odd", []tensor.Tensor{raw(1023)}, "1023 bytes"},
		{"two", []tensor.Tensor{raw(Bytes), raw(Bytes)}, "2 tensors"},
		{"name", []tensor.Tensor{{Name: "pcm", Datatype: tensor.Uint8, Shape: []int64{Bytes}, Data: make([]byte, Bytes)}}, `"pcm"`},
		{"type", []tensor.Tensor{{Name: RawName, Datatype: tensor.Int16, Shape: []int64{Samples}, Data: make([]int16, Samples)}}, "INT16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Process(tt.in)
			if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Process error = %v, want ErrInput mentioning %q", err, tt.msg)
			}
		})
	}
	if _, err := Process([]tensor.Tensor{raw(Bytes)}); err != nil {
		t.Fatal(err)
	}
}

func FuzzTransform(f *testing.F) {
	f.Add(pcm(sines([2]float64{220, 0.5})))
	f.Add(make([]byte, Bytes))
	f.Add([]byte{1, 2, 3})
	full := make([]byte, Bytes)
	for i := range full {
		full[i] = 0x80 // -32768 and -32640 and friends: full-scale negatives
	}
	f.Add(full)
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := Transform(raw)
		if len(raw) != Bytes {
			if !errors.Is(err, ErrInput) {
				t.Fatalf("%d bytes: err = %v", len(raw), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out {
			if err := (tensor.Spec{Name: o.Name, Datatype: o.Datatype, Shape: o.Shape}).Matches(o, false); err != nil {
				t.Fatalf("output %q: %v", o.Name, err)
			}
		}
		f := out[3].Data.([]float32)
		if f[0] < 0 || f[0] > 1.0001 || f[1] < 0 || f[1] > 1 {
			t.Fatalf("rms, zcr out of range: %v", f)
		}
	})
}
