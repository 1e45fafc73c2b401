package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Records reads a device's stored records; *telemetry.Store implements
// it.
type Records interface {
	Query(device string, q telemetry.Query) ([]telemetry.Record, error)
}

// RecordObserver is an Observer computing Health from the records fleetd
// stored (controlplane/telemetry), so that fleetd needs no code of its
// own for it. It decodes the payloads the edge agent writes
// (shared/protocol's record types) and reads these fields of them (the
// others are ignored; records of other bundles and kinds, and payloads
// that do not decode, are not evidence):
//
//	metrics     protocol.MetricsRecord     model, requests, errors, p95Ms
//	prediction  protocol.PredictionRecord  model, outputs (the first value of the first by name)
//	drift       protocol.DriftRecord       model, score
//	shadow      protocol.ShadowRecord      candidate, samples, agreed
type RecordObserver struct {
	Records Records
	// MaxRecords bounds the records read per query (default 100,000).
	MaxRecords int
}

var _ Observer = RecordObserver{}

// Health implements Observer.
func (o RecordObserver) Health(ctx context.Context, q HealthQuery) (Health, error) {
	limit := o.MaxRecords
	if limit <= 0 {
		limit = 100_000
	}
	want := q.Bundle.ID()
	var h Health
	var latencyWeighted float64
	var latencyReqs int64
	var driftSum float64
	pages := telemetry.NewPager(q.Since)
	read := 0
	for read < limit {
		if err := ctx.Err(); err != nil {
			return Health{}, err
		}
		page := min(telemetry.MaxQueryLimit, limit-read)
		recs, err := o.Records.Query(q.Device, telemetry.Query{Since: pages.Since(), Until: q.Until, Limit: page})
		if err != nil {
			return Health{}, fmt.Errorf("reading the records of %s: %w", q.Device, err)
		}
		fresh := 0
		for _, r := range recs {
			if !pages.Fresh(r) {
				continue
			}
			fresh++
			switch r.Kind {
			case protocol.RecordMetrics:
				var m protocol.MetricsRecord
				if json.Unmarshal(r.Payload, &m) != nil || m.Model != want || m.Requests == 0 || m.Requests > math.MaxInt64 {
					continue
				}
				reqs := int64(m.Requests)
				h.Requests += reqs
				h.Errors += int64(min(m.Errors, m.Requests))
				if m.P95Ms > 0 {
					latencyWeighted += m.P95Ms * float64(reqs)
					latencyReqs += reqs
				}
			case protocol.RecordPrediction:
				var p protocol.PredictionRecord
				if json.Unmarshal(r.Payload, &p) != nil || p.Model != want {
					continue
				}
				if v, ok := firstOutput(p.Outputs); ok {
					h.Output.Add(v)
				}
			case protocol.RecordDrift:
				var d protocol.DriftRecord
				if json.Unmarshal(r.Payload, &d) != nil || d.Model != want || d.Score == nil {
					continue
				}
				h.DriftWindows++
				driftSum += *d.Score
			case protocol.RecordShadow:
				var s protocol.ShadowRecord
				if json.Unmarshal(r.Payload, &s) != nil || s.Candidate != want || s.Samples == 0 || s.Samples > math.MaxInt64 {
					continue
				}
				h.ShadowSamples += int64(s.Samples)
				h.ShadowAgreed += int64(min(s.Agreed, s.Samples))
			}
		}
		read += fresh
		if len(recs) < page || fresh == 0 {
			break
		}
		// (More than a page of records at one instant would end the
		// reading early; a device does not write 10,000 records in one
		// nanosecond.)
		pages.Next(recs)
	}
	if latencyReqs > 0 {
		h.LatencyP95Ms = latencyWeighted / float64(latencyReqs)
	}
	if h.DriftWindows > 0 {
		h.DriftScore = driftSum / float64(h.DriftWindows)
	}
	return h, nil
}

// firstOutput returns the first value of the first output (by name): the
// first element of an inline list, or the mean of a summary.
func firstOutput(outs map[string]protocol.TensorSample) (float64, bool) {
	if len(outs) == 0 {
		return 0, false
	}
	first := outs[slices.Min(slices.Collect(maps.Keys(outs)))]
	switch {
	case first.Summary != nil:
		return first.Summary.Mean, true
	case len(first.Values) > 0:
		return first.Values[0], true
	}
	return 0, false
}
