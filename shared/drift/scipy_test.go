package drift_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/drift/internal/pyref"
	"github.com/edgefleet/edgefleet/shared/drift/stats"
)

type scenario struct {
	name     string
	refN     int       // reference size: ≤ 1000 → K-S/chi², else Wasserstein/JS
	n        int       // window size
	mu, sd   float64   // window's numerical distribution (reference: N(0,1))
	constant bool      // window x all equal to mu
	weights  []float64 // nil: the reference's own labels, cycled
	cats     []string  // window's categories (reference: a, b, c, d)
	// Expected verdicts of x and c.
	driftX, driftC bool
	status         drift.Status // x's status
}

var refCats = []string{"a", "b", "c", "d"}
var refWeights = []float64{0.4, 0.3, 0.2, 0.1}

func scenarios() []scenario {
	return []scenario{
		{name: "no-drift-small-ref", refN: 500, n: 2000, mu: 0, sd: 1, status: drift.StatusOK},
		{name: "no-drift-large-ref", refN: 5000, n: 2000, mu: 0, sd: 1, status: drift.StatusOK},
		{name: "mean-shift-small-ref", refN: 500, n: 2000, mu: 0.5, sd: 1, cats: refCats, weights: []float64{0.25, 0.25, 0.25, 0.25}, driftX: true, driftC: true, status: drift.StatusOK},
		{name: "mean-shift-large-ref", refN: 5000, n: 2000, mu: 0.5, sd: 1, cats: refCats, weights: []float64{0.1, 0.2, 0.3, 0.4}, driftX: true, driftC: true, status: drift.StatusOK},
		{name: "variance-small-ref", refN: 500, n: 2000, mu: 0, sd: 1.6, driftX: true, status: drift.StatusOK},
		{name: "variance-large-ref", refN: 5000, n: 3000, mu: 0, sd: 1.6, driftX: true, status: drift.StatusOK},
		{name: "new-category-small-ref", refN: 500, n: 1000, mu: 0, sd: 1, cats: []string{"a", "b", "c", "d", "e"}, weights: []float64{0.35, 0.25, 0.15, 0.1, 0.15}, driftC: true, status: drift.StatusOK},
		{name: "new-category-large-ref", refN: 5000, n: 1000, mu: 0, sd: 1, cats: []string{"a", "b", "c", "d", "e"}, weights: []float64{0.3, 0.2, 0.15, 0.1, 0.25}, driftC: true, status: drift.StatusOK},
		{name: "constant-window", refN: 500, n: 500, mu: 0.3, constant: true, cats: []string{"b"}, weights: []float64{1}, driftX: true, driftC: true, status: drift.StatusConstant},
		{name: "small-window", refN: 500, n: 10, mu: 0, sd: 1, status: drift.StatusNotEnoughData},
		{name: "empty-window", refN: 500, n: 0, mu: 0, sd: 1, status: drift.StatusNotEnoughData},
	}
}

// TestAgainstSciPy compares the statistics of Compare (from summaries)
// and CompareData (from raw data) with SciPy's on seeded samples:
// histogram statistics (PSI, Jensen-Shannon, chi-squared) exactly; K-S and
// Wasserstein exactly on raw data with a complete reference sample, and
// within the reported Bound otherwise.
func TestAgainstSciPy(t *testing.T) {
	type run struct {
		sc        scenario
		p         *drift.Profile
		refX, x   []float64
		refC, c   []string
		sketch    *drift.Report
		exact     *drift.Report
		pyIndex   int // of the numerical case; categorical follows
		hasPython bool
	}
	var runs []run
	var cases []any
	for i, sc := range scenarios() {
		r := rand.New(rand.NewPCG(uint64(i+1), 7))
		refX := normals(r, sc.refN, 0, 1)
		refC := labels(r, sc.refN, refCats, refWeights)
		p := mustBuild(t, twoFeatures(), map[string]any{"x": refX, "c": refC})
		x := normals(r, sc.n, sc.mu, sc.sd)
		if sc.constant {
			for j := range x {
				x[j] = sc.mu
			}
		}
		var c []string
		if sc.weights == nil {
			// The reference's own proportions: chi-squared against the
			// reference proportions ignores their sampling error, so an
			// independent draw from a small reference alarms too often.
			for j := range sc.n {
				c = append(c, refC[j%len(refC)])
			}
		} else {
			c = labels(r, sc.n, sc.cats, sc.weights)
		}
		s := summarize(t, p, x, c)
		// Round-trip through the binary encoding, as fleetd would see it.
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		s, err = drift.DecodeSummary(b)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := drift.Compare(p, s, drift.CompareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ex, err := drift.CompareData(p, data(t, map[string]any{"x": x, "c": c}), drift.CompareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rr := run{sc: sc, p: p, refX: refX, x: x, refC: refC, c: c, sketch: sk, exact: ex}
		if sc.status != drift.StatusNotEnoughData {
			rr.hasPython, rr.pyIndex = true, len(cases)
			cases = append(cases,
				pyref.Numerical{Kind: "numerical", Reference: refX, Current: x, Edges: p.Features[0].Numerical.Edges},
				pyref.Categorical{Kind: "categorical", Reference: refC, Current: c, Categories: p.Features[1].Categorical.Categories})
		}
		runs = append(runs, rr)
	}
	var results []pyref.Result
	pyref.Run(t, cases, &results)
	if len(results) != len(cases) {
		t.Fatalf("reference.py returned %d results for %d cases", len(results), len(cases))
	}

	for _, rr := range runs {
		t.Run(rr.sc.name, func(t *testing.T) {
			checkFinite(t, rr.sketch)
			checkFinite(t, rr.exact)
			for _, rep := range []*drift.Report{rr.sketch, rr.exact} {
				fx, fc := feature(rep, "x"), feature(rep, "c")
				if fx.Status != rr.sc.status {
					t.Errorf("x: status %q (%s), want %q", fx.Status, fx.Reason, rr.sc.status)
				}
				if rr.sc.status == drift.StatusNotEnoughData {
					if fx.Drift || fc.Drift || rep.Status != drift.StatusNotEnoughData || rep.Tested != 0 || fx.Reason == "" {
						t.Errorf("not enough data: report %+v", rep)
					}
					continue
				}
				if fx.Drift != rr.sc.driftX || fc.Drift != rr.sc.driftC {
					t.Errorf("drift x=%v (%s %g), c=%v (%s %g); want x=%v, c=%v",
						fx.Drift, fx.Test, fx.Statistic, fc.Drift, fc.Test, fc.Statistic, rr.sc.driftX, rr.sc.driftC)
				}
				wantTest := map[bool]drift.Test{true: drift.TestKS, false: drift.TestWasserstein}[rr.sc.refN <= drift.SmallReference]
				if fx.Test != wantTest {
					t.Errorf("x: test %s, want %s", fx.Test, wantTest)
				}
			}
			if !rr.hasPython {
				return
			}
			num, cat := results[rr.pyIndex], results[rr.pyIndex+1]
			np := rr.p.Features[0].Numerical
			if !slices.Equal(num.RefCounts, floats64(np.Counts)) {
				t.Errorf("reference histogram %v, numpy binning %v", np.Counts, num.RefCounts)
			}
			complete := len(np.Sample) == rr.sc.refN
			for _, path := range []struct {
				name   string
				rep    *drift.Report
				sketch bool
			}{{"exact", rr.exact, false}, {"sketch", rr.sketch, true}} {
				fx, fc := feature(path.rep, "x"), feature(path.rep, "c")
				st := fx.Stats
				// Histogram statistics: exact on both paths.
				if !near(*st.PSI, num.PSI, 1e-12, 1e-9) || !near(*st.JensenShannon, num.JS, 1e-12, 1e-9) {
					t.Errorf("%s: PSI %.12g JS %.12g; numpy/scipy %.12g %.12g", path.name, *st.PSI, *st.JensenShannon, num.PSI, num.JS)
				}
				cs := fc.Stats
				if !near(*cs.ChiSquare, cat.ChiSquare, 1e-9, 1e-9) || !near(*cs.ChiSquarePValue, cat.ChiSquareP, 1e-300, 1e-8) ||
					!near(*cs.JensenShannon, cat.JS, 1e-12, 1e-9) || !near(*cs.PSI, cat.PSI, 1e-12, 1e-9) {
					t.Errorf("%s: categorical chi2 %.12g p %.6g JS %.12g PSI %.12g; scipy %.12g p %.6g JS %.12g PSI %.12g",
						path.name, *cs.ChiSquare, *cs.ChiSquarePValue, *cs.JensenShannon, *cs.PSI, cat.ChiSquare, cat.ChiSquareP, cat.JS, cat.PSI)
				}
				// K-S and Wasserstein: exact when neither side is
				// summarized, else within the reported bound.
				ksTol, wTol := 1e-12, 1e-9*num.WassersteinNorm+1e-12
				if path.sketch || !complete {
					ksTol, wTol = *st.KSBound+1e-12, *st.WassersteinBnd+1e-12
				}
				if d := *st.KS - num.KS; d > ksTol || -d > ksTol {
					t.Errorf("%s: K-S %.6g, scipy %.6g: off by %.3g, bound %.3g", path.name, *st.KS, num.KS, d, ksTol)
				}
				if d := *st.Wasserstein - num.WassersteinNorm; d > wTol || -d > wTol {
					t.Errorf("%s: normed Wasserstein %.6g, scipy %.6g: off by %.3g, bound %.3g", path.name, *st.Wasserstein, num.WassersteinNorm, d, wTol)
				}
				if path.sketch && (*st.KSBound > 0.03 || *st.WassersteinBnd > 0.03) {
					t.Errorf("sketch bounds too loose to be useful: K-S %.3g, Wasserstein %.3g", *st.KSBound, *st.WassersteinBnd)
				}
				if fx.Test == drift.TestKS {
					// The p-value follows the statistic: SciPy's exactly
					// on the exact path, else between the p-values at
					// the ends of the bound.
					n1, n2 := int64(rr.sc.refN), int64(rr.sc.n)
					lo, hi := stats.KSPValue(num.KS+ksTol, n1, n2), stats.KSPValue(max(num.KS-ksTol, 0), n1, n2)
					if !path.sketch && complete {
						lo, hi = num.KSP*(1-1e-8), num.KSP*(1+1e-8)
					}
					if *fx.PValue < lo-1e-12 || *fx.PValue > hi+1e-12 {
						t.Errorf("%s: K-S p-value %.6g, scipy %.6g, want within [%.6g, %.6g]", path.name, *fx.PValue, num.KSP, lo, hi)
					}
				}
				t.Logf("%s: ks %.4f (scipy %.4f, bound %.4f) w %.4f (scipy %.4f, bound %.4f) psi %.4f js %.4f chi2 %.2f p %.3g",
					path.name, *st.KS, num.KS, *st.KSBound, *st.Wasserstein, num.WassersteinNorm, *st.WassersteinBnd, *st.PSI, *st.JensenShannon, *cs.ChiSquare, *cs.ChiSquarePValue)
			}
		})
	}
}

func floats64(cs []int64) []float64 {
	out := make([]float64, len(cs))
	for i, c := range cs {
		out[i] = float64(c)
	}
	return out
}
