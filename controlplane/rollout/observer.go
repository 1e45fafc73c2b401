package rollout

import (
	"context"
	"encoding/json"
	"fmt"
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
// own for it. It reads these payloads (other fields are ignored; records
// of other bundles and kinds, and payloads that do not decode, are not
// evidence):
//
//	metrics     {"model": "name@version", "requests": n, "errors": n, "p95Ms": x}
//	prediction  {"model": "name@version", "outputs": {"NAME": [v, ...] | {"mean": x}}}
//	drift       {"model": "name@version", "score": x}
//	shadow      {"candidate": "name@version", "samples": n, "agreed": n}
//
// metrics and prediction are what the edge agent writes (agent/telemetry.go);
// drift and shadow are the schemas this observer expects of the agent's
// drift windows and shadow comparisons.
type RecordObserver struct {
	Records Records
	// MaxRecords bounds the records read per query (default 100,000).
	MaxRecords int
}

var _ Observer = RecordObserver{}

type metricsPayload struct {
	Model    string  `json:"model"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	P95Ms    float64 `json:"p95Ms"`
}

type predictionPayload struct {
	Model   string                     `json:"model"`
	Outputs map[string]json.RawMessage `json:"outputs"`
}

type driftPayload struct {
	Model string   `json:"model"`
	Score *float64 `json:"score"`
}

type shadowPayload struct {
	Candidate string `json:"candidate"`
	Samples   int64  `json:"samples"`
	Agreed    int64  `json:"agreed"`
}

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
	since := q.Since
	seen := map[recordKey]bool{} // records at the page boundary's time
	read := 0
	for read < limit {
		if err := ctx.Err(); err != nil {
			return Health{}, err
		}
		page := min(telemetry.MaxQueryLimit, limit-read)
		recs, err := o.Records.Query(q.Device, telemetry.Query{Since: since, Until: q.Until, Limit: page})
		if err != nil {
			return Health{}, fmt.Errorf("reading the records of %s: %w", q.Device, err)
		}
		fresh := 0
		for _, r := range recs {
			k := recordKey{r.Epoch, r.ID}
			if seen[k] {
				continue
			}
			fresh++
			switch r.Kind {
			case protocol.RecordMetrics:
				var m metricsPayload
				if json.Unmarshal(r.Payload, &m) != nil || m.Model != want || m.Requests <= 0 {
					continue
				}
				h.Requests += m.Requests
				h.Errors += min(max(m.Errors, 0), m.Requests)
				if m.P95Ms > 0 {
					latencyWeighted += m.P95Ms * float64(m.Requests)
					latencyReqs += m.Requests
				}
			case protocol.RecordPrediction:
				var p predictionPayload
				if json.Unmarshal(r.Payload, &p) != nil || p.Model != want {
					continue
				}
				if v, ok := firstOutput(p.Outputs); ok {
					h.Output.Add(v)
				}
			case protocol.RecordDrift:
				var d driftPayload
				if json.Unmarshal(r.Payload, &d) != nil || d.Model != want || d.Score == nil {
					continue
				}
				h.DriftWindows++
				driftSum += *d.Score
			case protocol.RecordShadow:
				var s shadowPayload
				if json.Unmarshal(r.Payload, &s) != nil || s.Candidate != want || s.Samples <= 0 {
					continue
				}
				h.ShadowSamples += s.Samples
				h.ShadowAgreed += min(max(s.Agreed, 0), s.Samples)
			}
		}
		read += fresh
		if len(recs) < page || fresh == 0 {
			break
		}
		// Next page from the last record's time; the records at exactly
		// that time are read again and skipped. (More than a page of
		// records at one instant would end the reading early; a device
		// does not write 10,000 records in one nanosecond.)
		last := recs[len(recs)-1].Time
		if !last.Equal(since) {
			clear(seen)
		}
		since = last
		for _, r := range recs {
			if r.Time.Equal(last) {
				seen[recordKey{r.Epoch, r.ID}] = true
			}
		}
	}
	if latencyReqs > 0 {
		h.LatencyP95Ms = latencyWeighted / float64(latencyReqs)
	}
	if h.DriftWindows > 0 {
		h.DriftScore = driftSum / float64(h.DriftWindows)
	}
	return h, nil
}

type recordKey struct {
	epoch string
	id    uint64
}

// firstOutput returns the first value of the first output (by name): the
// first element of an inline list, or the mean of a summary.
func firstOutput(outs map[string]json.RawMessage) (float64, bool) {
	if len(outs) == 0 {
		return 0, false
	}
	names := make([]string, 0, len(outs))
	for n := range outs {
		names = append(names, n)
	}
	slices.Sort(names)
	raw := outs[names[0]]
	var vals []float64
	if json.Unmarshal(raw, &vals) == nil {
		if len(vals) == 0 {
			return 0, false
		}
		return vals[0], true
	}
	var sum struct {
		Mean *float64 `json:"mean"`
	}
	if json.Unmarshal(raw, &sum) == nil && sum.Mean != nil {
		return *sum.Mean, true
	}
	return 0, false
}
