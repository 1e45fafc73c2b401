package drift_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/klauspost/compress/zstd"

	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// wideProfile has k numerical features, feature j ~ N(j, 1+j/10).
func wideProfile(b testing.TB, k int, opts drift.Options) *drift.Profile {
	r := rand.New(rand.NewPCG(uint64(k), 1))
	s := &drift.Schema{Options: opts}
	cols := map[string]any{}
	for j := range k {
		name := fmt.Sprintf("f%02d", j)
		s.Features = append(s.Features, drift.FeatureSchema{Name: name, Kind: drift.Numerical})
		cols[name] = normals(r, 5000, float64(j), 1+float64(j)/10)
	}
	return mustBuild(b, s, cols)
}

// rows returns n rows for wideProfile(k), shifted by shift σ.
func rows(k, n int, shift float64) [][]float64 {
	r := rand.New(rand.NewPCG(uint64(k), 2))
	out := make([][]float64, n)
	for i := range out {
		out[i] = make([]float64, k)
		for j := range k {
			sd := 1 + float64(j)/10
			out[i][j] = float64(j) + sd*(shift+r.NormFloat64())
		}
	}
	return out
}

// BenchmarkObserve is the per-prediction cost on the device, beside the
// bare DDSketch.Add of the same values (the library alone, no histogram,
// moments or linear core).
func BenchmarkObserve(b *testing.B) {
	for _, k := range []int{6, 64} {
		p := wideProfile(b, k, drift.Options{})
		rs := rows(k, 4096, 0)
		b.Run(fmt.Sprintf("features=%d/Summary.Observe", k), func(b *testing.B) {
			s := drift.NewSummary(p)
			i := 0
			for b.Loop() {
				if err := s.Observe(rs[i&4095]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("features=%d/ddsketch.Add", k), func(b *testing.B) {
			sks := make([]*ddsketch.DDSketch, k)
			for j := range sks {
				sks[j], _ = ddsketch.LogCollapsingLowestDenseDDSketch(0.02, 256)
			}
			i := 0
			for b.Loop() {
				for j, v := range rs[i&4095] {
					_ = sks[j].Add(v)
				}
				i++
			}
		})
	}
}

// BenchmarkObserveTensors is the agent's path for the Silero bundle: six
// features from the pre-processor's tensor and the speech probability
// from the model's output.
func BenchmarkObserveTensors(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	s := &drift.Schema{}
	cols := map[string]any{}
	names := []string{"rms", "zcr", "band_0_300", "band_300_1000", "band_1000_3000", "band_3000_8000"}
	for j, n := range names {
		s.Features = append(s.Features, drift.FeatureSchema{Name: n, Kind: drift.Numerical, Source: &drift.Source{Tensor: "features", Index: j}})
		cols[n] = normals(r, 3000, 0, 1)
	}
	s.Features = append(s.Features, drift.FeatureSchema{Name: "speech", Kind: drift.Numerical, Source: &drift.Source{Tensor: "output", Index: 0}})
	cols["speech"] = normals(r, 3000, 0.5, 0.2)
	p := mustBuild(b, s, cols)
	sum := drift.NewSummary(p)
	feats := []tensor.Tensor{{Name: "features", Datatype: tensor.FP32, Shape: []int64{1, 6}, Data: []float32{0.1, 0.2, -30, -40, -50, -60}}}
	outs := []tensor.Tensor{
		{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{0.7}},
		{Name: "stateN", Datatype: tensor.FP32, Shape: []int64{2, 1, 128}, Data: make([]float32, 256)},
	}
	for b.Loop() {
		if err := sum.ObserveTensors(feats, outs); err != nil {
			b.Fatal(err)
		}
		sum.ObserveHealth(3*time.Millisecond, false)
	}
}

// window returns a summary of n predictions of wideProfile(k).
func window(b testing.TB, p *drift.Profile, k, n int, shift float64) *drift.Summary {
	s := drift.NewSummary(p)
	for _, r := range rows(k, n, shift) {
		if err := s.Observe(r); err != nil {
			b.Fatal(err)
		}
		s.ObserveHealth(2*time.Millisecond, false)
	}
	return s
}

func BenchmarkMerge(b *testing.B) {
	for _, k := range []int{6, 64} {
		p := wideProfile(b, k, drift.Options{})
		enc, _ := window(b, p, k, 1000, 0).MarshalBinary()
		b.Run(fmt.Sprintf("features=%d", k), func(b *testing.B) {
			acc, _ := drift.DecodeSummary(enc)
			other, _ := drift.DecodeSummary(enc)
			for b.Loop() {
				if err := acc.Merge(other); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("features=%d/decode+merge", k), func(b *testing.B) {
			acc, _ := drift.DecodeSummary(enc)
			for b.Loop() {
				other, err := drift.DecodeSummary(enc)
				if err != nil {
					b.Fatal(err)
				}
				if err := acc.Merge(other); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncode reports the encoded size of one window (B/window):
// binary, binary+zstd, JSON, JSON+zstd, for 6 and 64 features, windows of
// 1,000 and 10,000 predictions, and sketch accuracies 0.02 (default) and
// 0.05.
func BenchmarkEncode(b *testing.B) {
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	for _, alpha := range []float64{0.02, 0.05} {
		for _, k := range []int{6, 64} {
			p := wideProfile(b, k, drift.Options{SketchAccuracy: alpha})
			for _, n := range []int{1000, 10000} {
				s := window(b, p, k, n, 0.2)
				name := fmt.Sprintf("alpha=%g/features=%d/n=%d", alpha, k, n)
				b.Run(name+"/binary", func(b *testing.B) {
					var out []byte
					for b.Loop() {
						out, _ = s.MarshalBinary()
					}
					b.ReportMetric(float64(len(out)), "B/window")
					b.ReportMetric(float64(len(zw.EncodeAll(out, nil))), "zstd-B/window")
				})
				b.Run(name+"/json", func(b *testing.B) {
					var out []byte
					for b.Loop() {
						out, _ = json.Marshal(s)
					}
					b.ReportMetric(float64(len(out)), "B/window")
					b.ReportMetric(float64(len(zw.EncodeAll(out, nil))), "zstd-B/window")
				})
			}
		}
	}
}

func BenchmarkCompare(b *testing.B) {
	for _, k := range []int{6, 64} {
		p := wideProfile(b, k, drift.Options{})
		s := window(b, p, k, 2000, 0.1)
		b.Run(fmt.Sprintf("features=%d", k), func(b *testing.B) {
			for b.Loop() {
				if _, err := drift.Compare(p, s, drift.CompareOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
