// Package frame is the Silero VAD bundle's pre-processing transform: one
// frame of 16-bit PCM at 16 kHz in, the model's inputs and frame-level
// drift features out. The WASM pre-processor (package main one directory
// up) and native Go callers (benchmarks, tools that build reference
// profiles) run this same code.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// The frame format.
const (
	SampleRate   = 16000
	Samples      = 512         // samples per frame
	Bytes        = 2 * Samples // 16-bit little-endian PCM
	RawName      = "raw"       // the input tensor's name
	FeaturesName = "features"  // the drift-feature tensor's name
)

// Features names the columns of the "features" tensor, in order:
//
//   - rms: root mean square of the normalized samples (x/32768), in [0, 1].
//   - zcr: zero-crossing rate, sign changes between consecutive samples
//     divided by Samples-1, in [0, 1].
//   - band_LO_HI: power in the band [LO, HI) Hz, in dB (10·log10 of the
//     mean-square amplitude the band carries, floor -100 dB), from a
//     512-point FFT of the Hann-windowed frame, normalized so that a full
//     scale sine in the band reads about -3 dB. Bins of 31.25 Hz; DC is
//     excluded.
var Features = []string{"rms", "zcr", "band_0_300", "band_300_1000", "band_1000_3000", "band_3000_8000"}

// bands are the spectral bands as FFT bin ranges [lo, hi): bin k is
// k·SampleRate/Samples Hz.
var bands = [][2]int{{1, 10}, {10, 32}, {32, 96}, {96, Samples/2 + 1}}

// ErrInput is returned for input that is not one PCM frame.
var ErrInput = errors.New("silero-vad pre: invalid input")

// Process is the pre-processor: the input must be exactly one UINT8 tensor
// named "raw" holding Bytes bytes. The outputs are input FP32 [1,512]
// (samples/32768), state FP32 [2,1,128] (zeros), sr INT64 [1] (16000) and
// features FP32 [1,6] (see Features).
func Process(in []tensor.Tensor) ([]tensor.Tensor, error) {
	if len(in) != 1 || in[0].Name != RawName {
		return nil, fmt.Errorf("%w: want one UINT8 tensor %q of %d bytes (%d samples of 16-bit little-endian PCM at %d Hz), got %s", ErrInput, RawName, Bytes, Samples, SampleRate, describe(in))
	}
	raw, ok := in[0].Data.([]byte)
	if !ok || in[0].Datatype != tensor.Uint8 {
		return nil, fmt.Errorf("%w: tensor %q is %s, want UINT8", ErrInput, RawName, in[0].Datatype)
	}
	return Transform(raw)
}

func describe(in []tensor.Tensor) string {
	if len(in) == 0 {
		return "no tensors"
	}
	s := fmt.Sprintf("%d tensors:", len(in))
	for _, t := range in {
		s += fmt.Sprintf(" %q %s %v", t.Name, t.Datatype, t.Shape)
	}
	return s
}

// Transform turns one frame of PCM bytes into the model inputs and the
// drift features.
func Transform(raw []byte) ([]tensor.Tensor, error) {
	if len(raw) != Bytes {
		return nil, fmt.Errorf("%w: %d bytes of PCM, want exactly %d (%d samples of 16-bit little-endian at %d Hz)", ErrInput, len(raw), Bytes, Samples, SampleRate)
	}
	x := make([]float32, Samples)
	for i := range x {
		x[i] = float32(int16(binary.LittleEndian.Uint16(raw[2*i:]))) / 32768
	}
	return []tensor.Tensor{
		{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, Samples}, Data: x},
		{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, 1, 128}, Data: make([]float32, 2*128)},
		{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{SampleRate}},
		{Name: FeaturesName, Datatype: tensor.FP32, Shape: []int64{1, int64(len(Features))}, Data: features(x)},
	}, nil
}

// features computes Features for one frame of normalized samples.
func features(x []float32) []float32 {
	var sum float64
	crossings := 0
	for i, v := range x {
		sum += float64(v) * float64(v)
		if i > 0 && (v < 0) != (x[i-1] < 0) {
			crossings++
		}
	}
	out := make([]float32, 0, len(Features))
	out = append(out, float32(math.Sqrt(sum/Samples)), float32(crossings)/float32(Samples-1))

	var re, im [Samples]float64
	for i, v := range x {
		re[i] = float64(v) * hann[i]
	}
	fft(&re, &im)
	for _, b := range bands {
		var p float64
		for k := b[0]; k < b[1]; k++ {
			p += re[k]*re[k] + im[k]*im[k]
		}
		p *= 2 / (Samples * hannPower)
		out = append(out, float32(10*math.Log10(p+1e-10)))
	}
	return out
}

// hann is the periodic Hann window; hannPower is the sum of its squares.
var hann, hannPower = func() ([Samples]float64, float64) {
	var w [Samples]float64
	var p float64
	for i := range w {
		w[i] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/Samples)
		p += w[i] * w[i]
	}
	return w, p
}()

// cosTable[k], sinTable[k] = cos, -sin(2πk/Samples): the twiddle factors.
var cosTable, sinTable = func() (c, s [Samples / 2]float64) {
	for k := range c {
		c[k] = math.Cos(2 * math.Pi * float64(k) / Samples)
		s[k] = -math.Sin(2 * math.Pi * float64(k) / Samples)
	}
	return c, s
}()

// bitrev[i] is i with its log2(Samples) bits reversed.
var bitrev = func() (r [Samples]uint16) {
	for i, j := 1, 0; i < Samples; i++ {
		bit := Samples >> 1
		for ; j&bit != 0; bit >>= 1 {
			j ^= bit
		}
		j ^= bit
		r[i] = uint16(j)
	}
	return r
}()

// fft is an in-place iterative radix-2 FFT of Samples points, on separate
// real and imaginary parts.
func fft(re, im *[Samples]float64) {
	for i := range Samples {
		if j := int(bitrev[i]); i < j {
			re[i], re[j] = re[j], re[i]
			im[i], im[j] = im[j], im[i]
		}
	}
	for size := 2; size <= Samples; size <<= 1 {
		half, step := size/2, Samples/size
		for start := 0; start < Samples; start += size {
			for k := range half {
				wr, wi := cosTable[k*step], sinTable[k*step]
				a, b := start+k, start+k+half
				tr := wr*re[b] - wi*im[b]
				ti := wr*im[b] + wi*re[b]
				re[b], im[b] = re[a]-tr, im[a]-ti
				re[a] += tr
				im[a] += ti
			}
		}
	}
}
