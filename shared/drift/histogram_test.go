package drift_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/shared/drift"
)

// TestHistogram: a report carries the reference's and the window's
// distributions over the profile's bins, the same from a summary as from
// raw data, and equal to the shares counted here.
func TestHistogram(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	cats := []string{"a", "b", "c"}
	refX := normals(r, 4000, 0, 1)
	refC := labels(r, 4000, cats, []float64{5, 3, 2})
	p := mustBuild(t, twoFeatures(), map[string]any{"x": refX, "c": refC})
	// The window is shifted, with values beyond the reference's range on
	// both sides and a label the reference never saw.
	x := append(normals(r, 900, 0.8, 1), -50, 50)
	c := append(labels(r, 900, cats, []float64{1, 1, 8}), "new", "new")

	fromSummary, err := drift.Compare(p, summarize(t, p, x, c), drift.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fromData, err := drift.CompareData(p, data(t, map[string]any{"x": x, "c": c}), drift.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkFinite(t, fromSummary)

	edges := p.Features[p.Feature("x")].Numerical.Edges
	numWant := func(vals []float64) []float64 {
		counts := make([]float64, len(edges)+1)
		for _, v := range vals {
			switch i, found := slices.BinarySearch(edges, v); {
			case v < edges[0]:
				counts[0]++
			case v > edges[len(edges)-1]:
				counts[len(counts)-1]++
			case v == edges[len(edges)-1]:
				counts[len(counts)-2]++
			case found:
				counts[i+1]++
			default:
				counts[i]++
			}
		}
		return divide(counts, len(vals))
	}
	catWant := func(ls []string) []float64 {
		counts := make([]float64, len(cats)+1)
		for _, l := range ls {
			if i := slices.Index(cats, l); i >= 0 {
				counts[i]++
			} else {
				counts[len(cats)]++
			}
		}
		return divide(counts, len(ls))
	}
	for _, rep := range []*drift.Report{fromSummary, fromData} {
		hx := feature(rep, "x").Histogram
		if hx == nil || !slices.Equal(hx.Edges, edges) || hx.Categories != nil {
			t.Fatalf("x: histogram %+v, want edges %v", hx, edges)
		}
		checkShares(t, "x reference", hx.Reference, numWant(refX))
		checkShares(t, "x window", hx.Window, numWant(x))
		if hx.Window[0] == 0 || hx.Window[len(hx.Window)-1] == 0 {
			t.Errorf("x window %v: want the values below and above the reference in the outer bins", hx.Window)
		}
		hc := feature(rep, "c").Histogram
		if hc == nil || hc.Edges != nil {
			t.Fatalf("c: histogram %+v", hc)
		}
		if !slices.Equal(hc.Categories, cats) {
			t.Fatalf("c: categories %v, want %v", hc.Categories, cats)
		}
	}
	// Categories are ordered by reference count (a, b, c) and then
	// every other label.
	hc := feature(fromData, "c").Histogram
	checkShares(t, "c reference", hc.Reference, catWant(refC))
	checkShares(t, "c window", hc.Window, catWant(c))
}

// TestHistogramEmptyWindow: no histogram when the window has no value.
func TestHistogramEmptyWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p := mustBuild(t, twoFeatures(), map[string]any{"x": normals(r, 500, 0, 1), "c": labels(r, 500, []string{"a", "b"}, []float64{1, 1})})
	rep, err := drift.Compare(p, drift.NewSummary(p), drift.CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Features {
		if f.Histogram != nil {
			t.Errorf("%s: histogram %+v of an empty window", f.Name, f.Histogram)
		}
	}
}

func divide(counts []float64, n int) []float64 {
	for i := range counts {
		counts[i] /= float64(n)
	}
	return counts
}

func checkShares(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bins %v, want %d %v", what, len(got), got, len(want), want)
	}
	var sum float64
	for i := range got {
		sum += got[i]
		if !near(got[i], want[i], 1e-12, 0) {
			t.Errorf("%s: bin %d share %v, want %v (all %v)", what, i, got[i], want[i], got)
		}
	}
	if !near(sum, 1, 1e-9, 0) {
		t.Errorf("%s: shares sum to %v", what, sum)
	}
}
