package drift

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// SummaryVersion is the version of the summary encodings.
const SummaryVersion = 1

// binaryMagic starts the binary encoding.
const binaryMagic = "EFDS"

// Decoding limits, beyond those the profile options imply.
const (
	maxHist   = 256 + 2   // Options.Bins ≤ 256
	maxCats   = 10000 + 1 // Options.MaxCategories ≤ 10000
	maxCount  = 1 << 53   // counts stay exact in float64
	maxZIndex = 1 << 22   // sketch bin indices (|z| ≤ maxZ needs far fewer)
	maxUnixNs = 1 << 62   // times
	minAlpha  = 0.001     // the range of Options.SketchAccuracy
	maxAlpha  = 0.2
)

// wireSummary is a summary in the form both encodings carry.
type wireSummary struct {
	V              int           `json:"v"`
	Profile        string        `json:"profile"`
	Start          time.Time     `json:"start,omitzero"`
	End            time.Time     `json:"end,omitzero"`
	Predictions    uint64        `json:"predictions"`
	Errors         uint64        `json:"errors"`
	Latency        wireSketch    `json:"latency"`
	SketchAccuracy float64       `json:"sketchAccuracy"`
	SketchBins     int           `json:"sketchBins"`
	Features       []wireFeature `json:"features"`
}

type wireFeature struct {
	Kind    Kind   `json:"kind"`
	N       uint64 `json:"n"`
	Missing uint64 `json:"missing"`
	// Numerical.
	Sum    float64     `json:"sum,omitempty"`
	SumSq  float64     `json:"sumSq,omitempty"`
	Min    float64     `json:"min,omitempty"`
	Max    float64     `json:"max,omitempty"`
	Hist   []uint64    `json:"hist,omitempty"`
	Sketch *wireSketch `json:"sketch,omitempty"`
	// Categorical.
	Counts []uint64          `json:"counts,omitempty"`
	New    map[string]uint64 `json:"new,omitempty"`
}

// wireSketch is a sketch's counts: the DDSketch's zero count (latency
// sketch) or the linear core (feature sketches), and each sign's DDSketch
// bins; each run of bins dense from index Offset.
type wireSketch struct {
	Zero uint64     `json:"zero,omitempty"`
	Core *wireStore `json:"core,omitempty"`
	Pos  wireStore  `json:"pos"`
	Neg  wireStore  `json:"neg"`
}

type wireStore struct {
	Offset int      `json:"offset"`
	Counts []uint64 `json:"counts"`
}

func toWireSketch(sk *ddsketch.DDSketch) wireSketch {
	w := wireSketch{Zero: uint64(sk.GetZeroCount())}
	for _, neg := range []bool{false, true} {
		s := sk.GetPositiveValueStore()
		ws := &w.Pos
		if neg {
			s, ws = sk.GetNegativeValueStore(), &w.Neg
		}
		*ws = wireStore{Counts: []uint64{}}
		if s.IsEmpty() {
			continue
		}
		lo, _ := s.MinIndex()
		hi, _ := s.MaxIndex()
		counts := make([]uint64, hi-lo+1)
		s.ForEach(func(index int, count float64) bool {
			counts[index-lo] += uint64(count)
			return false
		})
		*ws = denseRun(lo, counts)
	}
	return w
}

func toWireZ(z *zSketch) wireSketch {
	w := toWireSketch(z.dd)
	core := denseRun(0, z.core)
	w.Core = &core
	return w
}

// denseRun is counts starting at index off, empty ends trimmed.
func denseRun(off int, counts []uint64) wireStore {
	for len(counts) > 0 && counts[len(counts)-1] == 0 {
		counts = counts[:len(counts)-1]
	}
	for len(counts) > 0 && counts[0] == 0 {
		counts = counts[1:]
		off++
	}
	if len(counts) == 0 {
		off = 0
	}
	return wireStore{Offset: off, Counts: slices.Clone(counts)}
}

func (w *wireSketch) total() (uint64, error) {
	t, ok := sumCounts([]uint64{w.Zero})
	for _, s := range []*wireStore{w.Core, &w.Pos, &w.Neg} {
		if s == nil || !ok {
			continue
		}
		var u uint64
		u, ok = sumCounts(s.Counts)
		t += u
		ok = ok && t <= maxCount
	}
	if !ok {
		return 0, fmt.Errorf("sketch counts out of range")
	}
	return t, nil
}

// validate checks a sketch with at most bins DDSketch bins per sign and
// coreN core bins (0: a latency sketch, which has none).
func (w *wireSketch) validate(bins, coreN int) error {
	if coreN == 0 && w.Core != nil {
		return fmt.Errorf("a latency sketch has no core")
	}
	if coreN > 0 {
		if w.Core == nil || w.Zero != 0 {
			return fmt.Errorf("a feature sketch has a core and no zero count")
		}
		if w.Core.Offset < 0 || len(w.Core.Counts) > coreN-w.Core.Offset {
			return fmt.Errorf("core bins %d to %d out of range [0, %d)", w.Core.Offset, w.Core.Offset+len(w.Core.Counts), coreN)
		}
	}
	for _, s := range []*wireStore{&w.Pos, &w.Neg} {
		if len(s.Counts) > bins {
			return fmt.Errorf("sketch store of %d bins (at most %d)", len(s.Counts), bins)
		}
		if s.Offset < -maxZIndex || s.Offset > maxZIndex {
			return fmt.Errorf("sketch index %d out of range", s.Offset)
		}
	}
	_, err := w.total()
	return err
}

func (w *wireSketch) fill(sk *ddsketch.DDSketch) {
	if w.Zero > 0 {
		_ = sk.AddWithCount(0, float64(w.Zero))
	}
	for _, ws := range []struct {
		w *wireStore
		s store.Store
	}{{&w.Pos, sk.GetPositiveValueStore()}, {&w.Neg, sk.GetNegativeValueStore()}} {
		for i, c := range ws.w.Counts {
			if c > 0 {
				ws.s.AddWithCount(ws.w.Offset+i, float64(c))
			}
		}
	}
}

func (w *wireSketch) sketch(alpha float64, bins int) *ddsketch.DDSketch {
	sk := newDDSketch(alpha, bins)
	w.fill(sk)
	return sk
}

func (w *wireSketch) zsketch(alpha float64, bins int) *zSketch {
	z := newZSketch(alpha, bins)
	w.fill(z.dd)
	copy(z.core[w.Core.Offset:], w.Core.Counts)
	return z
}

func (s *Summary) toWire() *wireSummary {
	w := &wireSummary{
		V:              SummaryVersion,
		Profile:        s.profile,
		Start:          s.Start.UTC(),
		End:            s.End.UTC(),
		Predictions:    s.predictions,
		Errors:         s.errors,
		Latency:        toWireSketch(s.latency),
		SketchAccuracy: s.alpha,
		SketchBins:     s.bins,
		Features:       make([]wireFeature, len(s.feats)),
	}
	if s.Start.IsZero() {
		w.Start = time.Time{}
	}
	if s.End.IsZero() {
		w.End = time.Time{}
	}
	for i := range s.feats {
		f := &s.feats[i]
		wf := wireFeature{Kind: f.kind, N: f.n, Missing: f.missing}
		switch f.kind {
		case Numerical:
			if f.n > 0 {
				wf.Sum, wf.SumSq, wf.Min, wf.Max = f.sum, f.sumsq, f.min, f.max
			}
			wf.Hist = f.hist
			sk := toWireZ(f.sk)
			wf.Sketch = &sk
		case Categorical:
			wf.Counts = f.cats
			if names := f.newNames(); len(names) > 0 {
				wf.New = names
			}
		}
		w.Features[i] = wf
	}
	return w
}

// fromWire validates w and builds the (decoded) summary it describes.
func fromWire(w *wireSummary) (*Summary, error) {
	if err := w.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSummary, err)
	}
	s := &Summary{
		Start:       w.Start,
		End:         w.End,
		profile:     w.Profile,
		alpha:       w.SketchAccuracy,
		bins:        w.SketchBins,
		predictions: w.Predictions,
		errors:      w.Errors,
		latency:     w.Latency.sketch(LatencyAccuracy, LatencyBins),
		feats:       make([]featState, len(w.Features)),
	}
	for i, wf := range w.Features {
		f := &s.feats[i]
		f.kind, f.n, f.missing = wf.Kind, wf.N, wf.Missing
		switch wf.Kind {
		case Numerical:
			f.sum, f.sumsq, f.min, f.max = wf.Sum, wf.SumSq, wf.Min, wf.Max
			f.hist = slices.Clone(wf.Hist)
			f.sk = wf.Sketch.zsketch(s.alpha, s.bins)
		case Categorical:
			f.cats = slices.Clone(wf.Counts)
			if len(wf.New) > 0 {
				f.newCats = wf.New
			}
		}
	}
	return s, nil
}

func (w *wireSummary) validate() error {
	if w.V != SummaryVersion {
		return fmt.Errorf("version %d (this build reads %d)", w.V, SummaryVersion)
	}
	if b, err := hex.DecodeString(w.Profile); err != nil || len(b) != idLen {
		return fmt.Errorf("profile ID %q is not %d hex digits", w.Profile, 2*idLen)
	}
	if !(w.SketchAccuracy >= minAlpha && w.SketchAccuracy <= maxAlpha) {
		return fmt.Errorf("sketch accuracy %g out of range", w.SketchAccuracy)
	}
	if w.SketchBins < 16 || w.SketchBins > 4096 {
		return fmt.Errorf("sketch bins %d out of range", w.SketchBins)
	}
	if w.Errors > w.Predictions || w.Predictions > maxCount {
		return fmt.Errorf("%d errors of %d predictions", w.Errors, w.Predictions)
	}
	if err := w.Latency.validate(LatencyBins, 0); err != nil {
		return fmt.Errorf("latency: %v", err)
	}
	if n, _ := w.Latency.total(); n > w.Predictions {
		return fmt.Errorf("%d latencies for %d predictions", n, w.Predictions)
	}
	for _, t := range []time.Time{w.Start, w.End} {
		if !t.IsZero() && (t.Year() < 1970 || t.Year() > 2200 || t.UnixNano() <= 0 || t.UnixNano() >= maxUnixNs) {
			return fmt.Errorf("time %v out of range", t)
		}
	}
	if len(w.Features) == 0 || len(w.Features) > maxFeatures {
		return fmt.Errorf("%d features (want 1 to %d)", len(w.Features), maxFeatures)
	}
	for i := range w.Features {
		if err := w.Features[i].validate(w.SketchBins, coreBins(w.SketchAccuracy)); err != nil {
			return fmt.Errorf("feature %d: %v", i, err)
		}
	}
	return nil
}

func sumCounts(cs []uint64) (uint64, bool) {
	var t uint64
	for _, c := range cs {
		if c > maxCount {
			return 0, false
		}
		t += c
		if t > maxCount {
			return 0, false
		}
	}
	return t, true
}

func (wf *wireFeature) validate(bins, coreN int) error {
	if wf.N > maxCount || wf.Missing > maxCount {
		return fmt.Errorf("counts %d, %d out of range", wf.N, wf.Missing)
	}
	switch wf.Kind {
	case Numerical:
		if wf.Counts != nil || wf.New != nil || wf.Sketch == nil {
			return fmt.Errorf("a numerical feature has a histogram and a sketch, nothing else")
		}
		if len(wf.Hist) < 3 || len(wf.Hist) > maxHist {
			return fmt.Errorf("histogram of %d bins", len(wf.Hist))
		}
		if t, ok := sumCounts(wf.Hist); !ok || t != wf.N {
			return fmt.Errorf("histogram holds %d values, not n = %d", t, wf.N)
		}
		if err := wf.Sketch.validate(bins, coreN); err != nil {
			return err
		}
		if t, _ := wf.Sketch.total(); t != wf.N {
			return fmt.Errorf("sketch holds %d values, not n = %d", t, wf.N)
		}
		if !finite(wf.Sum, wf.SumSq, wf.Min, wf.Max) || wf.SumSq < 0 || wf.Min > wf.Max {
			return fmt.Errorf("sum %g, sum of squares %g, min %g, max %g", wf.Sum, wf.SumSq, wf.Min, wf.Max)
		}
		if wf.N == 0 && (wf.Sum != 0 || wf.SumSq != 0 || wf.Min != 0 || wf.Max != 0) {
			return fmt.Errorf("an empty feature has non-zero sums or extremes")
		}
	case Categorical:
		if wf.Hist != nil || wf.Sketch != nil || wf.Sum != 0 || wf.SumSq != 0 || wf.Min != 0 || wf.Max != 0 {
			return fmt.Errorf("a categorical feature has counts and new names, nothing else")
		}
		if len(wf.Counts) < 1 || len(wf.Counts) > maxCats {
			return fmt.Errorf("%d category counts", len(wf.Counts))
		}
		if t, ok := sumCounts(wf.Counts); !ok || t != wf.N {
			return fmt.Errorf("category counts hold %d values, not n = %d", t, wf.N)
		}
		if len(wf.New) > MaxNewCategories {
			return fmt.Errorf("%d new categories (at most %d)", len(wf.New), MaxNewCategories)
		}
		var t uint64
		for k, v := range wf.New {
			if k == "" || k == OtherCategory || validLabel(k) != nil || v == 0 || v > maxCount {
				return fmt.Errorf("new category %q with count %d", k, v)
			}
			t += v
		}
		if t > wf.Counts[len(wf.Counts)-1] {
			return fmt.Errorf("new categories hold %d values, more than %s's %d", t, OtherCategory, wf.Counts[len(wf.Counts)-1])
		}
	default:
		return fmt.Errorf("kind %q", wf.Kind)
	}
	return nil
}

// MarshalJSON encodes the summary as JSON (the readable form, see
// docs/drift.md).
func (s *Summary) MarshalJSON() ([]byte, error) { return json.Marshal(s.toWire()) }

// UnmarshalJSON decodes a JSON summary into s, which becomes a decoded
// summary. Unknown fields are errors.
func (s *Summary) UnmarshalJSON(b []byte) error {
	var w wireSummary
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("%w: %w", ErrSummary, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the summary", ErrSummary)
	}
	d, err := fromWire(&w)
	if err != nil {
		return err
	}
	*s = *d
	return nil
}

// MarshalBinary encodes the summary compactly (varints; see docs/drift.md).
func (s *Summary) MarshalBinary() ([]byte, error) {
	w := s.toWire()
	b := make([]byte, 0, 64+len(w.Features)*64)
	b = append(b, binaryMagic...)
	b = append(b, SummaryVersion)
	id, _ := hex.DecodeString(w.Profile)
	b = append(b, id...)
	b = binary.AppendVarint(b, unixNano(w.Start))
	b = binary.AppendVarint(b, unixNano(w.End))
	b = binary.AppendUvarint(b, w.Predictions)
	b = binary.AppendUvarint(b, w.Errors)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(w.SketchAccuracy))
	b = binary.AppendUvarint(b, uint64(w.SketchBins))
	b = appendSketch(b, &w.Latency, false)
	b = binary.AppendUvarint(b, uint64(len(w.Features)))
	for i := range w.Features {
		f := &w.Features[i]
		switch f.Kind {
		case Numerical:
			b = append(b, 0)
			b = binary.AppendUvarint(b, f.N)
			b = binary.AppendUvarint(b, f.Missing)
			if f.N > 0 {
				for _, v := range []float64{f.Sum, f.SumSq, f.Min, f.Max} {
					b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
				}
			}
			b = appendCounts(b, f.Hist)
			b = appendSketch(b, f.Sketch, true)
		case Categorical:
			b = append(b, 1)
			b = binary.AppendUvarint(b, f.N)
			b = binary.AppendUvarint(b, f.Missing)
			b = appendCounts(b, f.Counts)
			names := make([]string, 0, len(f.New))
			for k := range f.New {
				names = append(names, k)
			}
			slices.Sort(names)
			b = binary.AppendUvarint(b, uint64(len(names)))
			for _, k := range names {
				b = binary.AppendUvarint(b, uint64(len(k)))
				b = append(b, k...)
				b = binary.AppendUvarint(b, f.New[k])
			}
		}
	}
	return b, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func appendCounts(b []byte, cs []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for _, c := range cs {
		b = binary.AppendUvarint(b, c)
	}
	return b
}

// appendSketch appends a latency sketch (zero count, stores) or a feature
// sketch (core, stores).
func appendSketch(b []byte, w *wireSketch, core bool) []byte {
	if core {
		b = binary.AppendVarint(b, int64(w.Core.Offset))
		b = appendCounts(b, w.Core.Counts)
	} else {
		b = binary.AppendUvarint(b, w.Zero)
	}
	for _, s := range []*wireStore{&w.Pos, &w.Neg} {
		b = binary.AppendVarint(b, int64(s.Offset))
		b = appendCounts(b, s.Counts)
	}
	return b
}

// UnmarshalBinary decodes a binary summary into s, which becomes a
// decoded summary.
func (s *Summary) UnmarshalBinary(data []byte) error {
	r := &reader{b: data}
	if string(r.bytes(len(binaryMagic))) != binaryMagic {
		return fmt.Errorf("%w: not a binary summary (no %q magic)", ErrSummary, binaryMagic)
	}
	w := &wireSummary{V: int(r.byte())}
	if w.V != SummaryVersion {
		return fmt.Errorf("%w: version %d (this build reads %d)", ErrSummary, w.V, SummaryVersion)
	}
	w.Profile = hex.EncodeToString(r.bytes(idLen))
	w.Start = fromUnixNano(r.varint())
	w.End = fromUnixNano(r.varint())
	w.Predictions = r.uvarint()
	w.Errors = r.uvarint()
	w.SketchAccuracy = math.Float64frombits(binary.LittleEndian.Uint64(r.bytes(8)))
	w.SketchBins = int(r.bounded(4096))
	r.sketch(&w.Latency, LatencyBins, false)
	nf := r.int(maxFeatures)
	for range nf {
		if r.err != nil {
			break
		}
		var f wireFeature
		switch k := r.byte(); k {
		case 0:
			f.Kind = Numerical
			f.N, f.Missing = r.uvarint(), r.uvarint()
			if f.N > 0 {
				v := make([]float64, 4)
				for i := range v {
					v[i] = math.Float64frombits(binary.LittleEndian.Uint64(r.bytes(8)))
				}
				f.Sum, f.SumSq, f.Min, f.Max = v[0], v[1], v[2], v[3]
			}
			f.Hist = r.counts(maxHist)
			f.Sketch = &wireSketch{}
			r.sketch(f.Sketch, w.SketchBins, true)
		case 1:
			f.Kind = Categorical
			f.N, f.Missing = r.uvarint(), r.uvarint()
			f.Counts = r.counts(maxCats)
			nn := r.int(MaxNewCategories)
			for range nn {
				if r.err != nil {
					break
				}
				if f.New == nil {
					f.New = map[string]uint64{}
				}
				name := string(r.bytes(r.int(maxLabel)))
				if _, dup := f.New[name]; dup && r.err == nil {
					r.err = fmt.Errorf("new category %q repeated", name)
				}
				f.New[name] = r.uvarint()
			}
		default:
			if r.err == nil {
				r.err = fmt.Errorf("feature kind %d", k)
			}
		}
		w.Features = append(w.Features, f)
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes after the summary", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("%w: %v", ErrSummary, r.err)
	}
	d, err := fromWire(w)
	if err != nil {
		return err
	}
	*s = *d
	return nil
}

func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// reader decodes the binary form; the first error sticks and later reads
// return zeros.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return make([]byte, n)
	}
	if n > len(r.b) {
		r.fail("truncated (want %d more bytes, have %d)", n, len(r.b))
		return make([]byte, n)
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte { return r.bytes(1)[0] }

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad or truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// varint reads a zig-zag encoded signed varint, decoding it as
// binary.Varint does.
func (r *reader) varint() int64 {
	ux := r.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

// bounded reads a number of at most limit.
func (r *reader) bounded(limit uint64) uint64 {
	v := r.uvarint()
	if v > limit {
		r.fail("%d exceeds %d", v, limit)
		return 0
	}
	return v
}

// int reads a length of at most limit (and at most the bytes left, each
// element taking at least one).
func (r *reader) int(limit int) int {
	v := r.uvarint()
	if v > uint64(limit) {
		r.fail("length %d exceeds %d", v, limit)
		return 0
	}
	if v > uint64(len(r.b)) {
		r.fail("length %d exceeds the %d bytes left", v, len(r.b))
		return 0
	}
	return int(v)
}

func (r *reader) counts(limit int) []uint64 {
	n := r.int(limit)
	out := make([]uint64, n)
	for i := range out {
		out[i] = r.uvarint()
	}
	return out
}

func (r *reader) sketch(w *wireSketch, bins int, core bool) {
	if core {
		off := r.varint()
		if off < 0 || off > 1<<20 {
			r.fail("core index %d out of range", off)
		}
		w.Core = &wireStore{Offset: int(off), Counts: r.counts(1 << 20)}
	} else {
		w.Zero = r.uvarint()
	}
	for _, s := range []*wireStore{&w.Pos, &w.Neg} {
		off := r.varint()
		if off < -maxZIndex || off > maxZIndex {
			r.fail("sketch index %d out of range", off)
		}
		s.Offset = int(off)
		s.Counts = r.counts(max(bins, 16))
	}
}

// DecodeSummary decodes a summary in any of its encodings: binary
// (MarshalBinary), JSON (MarshalJSON), or a JSON string holding the
// base64 of the binary form (how the binary form travels in a JSON
// telemetry record).
func DecodeSummary(b []byte) (*Summary, error) {
	b = bytes.TrimSpace(b)
	s := &Summary{}
	switch {
	case bytes.HasPrefix(b, []byte(binaryMagic)):
		if err := s.UnmarshalBinary(b); err != nil {
			return nil, err
		}
	case bytes.HasPrefix(b, []byte("{")):
		if err := s.UnmarshalJSON(b); err != nil {
			return nil, err
		}
	case bytes.HasPrefix(b, []byte(`"`)):
		var enc string
		if err := json.Unmarshal(b, &enc); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSummary, err)
		}
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, fmt.Errorf("%w: base64: %w", ErrSummary, err)
		}
		if err := s.UnmarshalBinary(raw); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: neither binary (%q), JSON nor a base64 JSON string", ErrSummary, binaryMagic)
	}
	return s, nil
}

// MarshalBase64JSON returns the binary form as a JSON string of its
// base64: a JSON value for a telemetry record's payload that
// DecodeSummary reads back.
func (s *Summary) MarshalBase64JSON() ([]byte, error) {
	b, err := s.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(base64.StdEncoding.EncodeToString(b))
}
