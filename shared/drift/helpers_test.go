package drift_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/shared/drift"
)

func near(got, want, abs, rel float64) bool {
	return math.Abs(got-want) <= abs+rel*math.Abs(want)
}

func normals(r *rand.Rand, n int, mu, sigma float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = mu + sigma*r.NormFloat64()
	}
	return out
}

// labels draws n labels with the given weights.
func labels(r *rand.Rand, n int, cats []string, weights []float64) []string {
	var total float64
	for _, w := range weights {
		total += w
	}
	out := make([]string, n)
	for i := range out {
		u := r.Float64() * total
		j := 0
		for ; j < len(weights)-1 && u >= weights[j]; j++ {
			u -= weights[j]
		}
		out[i] = cats[j]
	}
	return out
}

// twoFeatures is a schema with a numerical feature x and a categorical c.
func twoFeatures() *drift.Schema {
	return &drift.Schema{Features: []drift.FeatureSchema{
		{Name: "x", Kind: drift.Numerical},
		{Name: "c", Kind: drift.Categorical},
	}}
}

func mustBuild(t testing.TB, s *drift.Schema, cols map[string]any) *drift.Profile {
	t.Helper()
	p, err := drift.Build(s, data(t, cols))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func data(t testing.TB, cols map[string]any) *drift.Data {
	t.Helper()
	d := drift.NewData()
	for name, c := range cols {
		var err error
		switch v := c.(type) {
		case []float64:
			err = d.SetNumerical(name, v)
		case []string:
			err = d.SetCategorical(name, v)
		default:
			t.Fatalf("column %s: %T", name, c)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// summarize observes x and c row by row into a new summary of p.
func summarize(t testing.TB, p *drift.Profile, x []float64, c []string) *drift.Summary {
	t.Helper()
	s := drift.NewSummary(p)
	for i := range x {
		if err := s.ObserveMap(map[string]any{"x": x[i], "c": c[i]}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// checkFinite fails unless the report encodes as JSON (which refuses NaN
// and ±Inf anywhere) and every number in it is finite.
func checkFinite(t *testing.T, r *drift.Report) {
	t.Helper()
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("report does not encode: %v", err)
	}
}

func feature(r *drift.Report, name string) *drift.FeatureReport {
	for i := range r.Features {
		if r.Features[i].Name == name {
			return &r.Features[i]
		}
	}
	return nil
}
