package drift

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"unicode/utf8"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/drift/stats"
)

// ProfileVersion is the version of the profile format this package writes
// and reads.
const ProfileVersion = 1

// Profile is a reference profile: what the drift tests need to know about
// the reference data, built at publish time and shipped in the bundle
// (profile.json). Build makes one; ParseProfile and LoadProfile read one.
// A Profile is read-only once built or parsed.
type Profile struct {
	// Version is ProfileVersion.
	Version int `json:"version"`
	// Options are the settings, defaults filled in.
	Options Options `json:"options"`
	// Features are in the schema's order.
	Features []FeatureProfile `json:"features"`

	id string
}

// FeatureProfile describes one feature of the reference data.
type FeatureProfile struct {
	Name      string   `json:"name"`
	Kind      Kind     `json:"kind"`
	Test      Test     `json:"test,omitempty"`
	Threshold *float64 `json:"threshold,omitempty"`
	Source    *Source  `json:"source,omitempty"`
	// Count is the number of reference values; Missing the rows without
	// one (empty, NaN or infinite).
	Count   int64 `json:"count"`
	Missing int64 `json:"missing"`
	// Exactly one of Numerical and Categorical is set, by Kind.
	Numerical   *NumericalProfile   `json:"numerical,omitempty"`
	Categorical *CategoricalProfile `json:"categorical,omitempty"`
}

// NumericalProfile summarizes a numerical feature's reference values.
type NumericalProfile struct {
	// Mean, Std (population standard deviation, like numpy.std), Min, Max.
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	// Edges are the histogram's bin edges: the reference quantiles at
	// 0, 1/Bins, ..., 1 with duplicates removed, so Edges[0] is the
	// minimum and the last edge the maximum. Bins are [e_i, e_i+1), the
	// last one closed; with a single edge, one bin holding just that
	// value.
	Edges []float64 `json:"edges"`
	// Counts are the reference's histogram: below Edges[0] (always 0),
	// the inner bins, above the last edge (always 0).
	Counts []int64 `json:"counts"`
	// Sample is the reference sample, sorted: every value when there are
	// at most Options.SampleSize, else SampleSize evenly spaced order
	// statistics (the values at ranks (i+½)·Count/SampleSize).
	Sample []float64 `json:"sample"`
	// SampleKS and SampleWasserstein are the K-S and Wasserstein-1
	// distances between the full reference and Sample (0 when Sample is
	// complete): they bound the error that using Sample adds to those
	// statistics.
	SampleKS          float64 `json:"sampleKS"`
	SampleWasserstein float64 `json:"sampleWasserstein"`
}

// CategoricalProfile summarizes a categorical feature's reference labels.
type CategoricalProfile struct {
	// Categories are the most frequent labels (at most
	// Options.MaxCategories), by decreasing count then label.
	Categories []string `json:"categories"`
	// Counts has one count per category and, last, the count of every
	// other label (OtherCategory).
	Counts []int64 `json:"counts"`
}

// Build computes the profile of data (which must have a column for every
// feature of the schema).
func Build(s *Schema, data *Data) (*Profile, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	p := &Profile{Version: ProfileVersion, Options: s.Options.withDefaults()}
	for _, fs := range s.Features {
		f := FeatureProfile{Name: fs.Name, Kind: fs.Kind, Test: fs.Test, Threshold: fs.Threshold, Source: fs.Source}
		var err error
		switch fs.Kind {
		case Numerical:
			err = buildNumerical(&f, data, p.Options)
		case Categorical:
			err = buildCategorical(&f, data, p.Options)
		}
		if err != nil {
			return nil, err
		}
		p.Features = append(p.Features, f)
	}
	if err := p.seal(); err != nil {
		return nil, err
	}
	return p, nil
}

func buildNumerical(f *FeatureProfile, data *Data, o Options) error {
	vals, err := data.numbers(f.Name)
	if err != nil {
		return err
	}
	sorted := make([]float64, 0, len(vals))
	for _, v := range vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			f.Missing++
			continue
		}
		sorted = append(sorted, v)
	}
	if len(sorted) == 0 {
		return fmt.Errorf("%w: feature %q has no values (%d rows, all missing)", ErrData, f.Name, len(vals))
	}
	slices.Sort(sorted)
	n := len(sorted)
	f.Count = int64(n)
	var sum float64
	for _, v := range sorted {
		sum += v
	}
	mean := sum / float64(n)
	var ss float64
	for _, v := range sorted {
		ss += (v - mean) * (v - mean)
	}
	np := &NumericalProfile{
		Mean: mean,
		Std:  math.Sqrt(ss / float64(n)),
		Min:  sorted[0],
		Max:  sorted[n-1],
	}
	if math.IsInf(np.Mean, 0) || math.IsInf(np.Std, 0) || math.IsNaN(np.Std) {
		return fmt.Errorf("%w: feature %q: values too large for a mean and standard deviation (range %g to %g)", ErrData, f.Name, np.Min, np.Max)
	}
	for i := 0; i <= o.Bins; i++ {
		np.Edges = append(np.Edges, quantile(sorted, float64(i)/float64(o.Bins)))
	}
	slices.Sort(np.Edges) // interpolation rounding must not break the order
	np.Edges = slices.Compact(np.Edges)
	np.Counts = make([]int64, histLen(np.Edges))
	for _, v := range sorted {
		np.Counts[binIndex(np.Edges, v)]++
	}
	if n <= o.SampleSize {
		np.Sample = sorted
	} else {
		m := o.SampleSize
		np.Sample = make([]float64, m)
		for i := range m {
			np.Sample[i] = sorted[int((float64(i)+0.5)*float64(n)/float64(m))]
		}
		np.SampleKS = stats.KS(sorted, np.Sample)
		_, np.SampleWasserstein = stats.Distances(sorted, stats.Points(np.Sample))
	}
	f.Numerical = np
	return nil
}

func buildCategorical(f *FeatureProfile, data *Data, o Options) error {
	labels, err := data.labels(f.Name)
	if err != nil {
		return err
	}
	counts := map[string]int64{}
	for _, l := range labels {
		if l == "" {
			f.Missing++
			continue
		}
		if err := validLabel(l); err != nil {
			return fmt.Errorf("%w: feature %q: %v", ErrData, f.Name, err)
		}
		counts[l]++
		f.Count++
	}
	if f.Count == 0 {
		return fmt.Errorf("%w: feature %q has no values (%d rows, all missing)", ErrData, f.Name, len(labels))
	}
	var other int64
	type kv struct {
		label string
		n     int64
	}
	var all []kv
	for l, n := range counts {
		if l == OtherCategory {
			other += n
			continue
		}
		all = append(all, kv{l, n})
	}
	slices.SortFunc(all, func(a, b kv) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return cmp.Compare(a.label, b.label)
	})
	cp := &CategoricalProfile{}
	for i, c := range all {
		if i >= o.MaxCategories {
			other += c.n
			continue
		}
		cp.Categories = append(cp.Categories, c.label)
		cp.Counts = append(cp.Counts, c.n)
	}
	cp.Categories = orEmpty(cp.Categories)
	cp.Counts = append(cp.Counts, other)
	f.Categorical = cp
	return nil
}

// maxLabel bounds a category label's length.
const maxLabel = 256

func validLabel(l string) error {
	if len(l) > maxLabel {
		return fmt.Errorf("category label of %d bytes (at most %d)", len(l), maxLabel)
	}
	if !utf8.ValidString(l) {
		return fmt.Errorf("category label %q is not UTF-8", l)
	}
	return nil
}

// quantile is numpy.quantile's default (linear interpolation) of a sorted
// non-empty sample.
func quantile(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	frac := pos - float64(lo)
	if frac == 0 {
		return sorted[lo]
	}
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// histLen is the number of histogram counts for edges: underflow, the
// inner bins (at least one), overflow.
func histLen(edges []float64) int { return max(len(edges)-1, 1) + 2 }

// binIndex is the histogram bin of x (see NumericalProfile.Edges): 0 below
// the first edge, histLen−1 above the last, else the inner bin.
func binIndex(edges []float64, x float64) int {
	k := len(edges) - 1
	inner := max(k, 1)
	if x < edges[0] {
		return 0
	}
	if x > edges[k] {
		return inner + 1
	}
	// Find j = the number of edges ≤ x, in [1, k+1]. Counting beats a
	// binary search (whose branches mispredict) up to a few dozen edges.
	if k < 32 {
		j := 0
		for _, e := range edges {
			j += b2i(e <= x)
		}
		return min(j, inner)
	}
	lo, hi := 1, k+1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if edges[mid] <= x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return min(lo, inner)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ID identifies the profile: a digest of its canonical JSON encoding.
// Summaries carry it, so that they are merged and compared only with
// summaries and profiles of the same reference.
func (p *Profile) ID() string { return p.id }

// Feature returns the index of the named feature, or −1.
func (p *Profile) Feature(name string) int {
	for i := range p.Features {
		if p.Features[i].Name == name {
			return i
		}
	}
	return -1
}

// seal validates the profile and computes its ID.
func (p *Profile) seal() error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrProfile, err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrProfile, err)
	}
	sum := sha256.Sum256(b)
	p.id = hex.EncodeToString(sum[:idLen])
	return nil
}

// idLen is the length in bytes of a profile ID.
const idLen = 16

// MarshalIndent returns the profile as JSON, one feature per block, with
// a final newline (the form WriteFile writes).
func (p *Profile) MarshalIndent() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", " "); err != nil {
		return nil, err
	}
	// Keep arrays of numbers and strings on one line: json.Indent puts
	// each element on its own line, which makes a 2,000-point sample
	// 2,000 lines.
	return append(compactArrays(out.Bytes()), '\n'), nil
}

// compactArrays joins the lines of arrays that hold only numbers and
// strings.
func compactArrays(b []byte) []byte {
	lines := bytes.Split(b, []byte("\n"))
	var out [][]byte
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if !bytes.HasSuffix(l, []byte("[")) {
			out = append(out, l)
			continue
		}
		j := i + 1
		var elems [][]byte
		numeric := true
		for ; j < len(lines); j++ {
			t := bytes.TrimSpace(lines[j])
			if bytes.HasPrefix(t, []byte("]")) {
				break
			}
			t = bytes.TrimSuffix(t, []byte(","))
			if len(t) == 0 || !(t[0] == '-' || t[0] == '"' || (t[0] >= '0' && t[0] <= '9')) {
				numeric = false
				break
			}
			elems = append(elems, t)
		}
		if !numeric || j >= len(lines) {
			out = append(out, l)
			continue
		}
		closing := bytes.TrimSpace(lines[j])
		joined := append(append(append([]byte{}, l...), bytes.Join(elems, []byte(","))...), closing...)
		out = append(out, joined)
		i = j
	}
	return bytes.Join(out, []byte("\n"))
}

// WriteFile writes the profile to path atomically (temporary file, fsync,
// rename, fsync of the directory).
func (p *Profile) WriteFile(path string) error {
	b, err := p.MarshalIndent()
	if err != nil {
		return fmt.Errorf("drift: encoding profile: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("drift: writing %s: %w", path, err)
	}
	return nil
}

// ParseProfile parses and validates a profile. Unknown fields are errors.
func ParseProfile(b []byte) (*Profile, error) {
	var p Profile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProfile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the profile object", ErrProfile)
	}
	if err := p.seal(); err != nil {
		return nil, err
	}
	return &p, nil
}

// LoadProfile reads and parses a profile file.
func LoadProfile(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("drift: reading profile: %w", err)
	}
	p, err := ParseProfile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

func (p *Profile) validate() error {
	if p.Version != ProfileVersion {
		return fmt.Errorf("version %d (this build reads version %d)", p.Version, ProfileVersion)
	}
	o := p.Options
	if o != o.withDefaults() {
		return fmt.Errorf("options must be complete (zero fields found: %+v)", o)
	}
	if err := o.validate(); err != nil {
		return fmt.Errorf("options: %v", err)
	}
	if len(p.Features) == 0 || len(p.Features) > maxFeatures {
		return fmt.Errorf("%d features (want 1 to %d)", len(p.Features), maxFeatures)
	}
	seen := map[string]bool{}
	for i := range p.Features {
		f := &p.Features[i]
		fs := FeatureSchema{Name: f.Name, Kind: f.Kind, Test: f.Test, Threshold: f.Threshold, Source: f.Source}
		if err := fs.validate(); err != nil {
			return fmt.Errorf("feature %d: %v", i, err)
		}
		if seen[f.Name] {
			return fmt.Errorf("feature %q listed twice", f.Name)
		}
		seen[f.Name] = true
		if f.Count < 1 || f.Missing < 0 {
			return fmt.Errorf("feature %q: count %d, missing %d", f.Name, f.Count, f.Missing)
		}
		var err error
		switch {
		case f.Kind == Numerical && f.Numerical != nil && f.Categorical == nil:
			err = f.Numerical.validate(f.Count, o)
		case f.Kind == Categorical && f.Categorical != nil && f.Numerical == nil:
			err = f.Categorical.validate(f.Count, o)
		default:
			err = fmt.Errorf("a %s feature needs exactly its %s section", f.Kind, f.Kind)
		}
		if err != nil {
			return fmt.Errorf("feature %q: %v", f.Name, err)
		}
	}
	return nil
}

func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

func (np *NumericalProfile) validate(count int64, o Options) error {
	if !finite(np.Mean, np.Std, np.Min, np.Max, np.SampleKS, np.SampleWasserstein) || np.Std < 0 || np.Min > np.Max {
		return fmt.Errorf("mean %g, std %g, min %g, max %g", np.Mean, np.Std, np.Min, np.Max)
	}
	if np.SampleKS < 0 || np.SampleKS > 1 || np.SampleWasserstein < 0 {
		return fmt.Errorf("sampleKS %g, sampleWasserstein %g", np.SampleKS, np.SampleWasserstein)
	}
	if len(np.Edges) < 1 || len(np.Edges) > o.Bins+1 {
		return fmt.Errorf("%d edges (want 1 to bins+1 = %d)", len(np.Edges), o.Bins+1)
	}
	for i, e := range np.Edges {
		if !finite(e) || (i > 0 && e <= np.Edges[i-1]) {
			return fmt.Errorf("edges must be finite and increasing (edge %d = %g)", i, e)
		}
	}
	if np.Edges[0] != np.Min || np.Edges[len(np.Edges)-1] != np.Max {
		return fmt.Errorf("edges span [%g, %g], not [min, max] = [%g, %g]", np.Edges[0], np.Edges[len(np.Edges)-1], np.Min, np.Max)
	}
	if len(np.Counts) != histLen(np.Edges) {
		return fmt.Errorf("%d counts for %d edges (want %d)", len(np.Counts), len(np.Edges), histLen(np.Edges))
	}
	var sum int64
	for _, c := range np.Counts {
		if c < 0 {
			return fmt.Errorf("negative count %d", c)
		}
		sum += c
	}
	if sum != count || np.Counts[0] != 0 || np.Counts[len(np.Counts)-1] != 0 {
		return fmt.Errorf("counts %v do not hold the %d reference values within the edges", np.Counts, count)
	}
	if len(np.Sample) < 1 || len(np.Sample) > o.SampleSize || int64(len(np.Sample)) > count {
		return fmt.Errorf("sample of %d values (want 1 to min(sampleSize %d, count %d))", len(np.Sample), o.SampleSize, count)
	}
	if int64(len(np.Sample)) < count && len(np.Sample) != o.SampleSize {
		return fmt.Errorf("sample of %d values for %d reference values (want sampleSize %d)", len(np.Sample), count, o.SampleSize)
	}
	for i, v := range np.Sample {
		if !finite(v) || v < np.Min || v > np.Max || (i > 0 && v < np.Sample[i-1]) {
			return fmt.Errorf("sample must be sorted and within [min, max] (value %d = %g)", i, v)
		}
	}
	return nil
}

func (cp *CategoricalProfile) validate(count int64, o Options) error {
	if len(cp.Categories) > o.MaxCategories {
		return fmt.Errorf("%d categories (maxCategories %d)", len(cp.Categories), o.MaxCategories)
	}
	seen := map[string]bool{}
	for _, c := range cp.Categories {
		if c == "" || c == OtherCategory || seen[c] {
			return fmt.Errorf("category %q is empty, reserved or repeated", c)
		}
		if err := validLabel(c); err != nil {
			return err
		}
		seen[c] = true
	}
	if len(cp.Counts) != len(cp.Categories)+1 {
		return fmt.Errorf("%d counts for %d categories (want one more, for %s)", len(cp.Counts), len(cp.Categories), OtherCategory)
	}
	var sum int64
	for _, c := range cp.Counts {
		if c < 0 {
			return fmt.Errorf("negative count %d", c)
		}
		sum += c
	}
	if sum != count {
		return fmt.Errorf("counts sum to %d, not the count %d", sum, count)
	}
	return nil
}
