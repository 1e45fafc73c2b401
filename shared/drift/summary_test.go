package drift_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// codedProfile: x numerical from tensor "features" column 1, y from
// "features" column 0, k categorical codes from tensor "output" column 0.
func codedProfile(t testing.TB) *drift.Profile {
	r := rand.New(rand.NewPCG(5, 6))
	n := 400
	x, y, k := normals(r, n, 10, 2), normals(r, n, -3, 0.5), make([]float64, n)
	for i := range k {
		k[i] = float64(r.IntN(3))
	}
	s := &drift.Schema{Features: []drift.FeatureSchema{
		{Name: "x", Kind: drift.Numerical, Source: &drift.Source{Tensor: "features", Index: 1}},
		{Name: "y", Kind: drift.Numerical, Source: &drift.Source{Tensor: "features", Index: 0}},
		{Name: "k", Kind: drift.Categorical, Source: &drift.Source{Tensor: "output", Index: 0}},
	}}
	d := drift.NewData()
	d.SetNumerical("x", x)
	d.SetNumerical("y", y)
	d.SetNumerical("k", k)
	p, err := drift.Build(s, d)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestObserveForms: Observe, ObserveMap and ObserveTensors (batched and
// not) of the same predictions give the same summary.
func TestObserveForms(t *testing.T) {
	p := codedProfile(t)
	r := rand.New(rand.NewPCG(7, 8))
	type row struct{ x, y, k float64 }
	var rows []row
	for i := range 300 {
		rw := row{x: 10 + 2.5*r.NormFloat64(), y: -3 + 0.5*r.NormFloat64(), k: float64(r.IntN(4))} // k=3 is new
		if i%50 == 0 {
			rw.y = math.NaN()
		}
		// float32 precision, as tensors carry it.
		rw.x, rw.y = float64(float32(rw.x)), float64(float32(rw.y))
		rows = append(rows, rw)
	}
	a, b, c, d := drift.NewSummary(p), drift.NewSummary(p), drift.NewSummary(p), drift.NewSummary(p)
	var batchF []float32
	var batchK []int64
	for _, rw := range rows {
		if err := a.Observe([]float64{rw.x, rw.y, rw.k}); err != nil {
			t.Fatal(err)
		}
		if err := b.ObserveMap(map[string]any{"x": rw.x, "y": float32(rw.y), "k": int(rw.k), "unused": "z"}); err != nil {
			t.Fatal(err)
		}
		feats := []tensor.Tensor{{Name: "features", Datatype: tensor.FP32, Shape: []int64{1, 2}, Data: []float32{float32(rw.y), float32(rw.x)}}}
		outs := []tensor.Tensor{{Name: "output", Datatype: tensor.Int64, Shape: []int64{1, 1}, Data: []int64{int64(rw.k)}}}
		if err := c.ObserveTensors(feats, outs); err != nil {
			t.Fatal(err)
		}
		batchF = append(batchF, float32(rw.y), float32(rw.x))
		batchK = append(batchK, int64(rw.k))
	}
	n := int64(len(rows))
	err := d.ObserveTensors([]tensor.Tensor{
		{Name: "output", Datatype: tensor.Int64, Shape: []int64{n, 1}, Data: batchK},
		{Name: "features", Datatype: tensor.FP32, Shape: []int64{n, 2}, Data: batchF},
	})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := a.MarshalBinary()
	for name, s := range map[string]*drift.Summary{"ObserveMap": b, "ObserveTensors": c, "ObserveTensors batched": d} {
		got, _ := s.MarshalBinary()
		if !bytes.Equal(got, want) {
			t.Errorf("%s gives a different summary from Observe", name)
		}
	}
	rep, err := drift.Compare(p, a, drift.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k := feature(rep, "k")
	if k.NewCategories["3"] == 0 || !k.Drift {
		t.Errorf("k: a new code 3 in a quarter of the window: %+v", k)
	}
	if y := feature(rep, "y"); y.Missing != 6 || y.Count != 294 {
		t.Errorf("y: %d missing, %d values; want 6, 294", y.Missing, y.Count)
	}
}

func TestObserveErrors(t *testing.T) {
	p := codedProfile(t)
	s := drift.NewSummary(p)
	f := func(shape []int64, data []float32) tensor.Tensor {
		return tensor.Tensor{Name: "features", Datatype: tensor.FP32, Shape: shape, Data: data}
	}
	out := tensor.Tensor{Name: "output", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{1}}
	for _, tc := range []struct {
		name string
		ts   []tensor.Tensor
		err  string
	}{
		{"no features tensor", []tensor.Tensor{out}, `no tensor "features"`},
		{"too few columns", []tensor.Tensor{f([]int64{2, 1}, []float32{1, 2}), out}, "column 1"},
		{"rows differ", []tensor.Tensor{f([]int64{2, 2}, []float32{1, 2, 3, 4}), out}, "rows"},
		{"inconsistent", []tensor.Tensor{f([]int64{1, 3}, []float32{1, 2}), out}, "shape"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.ObserveTensors(tc.ts)
			if !errors.Is(err, drift.ErrInput) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ObserveTensors = %v, want ErrInput mentioning %q", err, tc.err)
			}
		})
	}
	if err := s.Observe([]float64{1}); !errors.Is(err, drift.ErrInput) {
		t.Errorf("Observe with one value for 3 features = %v", err)
	}
	if err := s.ObserveMap(map[string]any{"x": "high"}); !errors.Is(err, drift.ErrInput) {
		t.Errorf("ObserveMap with a string for a numerical feature = %v", err)
	}
	if err := s.ObserveMap(map[string]any{"x": []int{1}}); !errors.Is(err, drift.ErrInput) {
		t.Errorf("ObserveMap with a slice = %v", err)
	}
	// Nothing was recorded by the failed calls.
	for i := range s.Features() {
		if n, m := s.Count(i); n != 0 || m != 0 {
			t.Errorf("feature %d: %d values, %d missing after failed calls", i, n, m)
		}
	}
}

// TestDegenerate: empty windows, missing values only, constant references
// and extreme values give clear statuses and no NaN or infinity.
func TestDegenerate(t *testing.T) {
	constRef := mustBuild(t, twoFeatures(), map[string]any{"x": make([]float64, 100), "c": labels(rand.New(rand.NewPCG(1, 1)), 100, []string{"a"}, []float64{1})})
	r := rand.New(rand.NewPCG(9, 9))
	normRef := mustBuild(t, twoFeatures(), map[string]any{"x": normals(r, 300, 0, 1), "c": labels(r, 300, refCats, refWeights)})
	for _, tc := range []struct {
		name   string
		p      *drift.Profile
		x      []float64
		c      []string
		status drift.Status
		drift  bool
	}{
		{"empty", normRef, nil, nil, drift.StatusNotEnoughData, false},
		{"all missing", normRef, slicesRepeat(math.NaN(), 100), slicesRepeat("", 100), drift.StatusNotEnoughData, false},
		{"constant reference, same values", constRef, make([]float64, 100), slicesRepeat("a", 100), drift.StatusConstant, false},
		{"constant reference, other values", constRef, normals(r, 100, 0, 1), slicesRepeat("b", 100), drift.StatusOK, true},
		{"huge values", normRef, slicesRepeat(1e300, 50), slicesRepeat("a", 50), drift.StatusConstant, true},
		{"infinities", normRef, append(slicesRepeat(math.Inf(1), 50), normals(r, 50, 0, 1)...), slicesRepeat("a", 100), drift.StatusOK, false},
		{"extremes", normRef, []float64{-1e308, 1e308, -1e308, 1e308, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, slicesRepeat("a", 30), drift.StatusOK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := summarize(t, tc.p, tc.x, tc.c)
			for _, enc := range []func() ([]byte, error){s.MarshalBinary, s.MarshalJSON} {
				b, err := enc()
				if err != nil {
					t.Fatal(err)
				}
				dec, err := drift.DecodeSummary(b)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := drift.Compare(tc.p, dec, drift.CompareOptions{})
				if err != nil {
					t.Fatal(err)
				}
				checkFinite(t, rep)
				fx := feature(rep, "x")
				if fx.Status != tc.status || fx.Drift != tc.drift {
					t.Errorf("x: status %s (%s), drift %v (%s %g); want %s, %v", fx.Status, fx.Reason, fx.Drift, fx.Test, fx.Statistic, tc.status, tc.drift)
				}
			}
			ex, err := drift.CompareData(tc.p, data(t, map[string]any{"x": orEmpty(tc.x), "c": orEmpty(tc.c)}), drift.CompareOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkFinite(t, ex)
		})
	}
}

func slicesRepeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func TestHealth(t *testing.T) {
	p := codedProfile(t)
	s := drift.NewSummary(p)
	for i := 1; i <= 1000; i++ {
		s.ObserveHealth(time.Duration(i)*time.Millisecond, i%100 == 0)
	}
	rep, err := drift.Compare(p, s, drift.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := rep.Health
	if h.Predictions != 1000 || h.Errors != 10 || h.ErrorRate != 0.01 || h.LatencyMs == nil {
		t.Fatalf("health %+v", h)
	}
	for _, q := range []struct{ got, want float64 }{{h.LatencyMs.P50, 500}, {h.LatencyMs.P95, 950}, {h.LatencyMs.P99, 990}} {
		if !near(q.got, q.want, 1, drift.LatencyAccuracy) {
			t.Errorf("latency quantile %g ms, want %g within %g%%", q.got, q.want, 100*drift.LatencyAccuracy)
		}
	}
	if rep.Status != drift.StatusNotEnoughData {
		t.Errorf("report status %s with no feature values", rep.Status)
	}
}

func TestDecodeErrors(t *testing.T) {
	p := codedProfile(t)
	s := drift.NewSummary(p)
	s.Observe([]float64{10, -3, 1})
	bin, _ := s.MarshalBinary()
	js, _ := s.MarshalJSON()
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"empty", nil, "neither"},
		{"magic", []byte("EFDX\x01"), "neither"},
		{"version", append([]byte("EFDS\x02"), bin[5:]...), "version 2"},
		{"truncated", bin[:len(bin)-3], "truncated|bytes left"},
		{"trailing", append(append([]byte{}, bin...), 0), "after the summary"},
		{"json unknown field", bytes.Replace(js, []byte(`"v":1`), []byte(`"v":1,"w":2`), 1), "unknown field"},
		{"json count", bytes.Replace(js, []byte(`"n":1,`), []byte(`"n":2,`), 1), "holds 1 values, not n = 2"},
		{"json profile", bytes.Replace(js, []byte(`"profile":"`), []byte(`"profile":"zz`), 1), "hex"},
		{"json errors", bytes.Replace(js, []byte(`"errors":0`), []byte(`"errors":5`), 1), "5 errors of 0"},
		{"base64", []byte(`"!!!"`), "base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := drift.DecodeSummary(tc.in)
			if !errors.Is(err, drift.ErrSummary) || !containsAny(err.Error(), tc.err) {
				t.Fatalf("DecodeSummary = %v, want ErrSummary mentioning %q", err, tc.err)
			}
		})
	}
}

func FuzzDecodeSummary(f *testing.F) {
	p := codedProfile(f)
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 50} {
		s := drift.NewSummary(p)
		s.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for range n {
			s.Observe([]float64{10 + 5*r.NormFloat64(), -3 + r.NormFloat64(), float64(r.IntN(5))})
			s.ObserveHealth(time.Duration(r.IntN(1e7)), r.IntN(10) == 0)
		}
		for _, enc := range []func() ([]byte, error){s.MarshalBinary, s.MarshalJSON, s.MarshalBase64JSON} {
			b, err := enc()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := drift.DecodeSummary(b)
		if err != nil {
			if !errors.Is(err, drift.ErrSummary) {
				t.Fatalf("error %v does not wrap ErrSummary", err)
			}
			return
		}
		// What decodes re-encodes to the same summary, in both forms.
		bin, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		js, err := s.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range [][]byte{bin, js} {
			again, err := drift.DecodeSummary(e)
			if err != nil {
				t.Fatalf("re-decoding %.40q: %v", e, err)
			}
			js2, _ := again.MarshalJSON()
			if !bytes.Equal(js, js2) {
				t.Fatalf("round trip changed the summary:\n%s\n%s", js, js2)
			}
		}
		// It merges with itself and, if it fits the profile, compares.
		if err := s.Merge(s); err != nil {
			t.Fatal(err)
		}
		if rep, err := drift.Compare(p, s, drift.CompareOptions{}); err == nil {
			if _, err := json.Marshal(rep); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, drift.ErrMismatch) {
			t.Fatalf("Compare = %v", err)
		}
	})
}

// containsAny reports whether s contains one of the |-separated words.
func containsAny(s, words string) bool {
	for _, w := range strings.Split(words, "|") {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}
