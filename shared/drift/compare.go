package drift

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/edgefleet/edgefleet/shared/drift/stats"
)

// Status says whether a feature (or a whole report) could be tested.
type Status string

// Statuses.
const (
	// StatusOK: tested.
	StatusOK Status = "ok"
	// StatusNotEnoughData: the window (or the reference) holds fewer than
	// MinSamples values, so nothing was tested and Drift is false.
	StatusNotEnoughData Status = "not_enough_data"
	// StatusConstant: every window value is the same. The feature is
	// tested all the same (a stuck input is drift worth seeing); Reason
	// names the value.
	StatusConstant Status = "constant"
)

// CompareOptions override the profile's options for one comparison; zero
// fields keep the profile's.
type CompareOptions struct {
	MinSamples int
	DriftShare float64
}

// Report is the result of comparing a window with the reference. It holds
// no NaN or infinity.
type Report struct {
	// Profile is the profile's ID; Start and End the window's.
	Profile string    `json:"profile"`
	Start   time.Time `json:"start,omitzero"`
	End     time.Time `json:"end,omitzero"`
	// Status is ok when at least one feature was tested, else
	// not_enough_data.
	Status Status `json:"status"`
	// Tested features (status ok or constant), how many of them drifted,
	// and their share (0 when none was tested).
	Tested  int     `json:"tested"`
	Drifted int     `json:"drifted"`
	Share   float64 `json:"share"`
	// Drift is Share ≥ DriftShare: the window as a whole drifted.
	Drift      bool            `json:"drift"`
	DriftShare float64         `json:"driftShare"`
	Features   []FeatureReport `json:"features"`
	// Health is what rollout gates read besides drift.
	Health Health `json:"health"`
}

// Health holds a window's inference figures.
type Health struct {
	Predictions uint64  `json:"predictions"`
	Errors      uint64  `json:"errors"`
	ErrorRate   float64 `json:"errorRate"`
	// LatencyMs are latency quantiles in milliseconds, within
	// LatencyAccuracy; absent when no latency was recorded.
	LatencyMs *Quantiles `json:"latencyMs,omitempty"`
}

// Quantiles are the 50th, 95th and 99th percentiles.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// FeatureReport is one feature's result.
type FeatureReport struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Status and, when not ok, why.
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Test is the test that decides Drift: Statistic compared with
	// Threshold (for K-S and chi-squared, PValue below Threshold).
	Test      Test     `json:"test"`
	Statistic float64  `json:"statistic"`
	PValue    *float64 `json:"pValue,omitempty"`
	Threshold float64  `json:"threshold"`
	Drift     bool     `json:"drift"`
	// Bound: Statistic is within ±Bound of its value on the raw window
	// and the full reference (0 for the histogram tests, which are exact).
	Bound float64 `json:"bound"`
	// Sample counts: reference values, window values, window values
	// missing.
	ReferenceCount int64  `json:"referenceCount"`
	Count          uint64 `json:"count"`
	Missing        uint64 `json:"missing"`
	// Stats holds every statistic computed for the feature.
	Stats Stats `json:"stats"`
	// Window describes a numerical feature's window values.
	Window *WindowStats `json:"window,omitempty"`
	// NewCategories are labels the profile does not list, with counts
	// (at most MaxNewCategories, the most frequent).
	NewCategories map[string]uint64 `json:"newCategories,omitempty"`
	// Histogram is the reference's and the window's distributions over
	// the profile's bins; absent when the window holds no value.
	Histogram *Histogram `json:"histogram,omitempty"`
}

// Histogram is a feature's reference and window distributions over the
// bins of its profile, as shares (each sums to 1), for charts and for
// reading a drift verdict. A numerical feature's bins are: below
// Edges[0], [Edges[i], Edges[i+1]) for each inner bin (the last one
// closed), above the last edge. A categorical feature's are Categories
// and then every other label (OtherCategory).
type Histogram struct {
	Edges      []float64 `json:"edges,omitempty"`
	Categories []string  `json:"categories,omitempty"`
	Reference  []float64 `json:"reference"`
	Window     []float64 `json:"window"`
}

// Stats are the statistics of a feature; those that do not apply to its
// kind are absent.
type Stats struct {
	PSI             *float64 `json:"psi,omitempty"`
	JensenShannon   *float64 `json:"jensenShannon,omitempty"`
	KS              *float64 `json:"ks,omitempty"`
	KSPValue        *float64 `json:"ksPValue,omitempty"` // when the test is ks
	KSBound         *float64 `json:"ksBound,omitempty"`
	Wasserstein     *float64 `json:"wasserstein,omitempty"` // normed
	WassersteinAbs  *float64 `json:"wassersteinAbs,omitempty"`
	WassersteinNorm *float64 `json:"wassersteinNorm,omitempty"` // the divisor
	WassersteinBnd  *float64 `json:"wassersteinBound,omitempty"`
	ChiSquare       *float64 `json:"chiSquare,omitempty"`
	ChiSquareDF     *int     `json:"chiSquareDf,omitempty"`
	ChiSquarePValue *float64 `json:"chiSquarePValue,omitempty"`
}

// WindowStats describe a numerical feature's window values (population
// standard deviation).
type WindowStats struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

// window is one feature's window, from a summary or from raw data.
type window struct {
	n, missing uint64
	// Numerical.
	hist              []float64
	pieces            []stats.Piece
	largest, spread   float64 // see sketchPieces; 0 for raw data
	mean, std, lo, hi float64
	// Categorical.
	cats    []float64
	newCats map[string]uint64
}

// Compare tests summary s against profile p, which it must belong to
// (ErrMismatch otherwise).
func Compare(p *Profile, s *Summary, opts CompareOptions) (*Report, error) {
	if err := fits(p, s); err != nil {
		return nil, err
	}
	wins := make([]window, len(p.Features))
	for i := range p.Features {
		f, st := &p.Features[i], &s.feats[i]
		w := &wins[i]
		w.n, w.missing = st.n, st.missing
		switch f.Kind {
		case Numerical:
			np := f.Numerical
			w.hist = floats(st.hist)
			if st.n > 0 {
				n := float64(st.n)
				m := st.sum / n
				w.mean = np.Mean + m
				w.std = math.Sqrt(max(st.sumsq/n-m*m, 0))
				w.lo, w.hi = st.min, st.max
				w.pieces, w.largest, w.spread = st.sk.pieces(s.bins, np.Mean, np.scale(), st.min, st.max)
			}
		case Categorical:
			w.cats = floats(st.cats)
			w.newCats = st.newNames()
		}
	}
	r := compare(p, wins, opts)
	r.Start, r.End = s.Start, s.End
	r.Health = health(s)
	return r, nil
}

// CompareData tests raw window data against profile p: the exact
// counterpart of Compare (no sketch; Bound only covers the reference
// sample). Features missing from d are an error.
func CompareData(p *Profile, d *Data, opts CompareOptions) (*Report, error) {
	wins := make([]window, len(p.Features))
	for i := range p.Features {
		f := &p.Features[i]
		w := &wins[i]
		switch f.Kind {
		case Numerical:
			vals, err := d.numbers(f.Name)
			if err != nil {
				return nil, err
			}
			var sorted []float64
			for _, v := range vals {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					w.missing++
					continue
				}
				sorted = append(sorted, v)
			}
			slices.Sort(sorted)
			w.n = uint64(len(sorted))
			w.hist = make([]float64, histLen(f.Numerical.Edges))
			for _, v := range sorted {
				w.hist[binIndex(f.Numerical.Edges, v)]++
			}
			if len(sorted) > 0 {
				var sum float64
				for _, v := range sorted {
					sum += v
				}
				w.mean = sum / float64(len(sorted))
				var ss float64
				for _, v := range sorted {
					ss += (v - w.mean) * (v - w.mean)
				}
				w.std = math.Sqrt(ss / float64(len(sorted)))
				w.lo, w.hi = sorted[0], sorted[len(sorted)-1]
				w.pieces = stats.Points(sorted)
			}
		case Categorical:
			labels, err := d.labels(f.Name)
			if err != nil {
				return nil, err
			}
			cp := f.Categorical
			index := make(map[string]int, len(cp.Categories))
			for j, c := range cp.Categories {
				index[c] = j
			}
			w.cats = make([]float64, len(cp.Categories)+1)
			news := map[string]uint64{}
			for _, l := range labels {
				if l == "" {
					w.missing++
					continue
				}
				w.n++
				if j, ok := index[l]; ok {
					w.cats[j]++
					continue
				}
				w.cats[len(cp.Categories)]++
				if l != OtherCategory && validLabel(l) == nil {
					news[l]++
				}
			}
			w.newCats = capNames(news)
		}
	}
	return compare(p, wins, opts), nil
}

// fits checks that s belongs to p.
func fits(p *Profile, s *Summary) error {
	if s.profile != p.ID() {
		return fmt.Errorf("%w: the summary is for profile %s, not %s", ErrMismatch, s.profile, p.ID())
	}
	if s.alpha != p.Options.SketchAccuracy || s.bins != p.Options.SketchBins || len(s.feats) != len(p.Features) {
		return fmt.Errorf("%w: the summary's sketch settings or feature count differ from profile %s's", ErrMismatch, p.ID())
	}
	for i := range p.Features {
		f, st := &p.Features[i], &s.feats[i]
		ok := f.Kind == st.kind
		switch {
		case ok && f.Kind == Numerical:
			ok = len(st.hist) == histLen(f.Numerical.Edges) && st.sk != nil
		case ok:
			ok = len(st.cats) == len(f.Categorical.Categories)+1
		}
		if !ok {
			return fmt.Errorf("%w: feature %q does not fit profile %s", ErrMismatch, f.Name, p.ID())
		}
	}
	return nil
}

func floats(cs []uint64) []float64 {
	out := make([]float64, len(cs))
	for i, c := range cs {
		out[i] = float64(c)
	}
	return out
}

func compare(p *Profile, wins []window, opts CompareOptions) *Report {
	minN := p.Options.MinSamples
	if opts.MinSamples > 0 {
		minN = opts.MinSamples
	}
	share := p.Options.DriftShare
	if opts.DriftShare > 0 {
		share = opts.DriftShare
	}
	r := &Report{Profile: p.ID(), DriftShare: share, Features: make([]FeatureReport, len(p.Features))}
	for i := range p.Features {
		fr := evaluate(&p.Features[i], &wins[i], minN)
		if fr.Status != StatusNotEnoughData {
			r.Tested++
			if fr.Drift {
				r.Drifted++
			}
		}
		r.Features[i] = fr
	}
	r.Status = StatusNotEnoughData
	if r.Tested > 0 {
		r.Status = StatusOK
		r.Share = float64(r.Drifted) / float64(r.Tested)
		r.Drift = r.Share >= share
	}
	return r
}

func ptr[T any](v T) *T { return &v }

// fin maps NaN to 0 and ±Inf to ±MaxFloat64, so that reports stay valid
// JSON whatever the data (the statistics are finite by construction; this
// is the last guard).
func fin(v float64) float64 {
	switch {
	case math.IsNaN(v):
		return 0
	case math.IsInf(v, 1):
		return math.MaxFloat64
	case math.IsInf(v, -1):
		return -math.MaxFloat64
	}
	return v
}

func evaluate(f *FeatureProfile, w *window, minN int) FeatureReport {
	fr := FeatureReport{
		Name:           f.Name,
		Kind:           f.Kind,
		Status:         StatusOK,
		Test:           f.Test,
		ReferenceCount: f.Count,
		Count:          w.n,
		Missing:        w.missing,
	}
	if fr.Test == "" {
		fr.Test = DefaultTest(f.Kind, f.Count)
	}
	fr.Threshold = DefaultThreshold(fr.Test)
	if f.Threshold != nil {
		fr.Threshold = *f.Threshold
	}
	if f.Kind == Numerical && w.n > 0 {
		fr.Window = &WindowStats{Mean: fin(w.mean), Std: fin(w.std), Min: w.lo, Max: w.hi}
	}
	if len(w.newCats) > 0 {
		fr.NewCategories = w.newCats
	}
	fr.Histogram = histogram(f, w)
	switch {
	case w.n < uint64(minN):
		fr.Status = StatusNotEnoughData
		fr.Reason = fmt.Sprintf("%d values in the window, fewer than the %d needed", w.n, minN)
		return fr
	case f.Count < int64(minN):
		fr.Status = StatusNotEnoughData
		fr.Reason = fmt.Sprintf("%d values in the reference, fewer than the %d needed", f.Count, minN)
		return fr
	}
	switch f.Kind {
	case Numerical:
		evaluateNumerical(&fr, f.Numerical, f.Count, w)
	case Categorical:
		evaluateCategorical(&fr, f.Categorical, w)
	}
	if PValueTest(fr.Test) {
		fr.Drift = *fr.PValue < fr.Threshold
	} else {
		fr.Drift = fr.Statistic >= fr.Threshold
	}
	return fr
}

func evaluateNumerical(fr *FeatureReport, np *NumericalProfile, refN int64, w *window) {
	n := float64(w.n)
	ref := floats64(np.Counts)
	psi := fin(stats.PSI(ref, w.hist))
	js := fin(stats.JensenShannon(ref, w.hist))
	ks, w1 := stats.Distances(np.Sample, w.pieces)
	ks, w1 = fin(ks), fin(w1)
	norm := max(np.Std, 0.001)
	wn := fin(w1 / norm)
	ksBound := fin(min(w.largest/n+np.SampleKS, 1))
	wBound := fin((w.spread/n + np.SampleWasserstein) / norm)
	fr.Stats = Stats{
		PSI:             ptr(psi),
		JensenShannon:   ptr(js),
		KS:              ptr(ks),
		KSBound:         ptr(ksBound),
		Wasserstein:     ptr(wn),
		WassersteinAbs:  ptr(w1),
		WassersteinNorm: ptr(norm),
		WassersteinBnd:  ptr(wBound),
	}
	switch fr.Test {
	case TestKS:
		// The exact p-value costs up to O(n_ref·n), so only when it
		// decides.
		p := stats.KSPValue(ks, refN, int64(w.n))
		fr.Statistic, fr.PValue, fr.Bound = ks, ptr(p), ksBound
		fr.Stats.KSPValue = ptr(p)
	case TestWasserstein:
		fr.Statistic, fr.Bound = wn, wBound
	case TestPSI:
		fr.Statistic = psi
	case TestJensenShannon:
		fr.Statistic = js
	}
	if w.lo == w.hi {
		fr.Status = StatusConstant
		fr.Reason = fmt.Sprintf("every window value is %g", w.lo)
	}
}

func evaluateCategorical(fr *FeatureReport, cp *CategoricalProfile, w *window) {
	ref := floats64(cp.Counts)
	chi, df, p := stats.ChiSquareTest(ref, w.cats)
	chi = fin(chi)
	psi := fin(stats.PSI(ref, w.cats))
	js := fin(stats.JensenShannon(ref, w.cats))
	fr.Stats = Stats{
		PSI:             ptr(psi),
		JensenShannon:   ptr(js),
		ChiSquare:       ptr(chi),
		ChiSquareDF:     ptr(df),
		ChiSquarePValue: ptr(p),
	}
	switch fr.Test {
	case TestChiSquare:
		fr.Statistic, fr.PValue = chi, ptr(p)
	case TestPSI:
		fr.Statistic = psi
	case TestJensenShannon:
		fr.Statistic = js
	}
}

// histogram is f's reference and w's distributions as shares, or nil
// when w holds no value.
func histogram(f *FeatureProfile, w *window) *Histogram {
	if w.n == 0 {
		return nil
	}
	var h Histogram
	var ref []int64
	var win []float64
	switch f.Kind {
	case Numerical:
		h.Edges, ref, win = f.Numerical.Edges, f.Numerical.Counts, w.hist
	case Categorical:
		h.Categories, ref, win = f.Categorical.Categories, f.Categorical.Counts, w.cats
	default:
		return nil
	}
	if len(ref) != len(win) {
		return nil
	}
	h.Reference, h.Window = shares(floats64(ref)), shares(win)
	return &h
}

// shares divides cs by their sum (all 0 when it is 0).
func shares(cs []float64) []float64 {
	var total float64
	for _, c := range cs {
		total += c
	}
	out := make([]float64, len(cs))
	if total > 0 {
		for i, c := range cs {
			out[i] = c / total
		}
	}
	return out
}

func floats64(cs []int64) []float64 {
	out := make([]float64, len(cs))
	for i, c := range cs {
		out[i] = float64(c)
	}
	return out
}

func health(s *Summary) Health {
	h := Health{Predictions: s.predictions, Errors: s.errors}
	if s.predictions > 0 {
		h.ErrorRate = float64(s.errors) / float64(s.predictions)
	}
	if !s.latency.IsEmpty() {
		q := func(x float64) float64 {
			v, _ := sketchQuantile(s.latency, x)
			return fin(v * 1000)
		}
		h.LatencyMs = &Quantiles{P50: q(0.5), P95: q(0.95), P99: q(0.99)}
	}
	return h
}
