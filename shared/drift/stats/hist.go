package stats

import (
	"math"

	"gonum.org/v1/gonum/mathext"
)

// Epsilon replaces an empty bin's proportion in PSI, as Evidently does, so
// that a bin seen on one side only gives a large but finite term.
const Epsilon = 1e-4

// proportions returns counts divided by their sum (all zeros when the sum
// is zero).
func proportions(counts []float64) []float64 {
	var sum float64
	for _, c := range counts {
		sum += c
	}
	p := make([]float64, len(counts))
	if sum <= 0 {
		return p
	}
	for i, c := range counts {
		p[i] = c / sum
	}
	return p
}

// PSI is the population stability index of two histograms over the same
// bins: Σ (r_i − c_i)·ln(r_i / c_i) over the proportions, with an empty
// bin's proportion replaced by Epsilon on either side. ref and cur are
// counts (or proportions); they must have the same length. The result is
// 0 for identical histograms and grows without bound but stays finite.
func PSI(ref, cur []float64) float64 {
	r, c := proportions(ref), proportions(cur)
	var psi float64
	for i := range r {
		ri, ci := r[i], c[i]
		if ri == 0 {
			ri = Epsilon
		}
		if ci == 0 {
			ci = Epsilon
		}
		psi += (ri - ci) * math.Log(ri/ci)
	}
	return psi
}

// JensenShannon is the Jensen-Shannon distance, natural-log base, of two
// histograms over the same bins: sqrt((KL(p‖m) + KL(q‖m))/2) with
// m = (p+q)/2, after normalizing each to sum 1. It lies in [0, sqrt(ln 2)]
// (about 0.8326). Empty histograms give 0.
func JensenShannon(ref, cur []float64) float64 {
	p, q := proportions(ref), proportions(cur)
	var sp, sq float64
	for i := range p {
		sp += p[i]
		sq += q[i]
	}
	if sp == 0 || sq == 0 {
		return 0
	}
	var js float64
	for i := range p {
		m := (p[i] + q[i]) / 2
		if p[i] > 0 {
			js += p[i] * math.Log(p[i]/m)
		}
		if q[i] > 0 {
			js += q[i] * math.Log(q[i]/m)
		}
	}
	js /= 2
	if js < 0 { // rounding
		js = 0
	}
	return math.Sqrt(js)
}

// ChiSquare is Pearson's statistic Σ (o_i − e_i)²/e_i of observed counts
// against expected counts, and its degrees of freedom: the number of bins
// with e_i > 0 minus one. Bins with no expectation and no observation are
// ignored; the caller must give every observed bin a positive expectation
// (see ChiSquareTest). With fewer than two bins the statistic is 0 with 0
// degrees of freedom.
func ChiSquare(observed, expected []float64) (stat float64, df int) {
	bins := 0
	for i, e := range expected {
		if e <= 0 {
			continue
		}
		bins++
		d := observed[i] - e
		stat += d * d / e
	}
	if bins < 2 {
		return 0, 0
	}
	return stat, bins - 1
}

// ChiSquareSF is the survival function of the chi-squared distribution
// with df degrees of freedom at x: the p-value of a chi-squared statistic.
// It is 1 for df ≤ 0 or x ≤ 0.
func ChiSquareSF(x float64, df int) float64 {
	if df <= 0 || !(x > 0) {
		return 1
	}
	if math.IsInf(x, 1) {
		return 0
	}
	return clamp01(mathext.GammaIncRegComp(float64(df)/2, x/2))
}

// ChiSquareTest compares observed counts with reference counts over the
// same categories, like Evidently's chi-squared drift test: the expected
// count of a category is its reference proportion times the number of
// observations. A reference proportion of zero (a category the reference
// never saw) is replaced by Epsilon and the proportions renormalized, so
// a new category gives a large finite statistic rather than infinity.
// Categories absent from both sides are ignored. It returns the statistic,
// the degrees of freedom and the p-value (1 when there is nothing to
// compare).
func ChiSquareTest(ref, observed []float64) (stat float64, df int, p float64) {
	var nObs float64
	for _, o := range observed {
		nObs += o
	}
	exp := SmoothedProportions(ref, observed)
	if nObs == 0 || exp == nil {
		return 0, 0, 1
	}
	for i := range exp {
		exp[i] *= nObs
	}
	stat, df = ChiSquare(observed, exp)
	return stat, df, ChiSquareSF(stat, df)
}

// SmoothedProportions is the reference distribution ChiSquareTest expects
// observations from: ref's proportions over the bins where ref or
// observed is non-zero, empty reference bins raised to Epsilon,
// renormalized to sum 1; zero elsewhere. It returns nil when ref is empty.
func SmoothedProportions(ref, observed []float64) []float64 {
	r := proportions(ref)
	var sum float64
	for i := range r {
		if r[i] == 0 && observed[i] > 0 {
			r[i] = Epsilon
		}
		sum += r[i]
	}
	if sum == 0 {
		return nil
	}
	for i := range r {
		r[i] /= sum
	}
	return r
}

func clamp01(p float64) float64 {
	switch {
	case p > 1:
		return 1
	case p >= 0:
		return p
	}
	return 0 // negative or NaN
}
