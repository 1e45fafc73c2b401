package drift

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// MaxNewCategories bounds the labels a summary names per categorical
// feature among those the profile does not list. They all count in the
// OtherCategory bucket, which the tests use; the names are for people.
const MaxNewCategories = 16

// Summary is a streaming, mergeable summary of one window of predictions:
// per feature, the count of values and of missing ones, their sum, sum of
// squares (around the reference mean), minimum and maximum; for numerical
// features a histogram over the profile's bins and a DDSketch quantile
// sketch of the values standardized by the reference; for categorical
// ones a count per profile category plus OtherCategory. It also keeps
// health figures for rollout gates: predictions, errors and a latency
// sketch. Memory is bounded whatever the traffic (see docs/drift.md).
//
// Summaries of the same profile merge exactly: a merged summary equals
// the summary of the pooled observations, except for the floating-point
// rounding of the sums and for which new category names are kept.
//
// A Summary is not safe for concurrent use. One made by NewSummary
// observes and encodes; one decoded (DecodeSummary) merges, encodes and
// is compared, but cannot observe.
type Summary struct {
	// Start and End bound the window; the caller sets them. Merge keeps
	// the earliest Start and the latest End.
	Start, End time.Time

	profile     string
	alpha       float64
	bins        int
	predictions uint64
	errors      uint64
	latency     *ddsketch.DDSketch
	feats       []featState
	lay         []featLayout // nil for a decoded summary

	// Scratch for ObserveMap and ObserveTensors.
	nums    []float64
	labels  []string
	isLabel []bool
	srcs    []resolved
}

// featLayout is what observing a feature needs from the profile.
type featLayout struct {
	name      string
	kind      Kind
	edges     []float64
	center    float64
	inv       float64 // 1/scale
	catIndex  map[string]int
	codeIndex map[float64]int
	source    *Source
}

// featState is one feature's part of a summary.
type featState struct {
	kind       Kind
	n, missing uint64
	// Numerical: sums of (x − center) and its square, extremes,
	// histogram, sketch of (x − center)/scale.
	sum, sumsq float64
	min, max   float64
	hist       []uint64
	sk         *zSketch
	// Categorical: counts per profile category, OtherCategory last; new
	// labels and numeric codes seen, bounded together by MaxNewCategories.
	cats     []uint64
	newCats  map[string]uint64
	newCodes map[float64]uint64
}

// saturate keeps the sums finite (at ±MaxFloat64) when values near the
// float64 limits overflow them; the window's mean and standard deviation
// are then meaningless, the tests are not (they use the histogram and the
// sketch).
func (f *featState) saturate() {
	clamp := func(v float64) float64 {
		switch {
		case v > math.MaxFloat64:
			return math.MaxFloat64
		case v < -math.MaxFloat64:
			return -math.MaxFloat64
		case v != v: // Inf − Inf
			return 0
		}
		return v
	}
	f.sum, f.sumsq = clamp(f.sum), clamp(f.sumsq)
}

// scale is the unit of a feature's sketch: the reference standard
// deviation, or 1 for a constant reference.
func (np *NumericalProfile) scale() float64 {
	if np.Std > 0 {
		return np.Std
	}
	return 1
}

// NewSummary returns an empty summary of a window for profile p.
func NewSummary(p *Profile) *Summary {
	s := &Summary{
		profile: p.ID(),
		alpha:   p.Options.SketchAccuracy,
		bins:    p.Options.SketchBins,
		latency: newDDSketch(LatencyAccuracy, LatencyBins),
		feats:   make([]featState, len(p.Features)),
		lay:     make([]featLayout, len(p.Features)),
		nums:    make([]float64, len(p.Features)),
		labels:  make([]string, len(p.Features)),
		isLabel: make([]bool, len(p.Features)),
		srcs:    make([]resolved, len(p.Features)),
	}
	for i := range p.Features {
		f := &p.Features[i]
		l := &s.lay[i]
		st := &s.feats[i]
		l.name, l.kind, l.source = f.Name, f.Kind, f.Source
		st.kind = f.Kind
		switch f.Kind {
		case Numerical:
			np := f.Numerical
			l.edges = np.Edges
			l.center = np.Mean
			l.inv = 1 / np.scale()
			st.hist = make([]uint64, histLen(np.Edges))
			st.sk = newZSketch(s.alpha, s.bins)
		case Categorical:
			cp := f.Categorical
			l.catIndex = make(map[string]int, len(cp.Categories))
			l.codeIndex = map[float64]int{}
			for j, c := range cp.Categories {
				l.catIndex[c] = j
				if v, err := strconv.ParseFloat(c, 64); err == nil && codeLabel(v) == c {
					l.codeIndex[v] = j
				}
			}
			st.cats = make([]uint64, len(cp.Categories)+1)
		}
	}
	return s
}

// Profile returns the ID of the profile the summary belongs to.
func (s *Summary) Profile() string { return s.profile }

// Observe records one prediction's feature values, one per profile
// feature in order. NaN and ±Inf are missing values. Categorical features
// take numeric codes, matched against the profile's categories by their
// shortest decimal form (3 matches "3").
func (s *Summary) Observe(x []float64) error {
	if s.lay == nil {
		return fmt.Errorf("%w: a decoded summary cannot observe", ErrInput)
	}
	if len(x) != len(s.feats) {
		return fmt.Errorf("%w: %d values for %d features", ErrInput, len(x), len(s.feats))
	}
	for i, v := range x {
		s.observe(i, v)
	}
	return nil
}

func (s *Summary) observe(i int, v float64) {
	f, l := &s.feats[i], &s.lay[i]
	if l.kind == Categorical {
		s.observeCode(i, v)
		return
	}
	if v != v || v > math.MaxFloat64 || v < -math.MaxFloat64 {
		f.missing++
		return
	}
	if f.n == 0 {
		f.min, f.max = v, v
	} else if v < f.min {
		f.min = v
	} else if v > f.max {
		f.max = v
	}
	f.n++
	d := v - l.center
	f.sum += d
	f.sumsq += d * d
	if f.sumsq > math.MaxFloat64 || f.sum > math.MaxFloat64 || f.sum < -math.MaxFloat64 {
		f.saturate() // values near the float64 limits
	}
	f.hist[binIndex(l.edges, v)]++
	f.sk.add(d * l.inv)
}

func (s *Summary) observeCode(i int, v float64) {
	f, l := &s.feats[i], &s.lay[i]
	if v != v || v > math.MaxFloat64 || v < -math.MaxFloat64 {
		f.missing++
		return
	}
	f.n++
	if j, ok := l.codeIndex[v]; ok {
		f.cats[j]++
		return
	}
	f.cats[len(f.cats)-1]++
	if v == 0 {
		v = 0 // one key for -0 and 0
	}
	if _, ok := f.newCodes[v]; ok || len(f.newCodes)+len(f.newCats) < MaxNewCategories {
		if f.newCodes == nil {
			f.newCodes = map[float64]uint64{}
		}
		f.newCodes[v]++
	}
}

func (s *Summary) observeLabel(i int, label string) {
	f, l := &s.feats[i], &s.lay[i]
	if label == "" {
		f.missing++
		return
	}
	f.n++
	if j, ok := l.catIndex[label]; ok {
		f.cats[j]++
		return
	}
	f.cats[len(f.cats)-1]++
	if label == OtherCategory || validLabel(label) != nil {
		return // counted, not named
	}
	if _, ok := f.newCats[label]; ok || len(f.newCodes)+len(f.newCats) < MaxNewCategories {
		if f.newCats == nil {
			f.newCats = map[string]uint64{}
		}
		f.newCats[label]++
	}
}

// ObserveMap records one prediction given as feature name → value.
// Numerical features take float64, float32, any integer type or bool;
// categorical ones a string label or any of those as a numeric code. A
// feature absent from m or nil is missing; names m has beyond the
// profile's are ignored. Nothing is recorded when a value has the wrong
// type.
func (s *Summary) ObserveMap(m map[string]any) error {
	if s.lay == nil {
		return fmt.Errorf("%w: a decoded summary cannot observe", ErrInput)
	}
	for i := range s.lay {
		l := &s.lay[i]
		s.isLabel[i] = false
		s.nums[i] = math.NaN()
		v, ok := m[l.name]
		if !ok || v == nil {
			continue
		}
		if str, isStr := v.(string); isStr {
			if l.kind != Categorical {
				return fmt.Errorf("%w: feature %q is numerical, got the string %q", ErrInput, l.name, str)
			}
			s.labels[i], s.isLabel[i] = str, true
			continue
		}
		x, ok := number(v)
		if !ok {
			return fmt.Errorf("%w: feature %q: unsupported value type %T", ErrInput, l.name, v)
		}
		s.nums[i] = x
	}
	for i := range s.lay {
		if s.isLabel[i] {
			s.observeLabel(i, s.labels[i])
		} else {
			s.observe(i, s.nums[i])
		}
	}
	return nil
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// ObserveTensors records the predictions held by tensors (for the agent:
// a model.Output's Features, then its Tensors), reading each feature from
// its profile Source: column Source.Index of the tensor named
// Source.Tensor, whose last dimension holds the columns and whose other
// dimensions are rows, one per prediction. Every source tensor must have
// the same number of rows. Features without a Source are missing. Nothing
// is recorded when a tensor is absent or does not fit.
func (s *Summary) ObserveTensors(groups ...[]tensor.Tensor) error {
	if s.lay == nil {
		return fmt.Errorf("%w: a decoded summary cannot observe", ErrInput)
	}
	rows := -1
	for i := range s.lay {
		src := s.lay[i].source
		s.srcs[i] = resolved{}
		if src == nil {
			continue
		}
		t, ok := findTensor(groups, src.Tensor)
		if !ok {
			return fmt.Errorf("%w: feature %q: no tensor %q", ErrInput, s.lay[i].name, src.Tensor)
		}
		r, cols, err := tensorRows(t)
		if err != nil {
			return fmt.Errorf("%w: feature %q: %v", ErrInput, s.lay[i].name, err)
		}
		if src.Index >= cols {
			return fmt.Errorf("%w: feature %q: column %d of tensor %q, which has %d", ErrInput, s.lay[i].name, src.Index, src.Tensor, cols)
		}
		if rows >= 0 && r != rows {
			return fmt.Errorf("%w: feature %q: tensor %q has %d rows, other sources %d", ErrInput, s.lay[i].name, src.Tensor, r, rows)
		}
		rows = r
		s.srcs[i] = resolved{t: t, cols: cols}
	}
	if rows < 0 {
		return fmt.Errorf("%w: no feature of the profile has a tensor source", ErrInput)
	}
	for row := range rows {
		for i := range s.lay {
			r := s.srcs[i]
			if r.t == nil {
				s.feats[i].missing++
				continue
			}
			s.observe(i, element(r.t, row*r.cols+s.lay[i].source.Index))
		}
	}
	for i := range s.srcs {
		s.srcs[i] = resolved{} // do not keep the caller's tensors alive
	}
	return nil
}

// resolved is a feature's source tensor during ObserveTensors.
type resolved struct {
	t    *tensor.Tensor
	cols int
}

func findTensor(groups [][]tensor.Tensor, name string) (*tensor.Tensor, bool) {
	for _, g := range groups {
		for j := range g {
			if g[j].Name == name {
				return &g[j], true
			}
		}
	}
	return nil, false
}

// tensorRows returns the rows and columns of a tensor read as a table.
func tensorRows(t *tensor.Tensor) (rows, cols int, err error) {
	n := t.Len()
	if n < 0 {
		return 0, 0, fmt.Errorf("tensor %q: data does not match datatype %s", t.Name, t.Datatype)
	}
	if err := t.Check(); err != nil {
		return 0, 0, err
	}
	cols = 1
	if len(t.Shape) > 0 {
		cols = int(t.Shape[len(t.Shape)-1])
	}
	if cols <= 0 || n%cols != 0 {
		return 0, 0, fmt.Errorf("tensor %q: shape %v", t.Name, t.Shape)
	}
	return n / cols, cols, nil
}

// element returns element k of a checked tensor as a float64.
func element(t *tensor.Tensor, k int) float64 {
	switch d := t.Data.(type) {
	case []float32:
		return float64(d[k])
	case []float64:
		return d[k]
	case []int64:
		return float64(d[k])
	case []int32:
		return float64(d[k])
	case []int16:
		return float64(d[k])
	case []int8:
		return float64(d[k])
	case []uint8:
		return float64(d[k])
	case []bool:
		if d[k] {
			return 1
		}
		return 0
	}
	return math.NaN()
}

// ObserveHealth records one inference call: its latency and whether it
// failed.
func (s *Summary) ObserveHealth(latency time.Duration, failed bool) {
	s.predictions++
	if failed {
		s.errors++
	}
	if latency > 0 {
		_ = s.latency.Add(latency.Seconds())
	}
}

// Predictions and Errors are the inference calls recorded by
// ObserveHealth, and how many failed.
func (s *Summary) Predictions() uint64 { return s.predictions }

// Errors: see Predictions.
func (s *Summary) Errors() uint64 { return s.errors }

// LatencyQuantile returns the latency at quantile q in [0, 1], within
// LatencyAccuracy relative error, or false when no latency was recorded.
func (s *Summary) LatencyQuantile(q float64) (time.Duration, bool) {
	v, ok := sketchQuantile(s.latency, q)
	if !ok {
		return 0, false
	}
	return time.Duration(v * float64(time.Second)), true
}

// Count returns how many values feature i holds, and how many were
// missing.
func (s *Summary) Count(i int) (n, missing uint64) { return s.feats[i].n, s.feats[i].missing }

// Features is the number of features.
func (s *Summary) Features() int { return len(s.feats) }

// Merge adds other's observations to s. Both must belong to the same
// profile (ErrMismatch otherwise).
func (s *Summary) Merge(other *Summary) error {
	if err := s.compatible(other); err != nil {
		return err
	}
	if other == s {
		other = s.Clone()
	}
	if s.Start.IsZero() || (!other.Start.IsZero() && other.Start.Before(s.Start)) {
		s.Start = other.Start
	}
	if other.End.After(s.End) {
		s.End = other.End
	}
	s.predictions += other.predictions
	s.errors += other.errors
	if err := s.latency.MergeWith(other.latency); err != nil {
		return fmt.Errorf("%w: latency sketch: %w", ErrMismatch, err)
	}
	for i := range s.feats {
		f, o := &s.feats[i], &other.feats[i]
		if o.n > 0 && f.kind == Numerical {
			if f.n == 0 {
				f.min, f.max = o.min, o.max
			} else {
				f.min, f.max = min(f.min, o.min), max(f.max, o.max)
			}
		}
		f.n += o.n
		f.missing += o.missing
		f.sum += o.sum
		f.sumsq += o.sumsq
		f.saturate()
		for j := range f.hist {
			f.hist[j] += o.hist[j]
		}
		if f.sk != nil {
			if err := f.sk.merge(o.sk); err != nil {
				return fmt.Errorf("%w: feature %d sketch: %w", ErrMismatch, i, err)
			}
		}
		for j := range f.cats {
			f.cats[j] += o.cats[j]
		}
		if f.kind == Categorical {
			f.mergeNew(o)
		}
	}
	return nil
}

// mergeNew merges the new-category names, keeping the MaxNewCategories
// most frequent (ties by label).
func (f *featState) mergeNew(o *featState) {
	if len(o.newCats) == 0 && len(o.newCodes) == 0 {
		return
	}
	all := f.newNames()
	for k, v := range o.newNames() {
		all[k] += v
	}
	f.newCodes = nil
	f.newCats = capNames(all)
}

// newNames returns the new categories as labels.
func (f *featState) newNames() map[string]uint64 {
	out := make(map[string]uint64, len(f.newCats)+len(f.newCodes))
	for k, v := range f.newCats {
		out[k] += v
	}
	for k, v := range f.newCodes {
		out[codeLabel(k)] += v
	}
	return out
}

func capNames(m map[string]uint64) map[string]uint64 {
	if len(m) <= MaxNewCategories {
		return m
	}
	type kv struct {
		k string
		v uint64
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(a, b kv) int {
		if c := cmp.Compare(b.v, a.v); c != 0 {
			return c
		}
		return cmp.Compare(a.k, b.k)
	})
	out := make(map[string]uint64, MaxNewCategories)
	for _, e := range all[:MaxNewCategories] {
		out[e.k] = e.v
	}
	return out
}

func (s *Summary) compatible(o *Summary) error {
	if s.profile != o.profile {
		return fmt.Errorf("%w: profile %s, other summary's %s", ErrMismatch, s.profile, o.profile)
	}
	if s.alpha != o.alpha || s.bins != o.bins || len(s.feats) != len(o.feats) {
		return fmt.Errorf("%w: sketch settings or feature count differ", ErrMismatch)
	}
	for i := range s.feats {
		f, g := &s.feats[i], &o.feats[i]
		if f.kind != g.kind || len(f.hist) != len(g.hist) || len(f.cats) != len(g.cats) {
			return fmt.Errorf("%w: feature %d differs in kind or size", ErrMismatch, i)
		}
	}
	return nil
}

// Clone returns a deep copy of s (a decoded one: it cannot observe).
func (s *Summary) Clone() *Summary {
	c := &Summary{
		Start: s.Start, End: s.End,
		profile: s.profile, alpha: s.alpha, bins: s.bins,
		predictions: s.predictions, errors: s.errors,
		latency: s.latency.Copy(),
		feats:   make([]featState, len(s.feats)),
	}
	for i, f := range s.feats {
		f.hist = slices.Clone(f.hist)
		f.cats = slices.Clone(f.cats)
		if f.sk != nil {
			f.sk = f.sk.clone()
		}
		f.newCats = f.newNames()
		if len(f.newCats) == 0 {
			f.newCats = nil
		}
		f.newCodes = nil
		c.feats[i] = f
	}
	return c
}
