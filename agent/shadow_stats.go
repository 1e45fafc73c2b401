package agent

// The shadow comparison's statistics: the window a candidate's outcomes
// accumulate in, the "shadow" record it becomes in the outbox, and the
// running totals Status reports.

import (
	mrand "math/rand/v2"
	"time"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// maxShadowLatencies bounds the latencies kept per shadow window
// (reservoir sampling beyond it).
const maxShadowLatencies = 1024

// ShadowStatus describes the shadow candidate in Status.
type ShadowStatus struct {
	// Candidate is "name@version"; Since when it started.
	Candidate string    `json:"candidate"`
	Since     time.Time `json:"since"`
	// Rate is the sampled share of requests.
	Rate float64 `json:"rate"`
	// Samples, Agreed, Errors and Dropped count since Since (see
	// protocol.ShadowRecord).
	Samples uint64 `json:"samples"`
	Agreed  uint64 `json:"agreed"`
	Errors  uint64 `json:"errors"`
	Dropped uint64 `json:"dropped"`
	// Records counts the shadow records appended since Since.
	Records uint64 `json:"records"`
}

// shadowWindow accumulates one candidate's comparisons.
type shadowWindow struct {
	candidate, active       string
	start                   time.Time
	samples, agreed, errors uint64
	dropped                 uint64
	latencies, activeLat    []float64 // ms, a uniform sample
	seen                    uint64
	maxDiff                 float64
}

func (w *shadowWindow) add(agreed bool, failed bool, lat, activeLat time.Duration, diff float64) {
	w.samples++
	switch {
	case failed:
		w.errors++
	case agreed:
		w.agreed++
	}
	w.maxDiff = max(w.maxDiff, diff)
	ms, ams := float64(lat)/float64(time.Millisecond), float64(activeLat)/float64(time.Millisecond)
	w.seen++
	if len(w.latencies) < maxShadowLatencies {
		w.latencies = append(w.latencies, ms)
		w.activeLat = append(w.activeLat, ams)
	} else if j := mrand.Uint64N(w.seen); j < maxShadowLatencies {
		w.latencies[j], w.activeLat[j] = ms, ams
	}
}

// record is the window's shadow record (protocol.ShadowRecord), closed at
// end.
func (w *shadowWindow) record(end time.Time) protocol.ShadowRecord {
	r := protocol.ShadowRecord{
		Candidate: w.candidate, Active: w.active, Start: w.start.UTC(), End: end.UTC(),
		Samples: w.samples, Agreed: w.agreed, Errors: w.errors, Dropped: w.dropped,
		MaxAbsDiff: w.maxDiff,
	}
	if w.samples > 0 {
		a := float64(w.agreed) / float64(w.samples)
		r.Agreement = &a
	}
	r.LatencyP50Ms, r.LatencyP95Ms = quantiles(w.latencies)
	_, r.ActiveP95Ms = quantiles(w.activeLat)
	return r
}
