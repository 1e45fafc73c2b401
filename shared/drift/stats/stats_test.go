package stats_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/shared/drift/internal/pyref"
	"github.com/edgefleet/edgefleet/shared/drift/stats"
)

// near reports whether got is within abs or rel of want.
func near(got, want, abs, rel float64) bool {
	return math.Abs(got-want) <= abs+rel*math.Abs(want)
}

func sample(r *rand.Rand, n int, f func(*rand.Rand) float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = f(r)
	}
	return out
}

// TestAgainstSciPy checks the K-S statistic, its exact and asymptotic
// p-values, the Wasserstein distance, PSI and Jensen-Shannon on seeded
// samples, and the Kolmogorov and chi-squared survival functions on
// grids, against SciPy.
func TestAgainstSciPy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	normal := func(mu, sigma float64) func(*rand.Rand) float64 {
		return func(r *rand.Rand) float64 { return mu + sigma*r.NormFloat64() }
	}
	discrete := func(r *rand.Rand) float64 { return float64(r.IntN(7)) }
	type pair struct {
		name   string
		n1, n2 int
		f1, f2 func(*rand.Rand) float64
	}
	pairs := []pair{
		{"equal-sizes-same", 300, 300, normal(0, 1), normal(0, 1)},
		{"equal-sizes-shift", 500, 500, normal(0, 1), normal(0.3, 1)},
		{"small", 5, 7, normal(0, 1), normal(0, 1)},
		{"unequal-same", 1000, 237, normal(0, 1), normal(0, 1)},
		{"unequal-shift", 1000, 2000, normal(0, 1), normal(0.1, 1)},
		{"unequal-scale", 800, 3001, normal(0, 1), normal(0, 1.3)},
		{"ties", 400, 650, discrete, discrete},
		{"large-asymp", 1000, 12000, normal(0, 1), normal(0.05, 1)},
		{"large-asymp-same", 20000, 15000, normal(0, 1), normal(0, 1)},
		{"large-asymp-small-en", 60, 20000, normal(0, 1), normal(0.4, 1)},
		{"far-apart", 200, 300, normal(0, 1), normal(5, 1)},
	}
	var cases []any
	var data [][2][]float64
	for _, p := range pairs {
		a := sample(r, p.n1, p.f1)
		b := sample(r, p.n2, p.f2)
		sa := slices.Sorted(slices.Values(a))
		edges := []float64{sa[0], sa[len(sa)/4], sa[len(sa)/2], sa[3*len(sa)/4], sa[len(sa)-1]}
		edges = slices.Compact(edges)
		cases = append(cases, pyref.Numerical{Kind: "numerical", Reference: a, Current: b, Edges: edges})
		data = append(data, [2][]float64{a, b})
	}
	ksGrid := []int64{1, 2, 5, 10, 50, 140, 141, 500, 1000, 5000, 100000, 200000}
	xs := []float64{0.001, 0.01, 0.02, 0.05, 0.08, 0.1, 0.2, 0.3, 0.45, 0.5, 0.6, 0.9, 0.99}
	for _, n := range ksGrid {
		cases = append(cases, pyref.Grid{Kind: "kstwo", N: n, X: xs})
	}
	chiX := []float64{0.01, 0.5, 1, 3.84, 10, 50, 200, 1000}
	for _, df := range []int{1, 2, 5, 30, 100} {
		cases = append(cases, pyref.Grid{Kind: "chi2", DF: df, X: chiX})
	}
	var results []pyref.Result
	pyref.Run(t, cases, &results)
	if len(results) != len(cases) {
		t.Fatalf("reference.py returned %d results for %d cases", len(results), len(cases))
	}

	for i, p := range pairs {
		want := results[i]
		a := slices.Sorted(slices.Values(data[i][0]))
		b := slices.Sorted(slices.Values(data[i][1]))
		t.Run(p.name, func(t *testing.T) {
			d := stats.KS(a, b)
			if !near(d, want.KS, 1e-12, 0) {
				t.Errorf("KS = %.15g, scipy %.15g", d, want.KS)
			}
			dd, w := stats.Distances(a, stats.Points(b))
			if !near(dd, want.KS, 1e-12, 0) {
				t.Errorf("Distances KS = %.15g, scipy %.15g", dd, want.KS)
			}
			if !near(w, want.Wasserstein, 1e-12, 1e-9) {
				t.Errorf("Wasserstein = %.15g, scipy %.15g", w, want.Wasserstein)
			}
			pv := stats.KSPValue(d, int64(len(a)), int64(len(b)))
			if !near(pv, want.KSP, 1e-12, 1e-8) {
				t.Errorf("KSPValue = %.15g, scipy %.15g", pv, want.KSP)
			}
			pa := stats.KSPValueAsymp(d, int64(len(a)), int64(len(b)))
			if !near(pa, want.KSPAsymp, 1e-12, 1e-8) {
				t.Errorf("KSPValueAsymp = %.15g, scipy %.15g", pa, want.KSPAsymp)
			}
			if got := stats.PSI(want.RefCounts, want.CurCounts); !near(got, want.PSI, 1e-12, 1e-9) {
				t.Errorf("PSI = %.15g, numpy %.15g", got, want.PSI)
			}
			if got := stats.JensenShannon(want.RefCounts, want.CurCounts); !near(got, want.JS, 1e-12, 1e-9) {
				t.Errorf("JensenShannon = %.15g, scipy %.15g", got, want.JS)
			}
		})
	}
	k := len(pairs)
	for gi, n := range ksGrid {
		want := results[k+gi].SF
		for j, x := range xs {
			if got := stats.KolmogorovSF(n, x); !near(got, want[j], 1e-12, 1e-8) {
				t.Errorf("KolmogorovSF(%d, %g) = %.15g, scipy kstwo.sf %.15g", n, x, got, want[j])
			}
		}
	}
	k += len(ksGrid)
	for gi, df := range []int{1, 2, 5, 30, 100} {
		want := results[k+gi].SF
		for j, x := range chiX {
			if got := stats.ChiSquareSF(x, df); !near(got, want[j], 1e-300, 1e-10) {
				t.Errorf("ChiSquareSF(%g, %d) = %.15g, scipy chi2.sf %.15g", x, df, got, want[j])
			}
		}
	}
}

func TestFinite(t *testing.T) {
	// Degenerate inputs give finite, sensible values.
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"PSI empty", stats.PSI([]float64{0, 0}, []float64{0, 0}), 0},
		{"JS empty", stats.JensenShannon([]float64{0, 0}, []float64{1, 2}), 0},
		{"JS disjoint", stats.JensenShannon([]float64{1, 0}, []float64{0, 1}), math.Sqrt(math.Ln2)},
		{"chi2 sf df 0", stats.ChiSquareSF(3, 0), 1},
		{"chi2 sf inf", stats.ChiSquareSF(math.Inf(1), 3), 0},
		{"KS empty", stats.KS(nil, []float64{1}), 0},
		{"KS p n=0", stats.KSPValue(0.5, 0, 10), 1},
		{"KS p d=0", stats.KSPValue(0, 10, 10), 1},
		{"KS p d=1", stats.KSPValue(1, 30, 40), stats.KSPValueExact(1, 30, 40)},
		{"Kolmogorov NaN", stats.KolmogorovSF(10, math.NaN()), 1},
	}
	for _, c := range checks {
		if math.IsNaN(c.got) || math.IsInf(c.got, 0) || !near(c.got, c.want, 1e-12, 1e-12) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	stat, df, p := stats.ChiSquareTest([]float64{10, 0}, []float64{5, 5})
	if df != 1 || !(stat > 0) || math.IsInf(stat, 0) || p > 1e-6 {
		t.Errorf("ChiSquareTest with a new category = %v, %d, %v; want a large finite statistic, df 1, p ≈ 0", stat, df, p)
	}
	stat, df, p = stats.ChiSquareTest([]float64{10, 0}, []float64{5, 0})
	if stat != 0 || df != 0 || p != 1 {
		t.Errorf("ChiSquareTest with one category = %v, %d, %v; want 0, 0, 1", stat, df, p)
	}
}

func TestDistancesPieces(t *testing.T) {
	// A uniform piece over [0, 1] against a fine grid sample of U(0,1):
	// both distances tend to 0.
	ref := make([]float64, 1000)
	for i := range ref {
		ref[i] = (float64(i) + 0.5) / 1000
	}
	ks, w := stats.Distances(ref, []stats.Piece{{Lo: 0, Hi: 1, Mass: 7}})
	if ks > 0.0006 || w > 0.0003 {
		t.Errorf("uniform vs grid: ks %g, w %g; want ≈ 0", ks, w)
	}
	// Shifted by 0.5: W = 0.5, KS = 0.5.
	ks, w = stats.Distances(ref, []stats.Piece{{Lo: 0.5, Hi: 1.5, Mass: 1}})
	if !near(ks, 0.5, 1e-3, 0) || !near(w, 0.5, 1e-3, 0) {
		t.Errorf("shifted uniform: ks %g, w %g; want 0.5, 0.5", ks, w)
	}
	// A point mass and touching pieces.
	ks, w = stats.Distances([]float64{0, 1, 2}, []stats.Piece{{Lo: 0, Hi: 0, Mass: 1}, {Lo: 0, Hi: 1, Mass: 0}, {Lo: 1, Hi: 1, Mass: 1}, {Lo: 2, Hi: 2, Mass: 1}})
	if ks > 1e-12 || w > 1e-12 {
		t.Errorf("identical point masses: ks %g, w %g; want 0", ks, w)
	}
}

func BenchmarkKSPValueExact(b *testing.B) {
	for _, n := range [][2]int64{{1000, 1000}, {1000, 2000}, {1000, 10000}} {
		b.Run(fmt.Sprintf("%dx%d", n[0], n[1]), func(b *testing.B) {
			for b.Loop() {
				stats.KSPValueExact(0.05, n[0], n[1])
			}
		})
	}
}
