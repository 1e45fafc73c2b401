package console

// The drift page: a bundle's pooled drift report (GET /api/v1/drift) over
// a time range, its share of drifted features over consecutive slices of
// that range against the threshold, and the report of each value of one
// label key.

import (
	"cmp"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/shared/drift"
)

const (
	// driftSlices is how many consecutive slices of the range the score
	// over time is measured in (one drift query each).
	driftSlices = 12
	// driftMaxValues bounds the label values broken down (one drift
	// query each), the most common first.
	driftMaxValues = 24
	// driftProbe bounds the bundles probed for drift windows when the
	// page names none, newest first.
	driftProbe = 8
	// driftParallel is how many drift queries a page runs at once.
	driftParallel = 4
	// driftRatioCap caps a feature's statistic ÷ threshold in the
	// charts (a K-S p-value far below its threshold would dwarf the rest).
	driftRatioCap = 10
	// driftDefaultSince is the default time range.
	driftDefaultSince = "1h"
)

// driftRanges are the time ranges the page offers (any other since, a
// duration or an RFC 3339 time, is kept as given).
var driftRanges = []struct{ Value, Label string }{
	{"15m", "last 15 minutes"}, {"1h", "last hour"}, {"6h", "last 6 hours"},
	{"24h", "last 24 hours"}, {"168h", "last 7 days"},
}

// driftFeature is one feature's row and bar: Ratio is its statistic
// against its threshold (for the p-value tests, threshold ÷ p-value), so
// that 1 is the threshold for every test; Status and Gate are what the
// "gates" chart reads.
type driftFeature struct {
	drift.FeatureReport `json:"-"`
	Gate                string  `json:"gate"`
	Ratio               float64 `json:"ratio"`
	Status              string  `json:"status"`
	// Verdict is drift, ok or the feature's status when it was not
	// tested.
	Verdict string `json:"-"`
	// Hist is the reference and the window over the profile's bins, in
	// percent ("bars" chart); nil when the window has no value.
	Hist *series `json:"-"`
}

// histSeries is h as a "bars" chart: one bar pair per bin, in percent.
// Bins outside the reference's range are left out when no window value
// fell there.
func histSeries(h *drift.Histogram) *series {
	if h == nil || len(h.Reference) != len(h.Window) {
		return nil
	}
	n := len(h.Reference)
	labels := make([]string, n)
	keep := make([]bool, n)
	switch {
	case len(h.Edges) > 0 && n == max(len(h.Edges)-1, 1)+2:
		e := h.Edges
		labels[0], labels[n-1] = "< "+short(e[0]), "> "+short(e[len(e)-1])
		keep[0], keep[n-1] = h.Window[0] > 0, h.Window[n-1] > 0
		for i := 1; i < n-1; i++ {
			keep[i] = true
			switch {
			case len(e) == 1:
				labels[i] = short(e[0])
			case i == n-2:
				labels[i] = "[" + short(e[i-1]) + ", " + short(e[i]) + "]"
			default:
				labels[i] = "[" + short(e[i-1]) + ", " + short(e[i]) + ")"
			}
		}
	case len(h.Categories) == n-1:
		copy(labels, h.Categories)
		labels[n-1] = "(other labels)"
		for i := range keep {
			keep[i] = i < n-1 || h.Reference[i] > 0 || h.Window[i] > 0
		}
	default:
		return nil
	}
	s := &series{Lines: map[string][]float64{"reference": {}, "current": {}}, Unit: "%"}
	for i := range n {
		if keep[i] {
			s.Labels = append(s.Labels, labels[i])
			s.Lines["reference"] = append(s.Lines["reference"], 100*h.Reference[i])
			s.Lines["current"] = append(s.Lines["current"], 100*h.Window[i])
		}
	}
	return s
}

// short formats a bin edge in at most four significant digits.
func short(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

// scoreSeries is the "score" chart: the share of drifted features per
// slice (null where a slice had no data) against the threshold.
type scoreSeries struct {
	Labels    []string   `json:"labels"`
	Share     []*float64 `json:"share"`
	Windows   []int      `json:"windows"`
	Threshold float64    `json:"threshold"`
}

// ratioSeries is a line chart whose lines may have gaps (null).
type ratioSeries struct {
	Labels []string              `json:"labels"`
	Lines  map[string][]*float64 `json:"lines"`
}

// driftSlice is one slice of the range, for the table beside the chart.
type driftSlice struct {
	From, To time.Time
	// Label is From as the chart shows it.
	Label   string
	Windows int
	Share   *float64
	Verdict string
}

// driftRow is one label value's report.
type driftRow struct {
	Value    string
	Selector string
	Devices  int
	Report   *api.DriftReport
	Verdict  string
	Drifted  []string
	Err      string
}

// verdict says what a report concluded: drift, ok, or not_enough_data.
func verdict(r *drift.Report) string {
	switch {
	case r == nil || r.Status != drift.StatusOK:
		return string(drift.StatusNotEnoughData)
	case r.Drift:
		return "drift"
	}
	return "ok"
}

// ratio is a feature's statistic against its threshold, 1 at the
// threshold, capped at driftRatioCap.
func ratio(f drift.FeatureReport) float64 {
	var v float64
	switch {
	case f.PValue != nil && f.Threshold > 0:
		// Drift when p < threshold.
		if *f.PValue <= 0 {
			v = driftRatioCap
		} else {
			v = f.Threshold / *f.PValue
		}
	case f.Threshold > 0:
		v = f.Statistic / f.Threshold
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return driftRatioCap
	}
	return min(v, driftRatioCap)
}

func features(r *drift.Report) []driftFeature {
	if r == nil {
		return nil
	}
	out := make([]driftFeature, len(r.Features))
	for i, f := range r.Features {
		d := driftFeature{FeatureReport: f, Gate: f.Name, Ratio: ratio(f), Status: "pass", Verdict: "ok", Hist: histSeries(f.Histogram)}
		switch {
		case f.Drift:
			d.Status, d.Verdict = "breach", "drift"
		case f.Status == drift.StatusNotEnoughData:
			d.Status, d.Verdict, d.Ratio = "waiting", string(f.Status), 0
		}
		out[i] = d
	}
	return out
}

// parseSince reads since as a duration before now or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, errors.New("since: want a positive duration")
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errors.New("since: want a duration (1h) or an RFC 3339 time")
	}
	if !t.Before(now) {
		return time.Time{}, errors.New("since: must be in the past")
	}
	return t, nil
}

// apiMessage is an API error as the page shows it inline; other errors
// (the API unreachable) fail the page.
func apiMessage(err error) (string, bool) {
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusUnauthorized {
		return ae.Message, true
	}
	return "", false
}

// each runs fn(i) for i < n, driftParallel at a time.
func each(n int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, driftParallel)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

// and joins two selectors.
func and(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

func (c *Console) handleDrift(w http.ResponseWriter, r *request) error {
	ctx := r.Context()
	q := r.URL.Query()
	bundle := strings.TrimSpace(q.Get("bundle"))
	selector := strings.TrimSpace(q.Get("selector"))
	since := cmp.Or(strings.TrimSpace(q.Get("since")), driftDefaultSince)
	by := strings.TrimSpace(q.Get("by"))
	now := c.cfg.Now()
	data := map[string]any{"Bundle": bundle, "Selector": selector, "Since": since, "By": by}
	ranges := slices.Clone(driftRanges)
	if !slices.ContainsFunc(ranges, func(o struct{ Value, Label string }) bool { return o.Value == since }) {
		label := "since " + since
		if t, err := time.Parse(time.RFC3339Nano, since); err == nil {
			label = "since " + t.UTC().Format("2006-01-02 15:04:05") + " UTC"
		} else if _, err := time.ParseDuration(since); err == nil {
			label = "last " + since
		}
		ranges = append(ranges, struct{ Value, Label string }{since, label})
	}
	data["Ranges"] = ranges
	page := func() error {
		c.render(w, r.Request, r.sess, "drift", "Drift", liveDevices, data)
		return nil
	}

	bs, err := r.api.Bundles(ctx, "")
	if err != nil {
		return err
	}
	slices.SortFunc(bs, func(a, b api.Bundle) int {
		return cmp.Or(b.Pushed.Compare(a.Pushed), strings.Compare(b.ID(), a.ID()))
	})
	ids := make([]string, len(bs))
	for i, b := range bs {
		ids[i] = b.ID()
	}
	data["Bundles"] = ids
	from, err := parseSince(since, now)
	if err != nil {
		data["Error"] = err.Error()
		return page()
	}
	data["From"], data["To"] = from, now
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	query := func(sel string, from, to time.Time) client.DriftQuery {
		dq := client.DriftQuery{Bundle: bundle, Selector: sel, Since: rfc(from)}
		if !to.IsZero() {
			dq.Until = rfc(to)
		}
		return dq
	}

	// The report over the whole range; with no bundle named, that of the
	// newest bundle with windows in range (else the newest with a
	// profile).
	var rep *api.DriftReport
	if bundle == "" {
		var first *api.DriftReport
		var refused string // a 400: the selector, which every bundle refuses
		for i, id := range ids {
			if i == driftProbe {
				break
			}
			bundle = id
			d, err := r.api.Drift(ctx, query(selector, from, time.Time{}))
			if err != nil {
				if msg, ok := apiMessage(err); ok {
					var ae *client.Error
					if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
						refused = msg
						break
					}
					continue // no profile (404): the next
				}
				return err
			}
			if first == nil {
				first = d
			}
			if d.Windows > 0 {
				rep = d
				break
			}
		}
		if rep = cmp.Or(rep, first); rep == nil {
			bundle = ""
			data["Error"] = "No bundle in the registry has a drift profile."
			if len(ids) == 0 {
				data["Error"] = "The registry holds no bundle."
			}
			if refused != "" {
				data["Error"] = refused
			}
			return page()
		}
		bundle = rep.Bundle
		data["Bundle"] = bundle
	} else {
		if !slices.Contains(ids, bundle) {
			data["Bundles"] = append(ids, bundle)
		}
		if rep, err = r.api.Drift(ctx, query(selector, from, time.Time{})); err != nil {
			msg, ok := apiMessage(err)
			if !ok {
				return err
			}
			data["Error"] = msg
			return page()
		}
	}
	data["R"], data["Verdict"] = rep, verdict(rep.Report)
	data["Features"] = features(rep.Report)
	threshold := 0.5
	if rep.Report != nil && rep.Report.DriftShare > 0 {
		threshold = rep.Report.DriftShare
	}
	data["Threshold"] = threshold

	// The score over time: one report per slice of the range.
	step := now.Sub(from) / driftSlices
	layout := "15:04:05"
	switch {
	case now.Sub(from) > 24*time.Hour:
		layout = "01-02 15:04"
	case step < time.Second:
		layout = "15:04:05.0"
	}
	parts := make([]*api.DriftReport, driftSlices)
	errs := make([]error, driftSlices)
	each(driftSlices, func(i int) {
		a, b := from.Add(time.Duration(i)*step), from.Add(time.Duration(i+1)*step)
		if i == driftSlices-1 {
			b = now
		}
		parts[i], errs[i] = r.api.Drift(ctx, query(selector, a, b))
	})
	score := scoreSeries{Threshold: threshold}
	ratios := ratioSeries{Lines: map[string][]*float64{}}
	var sliceRows []driftSlice
	for i, p := range parts {
		a := from.Add(time.Duration(i) * step)
		row := driftSlice{From: a, To: a.Add(step), Label: a.UTC().Format(layout), Verdict: string(drift.StatusNotEnoughData)}
		score.Labels = append(score.Labels, row.Label)
		ratios.Labels = append(ratios.Labels, row.Label)
		if errs[i] != nil {
			if _, ok := apiMessage(errs[i]); !ok {
				return errs[i]
			}
		}
		var share *float64
		if p != nil && p.Report != nil && p.Report.Status == drift.StatusOK {
			v := p.Report.Share
			share = &v
			row.Windows, row.Share, row.Verdict = p.Windows, share, verdict(p.Report)
		}
		score.Share = append(score.Share, share)
		score.Windows = append(score.Windows, row.Windows)
		if rep.Report != nil {
			for _, f := range rep.Report.Features {
				var v *float64
				if share != nil {
					if j := slices.IndexFunc(p.Report.Features, func(g drift.FeatureReport) bool { return g.Name == f.Name }); j >= 0 && p.Report.Features[j].Status != drift.StatusNotEnoughData {
						x := ratio(p.Report.Features[j])
						v = &x
					}
				}
				ratios.Lines[f.Name] = append(ratios.Lines[f.Name], v)
			}
		}
		sliceRows = append(sliceRows, row)
	}
	data["Score"], data["Ratios"], data["Slices"] = score, ratios, sliceRows
	if step >= time.Second {
		data["Step"] = step.Round(time.Second)
	} else {
		data["Step"] = step.Round(time.Millisecond)
	}

	// The breakdown by label: one report per value of the key.
	fl, err := r.api.Fleet(ctx)
	if err != nil {
		return err
	}
	values := map[string]map[string]int{} // key → value → devices
	for kv, n := range fl.Labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if values[k] == nil {
			values[k] = map[string]int{}
		}
		values[k][v] += n
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range values {
			if !yield(k) {
				return
			}
		}
	})
	if by == "" && len(keys) > 0 {
		by = keys[0]
	}
	data["Keys"], data["By"] = keys, by
	var rows []driftRow
	if vs := values[by]; len(vs) > 0 {
		cs := counted(vs)
		if len(cs) > driftMaxValues {
			data["ValuesLeftOut"] = len(cs) - driftMaxValues
			cs = cs[:driftMaxValues]
		}
		slices.SortFunc(cs, func(a, b count) int { return strings.Compare(a.Key, b.Key) })
		rows = make([]driftRow, len(cs))
		each(len(cs), func(i int) {
			row := driftRow{Value: cs[i].Key, Devices: cs[i].N, Selector: and(selector, by+"="+cs[i].Key)}
			d, err := r.api.Drift(ctx, query(row.Selector, from, time.Time{}))
			switch {
			case err != nil:
				row.Verdict = "error"
				if msg, ok := apiMessage(err); ok {
					row.Err = msg
				} else {
					row.Err = err.Error()
				}
			default:
				row.Report, row.Verdict = d, verdict(d.Report)
				for _, f := range d.Report.Features {
					if f.Drift {
						row.Drifted = append(row.Drifted, f.Name)
					}
				}
			}
			rows[i] = row
		})
	}
	data["Rows"] = rows
	return page()
}
