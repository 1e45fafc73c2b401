package stats

import (
	"math"
	"slices"
)

// Piece is part of a distribution: Mass spread uniformly over [Lo, Hi],
// or a point mass at Lo when Hi == Lo. A window summarized by a quantile
// sketch is a list of pieces (one per sketch bucket); a raw sample is a
// list of point masses.
type Piece struct {
	Lo, Hi, Mass float64
}

// Points turns a sorted sample into point-mass pieces, one per distinct
// value.
func Points(sorted []float64) []Piece {
	var out []Piece
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j] == sorted[i] {
			j++
		}
		out = append(out, Piece{Lo: sorted[i], Hi: sorted[i], Mass: float64(j - i)})
		i = j
	}
	return out
}

// Distances returns the Kolmogorov-Smirnov distance (the largest gap
// between the two distribution functions) and the Wasserstein-1 distance
// (the area between them) of the empirical distribution of ref, sorted in
// ascending order, and the distribution made of pieces, sorted by Lo and
// not overlapping (a piece may start where the previous one ends). Masses
// need not sum to 1. Either side empty gives 0, 0.
//
// With point-mass pieces from a raw sample the results equal
// scipy.stats.ks_2samp's statistic and wasserstein_distance.
func Distances(ref []float64, pieces []Piece) (ks, w float64) {
	var total float64
	for _, p := range pieces {
		total += p.Mass
	}
	if len(ref) == 0 || total <= 0 {
		return 0, 0
	}
	cands := make([]float64, 0, len(ref)+2*len(pieces))
	cands = append(cands, ref...)
	for _, p := range pieces {
		cands = append(cands, p.Lo, p.Hi)
	}
	slices.Sort(cands)
	cands = slices.Compact(cands)

	m := float64(len(ref))
	cw := cdfWalker{pieces: pieces}
	ri := 0 // ref[:ri] < t
	var prevT, prevR, prevW float64
	for k, t := range cands {
		for ri < len(ref) && ref[ri] < t {
			ri++
		}
		rj := ri
		for rj < len(ref) && ref[rj] == t {
			rj++
		}
		frL, frR := float64(ri)/m, float64(rj)/m
		wl, wr := cw.at(t)
		fwL, fwR := wl/total, wr/total
		ks = max(ks, math.Abs(frR-fwR), math.Abs(frL-fwL))
		if k > 0 {
			w += area(t-prevT, prevR, prevW, fwL)
		}
		prevT, prevR, prevW = t, frR, fwR
		ri = rj
	}
	return min(ks, 1), w
}

// area is ∫|r − f(s)| ds over an interval of length l on which f rises
// linearly from u to v.
func area(l, r, u, v float64) float64 {
	if l <= 0 {
		return 0
	}
	a, b := r-u, r-v
	if a*b >= 0 || v == u {
		return l * math.Abs(r-(u+v)/2)
	}
	return l * (a*a + b*b) / (2 * math.Abs(v-u))
}

// cdfWalker evaluates the unnormalized distribution function of sorted
// pieces at increasing points.
type cdfWalker struct {
	pieces []Piece
	i      int     // pieces[:i] end before the current point
	done   float64 // their mass
}

// at returns the mass strictly below t and the mass at or below t.
func (c *cdfWalker) at(t float64) (left, right float64) {
	for c.i < len(c.pieces) && c.pieces[c.i].Hi < t {
		c.done += c.pieces[c.i].Mass
		c.i++
	}
	left, right = c.done, c.done
	for j := c.i; j < len(c.pieces) && c.pieces[j].Lo <= t; j++ {
		p := c.pieces[j]
		if p.Hi <= p.Lo {
			right += p.Mass // a point mass at t
			continue
		}
		f := p.Mass * (t - p.Lo) / (p.Hi - p.Lo)
		left += f
		right += f
	}
	return left, right
}

// Wasserstein is the Wasserstein-1 distance between the empirical
// distributions of two samples sorted in ascending order
// (scipy.stats.wasserstein_distance).
func Wasserstein(a, b []float64) float64 {
	_, w := Distances(a, Points(b))
	return w
}
