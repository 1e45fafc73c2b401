package drift_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/drift"
)

// fleetProfile has a normal feature, a heavy-tailed one and a categorical
// one.
func fleetProfile(t testing.TB) *drift.Profile {
	r := rand.New(rand.NewPCG(11, 12))
	const n = 3000
	x, y := normals(r, n, 0, 1), make([]float64, n)
	for i := range y {
		y[i] = math.Exp(0.8 * r.NormFloat64()) // log-normal
	}
	cats := make([]string, 12)
	weights := make([]float64, 12)
	for i := range cats {
		cats[i] = fmt.Sprintf("k%d", i)
		weights[i] = 1 / float64(i+1)
	}
	s := &drift.Schema{Features: []drift.FeatureSchema{
		{Name: "x", Kind: drift.Numerical},
		{Name: "y", Kind: drift.Numerical, Test: drift.TestKS},
		{Name: "c", Kind: drift.Categorical, Test: drift.TestChiSquare},
	}}
	return mustBuild(t, s, map[string]any{"x": x, "y": y, "c": labels(r, n, cats, weights)})
}

type device struct {
	x, y    []float64
	c       []string
	latency []time.Duration
	failed  []bool
	start   time.Time
}

func fleet(devices int) []device {
	r := rand.New(rand.NewPCG(21, 22))
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	out := make([]device, devices)
	for i := range out {
		d := &out[i]
		n := r.IntN(400)
		if i == 7 {
			n = 0 // a device with an empty window
		}
		shift := 0.3 * float64(i%3) // a third of the fleet drifted
		d.start = base.Add(time.Duration(r.IntN(60)) * time.Second)
		for range n {
			d.x = append(d.x, shift+r.NormFloat64())
			d.y = append(d.y, math.Exp(0.8*r.NormFloat64()+shift))
			switch {
			case r.IntN(50) == 0:
				d.c = append(d.c, fmt.Sprintf("new%d", r.IntN(40))) // many new labels
			case r.IntN(30) == 0:
				d.c = append(d.c, "") // missing
			default:
				d.c = append(d.c, fmt.Sprintf("k%d", r.IntN(12)))
			}
			if r.IntN(40) == 0 {
				d.x[len(d.x)-1] = math.NaN() // missing
			}
			d.latency = append(d.latency, time.Duration(1000+r.IntN(5000))*time.Microsecond)
			d.failed = append(d.failed, r.IntN(100) == 0)
		}
	}
	return out
}

func (d *device) observe(t testing.TB, s *drift.Summary) {
	t.Helper()
	for i := range d.x {
		if err := s.ObserveMap(map[string]any{"x": d.x[i], "y": d.y[i], "c": d.c[i]}); err != nil {
			t.Fatal(err)
		}
		s.ObserveHealth(d.latency[i], d.failed[i])
	}
}

// TestMergeEqualsPooled: the summaries of 50 devices, each encoded and
// decoded as fleetd receives them and merged, equal the summary of the
// pooled observations, and every statistic computed from them is
// identical; against the pooled raw data every statistic is within its
// bound.
func TestMergeEqualsPooled(t *testing.T) {
	p := fleetProfile(t)
	devs := fleet(50)
	pooled := drift.NewSummary(p)
	var merged *drift.Summary
	raw := map[string]any{"x": []float64{}, "y": []float64{}, "c": []string{}}
	var first, last time.Time
	for i := range devs {
		d := &devs[i]
		s := drift.NewSummary(p)
		s.Start, s.End = d.start, d.start.Add(time.Minute)
		d.observe(t, s)
		d.observe(t, pooled)
		raw["x"] = append(raw["x"].([]float64), d.x...)
		raw["y"] = append(raw["y"].([]float64), d.y...)
		raw["c"] = append(raw["c"].([]string), d.c...)
		if first.IsZero() || d.start.Before(first) {
			first = d.start
		}
		if d.start.Add(time.Minute).After(last) {
			last = d.start.Add(time.Minute)
		}
		// Alternate the encodings.
		var b []byte
		var err error
		switch i % 3 {
		case 0:
			b, err = s.MarshalBinary()
		case 1:
			b, err = s.MarshalJSON()
		case 2:
			b, err = s.MarshalBase64JSON()
		}
		if err != nil {
			t.Fatal(err)
		}
		dec, err := drift.DecodeSummary(b)
		if err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
		if merged == nil {
			merged = dec
			continue
		}
		if err := merged.Merge(dec); err != nil {
			t.Fatal(err)
		}
	}
	pooled.Start, pooled.End = first, last
	if !merged.Start.Equal(first) || !merged.End.Equal(last) {
		t.Errorf("merged window %v to %v, want %v to %v", merged.Start, merged.End, first, last)
	}
	if merged.Predictions() != pooled.Predictions() || merged.Errors() != pooled.Errors() {
		t.Errorf("health: merged %d/%d, pooled %d/%d", merged.Errors(), merged.Predictions(), pooled.Errors(), pooled.Predictions())
	}
	for _, q := range []float64{0.5, 0.95, 0.99} {
		a, _ := merged.LatencyQuantile(q)
		b, _ := pooled.LatencyQuantile(q)
		if a != b {
			t.Errorf("latency p%g: merged %v, pooled %v", 100*q, a, b)
		}
	}
	// The encodings agree except for the sums' rounding and which new
	// category names survive the bound.
	mj, pj := canonical(t, merged), canonical(t, pooled)
	if !reflect.DeepEqual(mj, pj) {
		t.Errorf("merged summary differs from the pooled one:\nmerged %v\npooled %v", mj, pj)
	}

	mr, err := drift.Compare(p, merged, drift.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := drift.Compare(p, pooled, drift.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	er, err := drift.CompareData(p, data(t, raw), drift.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkFinite(t, mr)
	for i := range mr.Features {
		m, po, ex := mr.Features[i], pr.Features[i], er.Features[i]
		if !reflect.DeepEqual(m.Stats, po.Stats) || m.Statistic != po.Statistic || m.Drift != po.Drift || m.Count != po.Count || m.Missing != po.Missing {
			t.Errorf("%s: merged %+v, pooled %+v", m.Name, m, po)
		}
		if m.Window != nil && (!near(m.Window.Mean, po.Window.Mean, 1e-12, 1e-9) || !near(m.Window.Std, po.Window.Std, 1e-12, 1e-9) ||
			m.Window.Min != po.Window.Min || m.Window.Max != po.Window.Max) {
			t.Errorf("%s: window stats merged %+v, pooled %+v", m.Name, *m.Window, *po.Window)
		}
		if m.Window != nil && (!near(m.Window.Mean, ex.Window.Mean, 1e-12, 1e-9) || !near(m.Window.Std, ex.Window.Std, 1e-12, 1e-9)) {
			t.Errorf("%s: window stats merged %+v, raw %+v", m.Name, *m.Window, *ex.Window)
		}
		if m.Count != ex.Count || m.Missing != ex.Missing {
			t.Errorf("%s: counts merged %d/%d, raw %d/%d", m.Name, m.Count, m.Missing, ex.Count, ex.Missing)
		}
		// Against the raw data: histogram statistics exact, the rest
		// within the bounds.
		ms, es := m.Stats, ex.Stats
		if !near(*ms.PSI, *es.PSI, 1e-12, 1e-12) || !near(*ms.JensenShannon, *es.JensenShannon, 1e-12, 1e-12) {
			t.Errorf("%s: PSI/JS merged %g/%g, raw %g/%g", m.Name, *ms.PSI, *ms.JensenShannon, *es.PSI, *es.JensenShannon)
		}
		if m.Kind == drift.Numerical {
			if d := math.Abs(*ms.KS - *es.KS); d > *ms.KSBound {
				t.Errorf("%s: K-S merged %g, raw %g: off by %g, bound %g", m.Name, *ms.KS, *es.KS, d, *ms.KSBound)
			}
			if d := math.Abs(*ms.Wasserstein - *es.Wasserstein); d > *ms.WassersteinBnd {
				t.Errorf("%s: Wasserstein merged %g, raw %g: off by %g, bound %g", m.Name, *ms.Wasserstein, *es.Wasserstein, d, *ms.WassersteinBnd)
			}
		} else if *ms.ChiSquare != *es.ChiSquare || *ms.ChiSquarePValue != *es.ChiSquarePValue {
			t.Errorf("%s: chi-squared merged %g (p %g), raw %g (p %g)", m.Name, *ms.ChiSquare, *ms.ChiSquarePValue, *es.ChiSquare, *es.ChiSquarePValue)
		}
		if m.Drift != ex.Drift {
			t.Errorf("%s: verdict merged %v, raw %v", m.Name, m.Drift, ex.Drift)
		}
		if len(m.NewCategories) > drift.MaxNewCategories {
			t.Errorf("%s: %d new categories named", m.Name, len(m.NewCategories))
		}
	}
	if mr.Drifted == 0 {
		t.Errorf("a fleet of which a third drifted by 0.6σ shows no drift: %+v", mr)
	}
}

// canonical decodes a summary's JSON form without the sums (rounding
// differs with the order of additions) and the new category names.
func canonical(t *testing.T, s *drift.Summary) map[string]any {
	t.Helper()
	b, err := s.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range m["features"].([]any) {
		f := f.(map[string]any)
		delete(f, "sum")
		delete(f, "sumSq")
		delete(f, "new")
	}
	return m
}

func TestMergeMismatch(t *testing.T) {
	p1 := fleetProfile(t)
	r := rand.New(rand.NewPCG(1, 1))
	p2 := mustBuild(t, twoFeatures(), map[string]any{"x": normals(r, 100, 0, 1), "c": labels(r, 100, refCats, refWeights)})
	a, b := drift.NewSummary(p1), drift.NewSummary(p2)
	if err := a.Merge(b); !errors.Is(err, drift.ErrMismatch) {
		t.Errorf("Merge across profiles = %v, want ErrMismatch", err)
	}
	if _, err := drift.Compare(p1, b, drift.CompareOptions{}); !errors.Is(err, drift.ErrMismatch) {
		t.Errorf("Compare with another profile's summary = %v, want ErrMismatch", err)
	}
	// Merging a summary into itself doubles it.
	c := drift.NewSummary(p1)
	c.ObserveMap(map[string]any{"x": 1.0, "y": 2.0, "c": "k1"})
	if err := c.Merge(c); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Count(0); n != 2 {
		t.Errorf("self-merge: %d values, want 2", n)
	}
	dec, _ := drift.DecodeSummary(mustJSON(t, c))
	if err := dec.Observe([]float64{1, 2, 3}); !errors.Is(err, drift.ErrInput) {
		t.Errorf("Observe on a decoded summary = %v, want ErrInput", err)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
