package drift

import (
	"cmp"
	"math"
	"slices"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"

	"github.com/edgefleet/edgefleet/shared/drift/stats"
)

// Latency sketches: relative accuracy and bins per sign.
const (
	LatencyAccuracy = 0.01
	LatencyBins     = 1024
)

// maxZ bounds the magnitude of sketched values (DDSketch refuses values
// near the largest float64).
const maxZ = 1e300

// coreHalf is the half-width of a feature sketch's linear core, in
// reference standard deviations.
const coreHalf = 0.5

// newDDSketch returns a DDSketch with relative accuracy alpha that keeps
// at most bins bins per sign, collapsing the smallest magnitudes first.
// The cubically interpolated mapping avoids a logarithm per value.
func newDDSketch(alpha float64, bins int) *ddsketch.DDSketch {
	m, err := mapping.NewCubicallyInterpolatedMapping(alpha)
	if err != nil {
		panic("drift: sketch accuracy out of range: " + err.Error()) // validated before
	}
	return ddsketch.NewDDSketch(m, store.NewCollapsingLowestDenseStore(bins), store.NewCollapsingLowestDenseStore(bins))
}

// zSketch is a quantile sketch of a feature's values standardized by the
// reference, z = (x − mean)/std. Values with |z| < ½ fall in a linear
// core of bins of width α (where most values are, and where relative
// accuracy would spend many bins on little mass); the others go to a
// DDSketch of relative accuracy α, which follows tails and shifted
// windows over any range with a bounded number of bins. Both parts merge
// exactly.
type zSketch struct {
	core  []uint64
	scale float64 // core bins per unit of z
	dd    *ddsketch.DDSketch
	// The sketch's mapping and stores, to add without DDSketch.Add's
	// checks (add has made them).
	m        mapping.IndexMapping
	pos, neg store.Store
}

// coreBins is the number of core bins for accuracy alpha.
func coreBins(alpha float64) int { return max(int(math.Round(2*coreHalf/alpha)), 1) }

func newZSketch(alpha float64, bins int) *zSketch {
	n := coreBins(alpha)
	return wrapZ(make([]uint64, n), newDDSketch(alpha, bins))
}

func wrapZ(core []uint64, dd *ddsketch.DDSketch) *zSketch {
	return &zSketch{
		core:  core,
		scale: float64(len(core)) / (2 * coreHalf),
		dd:    dd,
		m:     dd.IndexMapping,
		pos:   dd.GetPositiveValueStore(),
		neg:   dd.GetNegativeValueStore(),
	}
}

func (s *zSketch) add(z float64) {
	if z >= -coreHalf && z < coreHalf {
		k := int((z + coreHalf) * s.scale)
		s.core[min(k, len(s.core)-1)]++
		return
	}
	// |z| ≥ ½ here, well within the mapping's range once capped.
	if z > 0 {
		s.pos.Add(s.m.Index(min(z, maxZ)))
	} else {
		s.neg.Add(s.m.Index(min(-z, maxZ)))
	}
}

func (s *zSketch) merge(o *zSketch) error {
	for i := range s.core {
		s.core[i] += o.core[i]
	}
	return s.dd.MergeWith(o.dd)
}

func (s *zSketch) clone() *zSketch {
	return wrapZ(slices.Clone(s.core), s.dd.Copy())
}

// storeSpan returns a store's index range and whether it is full (its
// lowest bin may then hold collapsed values from further down).
func storeSpan(s store.Store, bins int) (lo, hi int, full, ok bool) {
	if s.IsEmpty() {
		return 0, 0, false, false
	}
	lo, _ = s.MinIndex()
	hi, _ = s.MaxIndex()
	return lo, hi, hi-lo+1 >= bins, true
}

// pieces turns the sketch into pieces over x = center + scale·z, each
// bin's mass spread uniformly over the bin, clipped to the window's exact
// [lo, hi]. It also returns the largest mass of a piece of positive width
// and Σ mass·width/2: with n values, the K-S distance computed from the
// pieces is within largest/n of the raw data's, and the Wasserstein
// distance within Σ/n (docs/drift.md).
func (s *zSketch) pieces(bins int, center, scale, lo, hi float64) (ps []stats.Piece, largest, spread float64) {
	add := func(zlo, zhi, mass float64) {
		if mass <= 0 {
			return
		}
		a, b := center+scale*zlo, center+scale*zhi
		a = min(max(a, lo), hi)
		b = min(max(b, lo), hi)
		ps = append(ps, stats.Piece{Lo: a, Hi: b, Mass: mass})
	}
	w := 2 * coreHalf / float64(len(s.core))
	for k, c := range s.core {
		add(-coreHalf+float64(k)*w, -coreHalf+float64(k+1)*w, float64(c))
	}
	m := s.dd.IndexMapping
	for _, neg := range []bool{false, true} {
		st := s.dd.GetPositiveValueStore()
		if neg {
			st = s.dd.GetNegativeValueStore()
		}
		minIdx, _, full, ok := storeSpan(st, bins)
		if !ok {
			continue
		}
		st.ForEach(func(index int, count float64) bool {
			zlo, zhi := m.LowerBound(index), m.LowerBound(index+1)
			if index == minIdx && full {
				zlo = coreHalf // collapsed: anything down to the core
			}
			zlo = max(zlo, coreHalf)
			zhi = max(zhi, zlo)
			if neg {
				zlo, zhi = -zhi, -zlo
			}
			add(zlo, zhi, count)
			return false
		})
	}
	slices.SortFunc(ps, func(a, b stats.Piece) int {
		if c := cmp.Compare(a.Lo, b.Lo); c != 0 {
			return c
		}
		return cmp.Compare(a.Hi, b.Hi)
	})
	// Rounding at bin boundaries must not make pieces overlap.
	for i := 1; i < len(ps); i++ {
		if ps[i].Lo < ps[i-1].Hi {
			ps[i].Lo = ps[i-1].Hi
			ps[i].Hi = max(ps[i].Hi, ps[i].Lo)
		}
	}
	for _, p := range ps {
		if w := p.Hi - p.Lo; w > 0 {
			largest = max(largest, p.Mass)
			spread += p.Mass * w / 2
		}
	}
	return ps, largest, spread
}

// sketchQuantile is the value at quantile q of a sketch, or false when it
// is empty.
func sketchQuantile(sk *ddsketch.DDSketch, q float64) (float64, bool) {
	if sk.IsEmpty() {
		return 0, false
	}
	v, err := sk.GetValueAtQuantile(q)
	return v, err == nil
}
