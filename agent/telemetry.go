package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Sizes of the telemetry records.
const (
	// maxInline is the most elements of a tensor a prediction record
	// carries as values; larger ones are summarized.
	maxInline = protocol.MaxSampleValues
	// maxLatencySamples bounds the latencies kept per metrics window
	// (reservoir sampling beyond it).
	maxLatencySamples = 4096
	// maxAppendBatch is the most samples appended concurrently (one
	// group commit of the outbox).
	maxAppendBatch = 256
)

// telemetry turns the API's predictions into outbox records: a sample of
// them as "prediction" records, all of them counted into "metrics"
// windows.
type telemetry struct {
	ob       *outbox.Outbox
	log      *slog.Logger
	rate     float64
	interval time.Duration

	samples  chan []byte
	stopOnce sync.Once
	quit     chan struct{} // closed by stop
	done     sync.WaitGroup
	started  bool

	// closeMu keeps observe from sending on samples once stop closed it
	// (an API shutdown that timed out may still deliver predictions).
	closeMu sync.RWMutex
	closed  bool

	observed, sampled, dropped, failed atomic.Uint64

	mu       sync.Mutex
	windows  map[string]*window // by bundle ID
	winStart time.Time          // of the current window
}

func newTelemetry(ob *outbox.Outbox, log *slog.Logger, rate float64, interval time.Duration, queue int) *telemetry {
	return &telemetry{
		ob: ob, log: log, rate: rate, interval: interval,
		samples:  make(chan []byte, queue),
		quit:     make(chan struct{}),
		windows:  map[string]*window{},
		winStart: time.Now(),
	}
}

// register adds the sampling counters to the API's metrics registry.
func (t *telemetry) register(reg *prometheus.Registry) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edge_agent_prediction_samples_total",
			Help: "Predictions sampled into the outbox (buffer.predictionSampleRate).",
		}, func() float64 { return float64(t.sampled.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edge_agent_prediction_samples_dropped_total",
			Help: "Prediction samples dropped because the sample queue was full, or not appended because the outbox failed.",
		}, func() float64 { return float64(t.dropped.Load() + t.failed.Load()) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (t *telemetry) start() {
	t.started = true
	t.done.Add(2)
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		t.appender()
	}()
	go t.flusher(appended)
}

// stop appends what is queued and the last metrics window. The API server
// must have stopped calling observe.
func (t *telemetry) stop() {
	if !t.started {
		return
	}
	t.stopOnce.Do(func() {
		close(t.quit)
		t.closeMu.Lock()
		t.closed = true
		close(t.samples)
		t.closeMu.Unlock()
	})
	t.done.Wait()
}

func (t *telemetry) stats() PredictionStats {
	return PredictionStats{
		Observed: t.observed.Load(), Sampled: t.sampled.Load(), Dropped: t.dropped.Load(),
		Failed: t.failed.Load(), SampleRate: t.rate,
	}
}

// observe is the API's OnPrediction hook. It runs on the API server's
// observer goroutine and never waits for the outbox.
func (t *telemetry) observe(p api.Prediction) {
	t.observed.Add(1)
	id := p.Model + "@" + p.Version
	t.mu.Lock()
	w := t.windows[id]
	if w == nil {
		w = &window{model: id}
		t.windows[id] = w
	}
	w.add(p)
	t.mu.Unlock()

	if t.rate <= 0 || (t.rate < 1 && rand.Float64() >= t.rate) {
		return
	}
	b, err := json.Marshal(predictionRecord(p, id))
	if err != nil {
		t.failed.Add(1)
		t.log.Warn("prediction sample not encoded", "err", err)
		return
	}
	t.closeMu.RLock()
	defer t.closeMu.RUnlock()
	if t.closed {
		t.dropped.Add(1)
		return
	}
	select {
	case t.samples <- b:
	default:
		t.dropped.Add(1)
	}
}

// appender appends the queued samples, as many at once as are queued (up
// to maxAppendBatch), so that they share the outbox's group commits.
func (t *telemetry) appender() {
	defer t.done.Done()
	batch := make([][]byte, 0, maxAppendBatch)
	for b := range t.samples {
		batch = append(batch[:0], b)
	more:
		for len(batch) < maxAppendBatch {
			select {
			case b, ok := <-t.samples:
				if !ok {
					break more
				}
				batch = append(batch, b)
			default:
				break more
			}
		}
		var wg sync.WaitGroup
		for _, b := range batch {
			wg.Go(func() { t.append(protocol.RecordPrediction, b) })
		}
		wg.Wait()
	}
}

func (t *telemetry) append(kind string, b []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if _, err := t.ob.Append(ctx, kind, b); err != nil {
		if kind == protocol.RecordPrediction {
			t.failed.Add(1)
		}
		t.log.Warn("telemetry record not appended", "kind", kind, "err", err)
		return
	}
	if kind == protocol.RecordPrediction {
		t.sampled.Add(1)
	}
}

// flusher closes a metrics window every interval. At stop it waits for
// the appender to drain the queued samples first, so the last window's
// record (with its buffer and drop counts) comes after them.
func (t *telemetry) flusher(appended <-chan struct{}) {
	defer t.done.Done()
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		select {
		case now := <-tick.C:
			t.flush(now)
		case <-t.quit:
			<-appended
			t.flush(time.Now())
			return
		}
	}
}

// flush closes the current window and appends a metrics record for every
// bundle that answered requests in it (an idle window appends nothing).
func (t *telemetry) flush(now time.Time) {
	t.mu.Lock()
	ws, start := t.windows, t.winStart
	t.windows, t.winStart = map[string]*window{}, now
	t.mu.Unlock()
	st := t.ob.Stats()
	for _, id := range slices.Sorted(maps.Keys(ws)) {
		w := ws[id]
		rec := w.record(start, now)
		rec.Buffer = protocol.BufferStats{Records: int64(st.Records), Bytes: st.Bytes, Dropped: st.Dropped}
		rec.SampleRate = t.rate
		rec.SamplesDropped = t.dropped.Load() + t.failed.Load()
		b, err := json.Marshal(rec)
		if err != nil {
			t.log.Warn("metrics record not encoded", "err", err)
			continue
		}
		t.append(protocol.RecordMetrics, b)
	}
}

// window accumulates one bundle's requests over a metrics interval.
type window struct {
	model                       string
	provider                    string
	requests, errors, clientErr uint64
	raw                         uint64
	latencies, infer            []float64 // ms, a uniform sample
	maxMs                       float64
	seen                        uint64 // latencies offered to the sample
}

func (w *window) add(p api.Prediction) {
	w.provider = p.Provider
	w.requests++
	if p.Raw {
		w.raw++
	}
	if p.Err != nil {
		w.errors++
		if p.Code >= 400 && p.Code < 500 {
			w.clientErr++
		}
	}
	ms := float64(p.Latency) / float64(time.Millisecond)
	w.maxMs = max(w.maxMs, ms)
	w.seen++
	im := float64(p.InferLatency) / float64(time.Millisecond)
	if len(w.latencies) < maxLatencySamples {
		w.latencies = append(w.latencies, ms)
		w.infer = append(w.infer, im)
	} else if j := rand.Uint64N(w.seen); j < maxLatencySamples {
		w.latencies[j], w.infer[j] = ms, im
	}
}

// record is the window's metrics record; the caller sets the buffer and
// sampling fields.
func (w *window) record(start, end time.Time) protocol.MetricsRecord {
	r := protocol.MetricsRecord{
		Window: end.Sub(start).Round(time.Millisecond).String(), Start: start.UTC(), End: end.UTC(),
		Model: w.model, Provider: w.provider,
		Requests: w.requests, Errors: w.errors, ClientErrors: w.clientErr, Raw: w.raw,
		MaxMs: round3(w.maxMs),
	}
	r.P50Ms, r.P95Ms = quantiles(w.latencies)
	r.InferP50Ms, r.InferP95Ms = quantiles(w.infer)
	return r
}

// quantiles returns the median and the 95th percentile (nearest rank).
func quantiles(v []float64) (p50, p95 float64) {
	if len(v) == 0 {
		return 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return round3(s[max(i, 0)])
	}
	return rank(0.50), rank(0.95)
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// predictionRecord is the prediction record of p, answered by bundle id.
func predictionRecord(p api.Prediction, id string) protocol.PredictionRecord {
	r := protocol.PredictionRecord{
		Time: p.Time.UTC(), Model: id, Provider: p.Provider, RequestID: p.RequestID, Raw: p.Raw, Code: p.Code,
		LatencyMs: round3(float64(p.Latency) / float64(time.Millisecond)),
		InferMs:   round3(float64(p.InferLatency) / float64(time.Millisecond)),
	}
	if p.Err != nil {
		r.Error = protocol.Truncate(p.Err.Error(), 512)
	}
	if p.Output != nil {
		r.Outputs = summarize(p.Output.Tensors)
		r.Features = summarize(p.Output.Features)
	}
	return r
}

// summarize maps each tensor to its values (flat, up to maxInline finite
// elements) or a summary.
func summarize(ts []tensor.Tensor) map[string]protocol.TensorSample {
	if len(ts) == 0 {
		return nil
	}
	out := make(map[string]protocol.TensorSample, len(ts))
	for _, t := range ts {
		vals, err := t.Float64s()
		if err != nil {
			out[t.Name] = protocol.TensorSample{Summary: &protocol.TensorSummary{Datatype: t.Datatype, Shape: t.Shape, N: t.Len()}}
			continue
		}
		s := protocol.TensorSummary{Datatype: t.Datatype, Shape: t.Shape, N: len(vals), Min: math.Inf(1), Max: math.Inf(-1)}
		sum, finite := 0.0, 0
		for _, v := range vals {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				s.NonFinite++
				continue
			}
			finite++
			sum += v
			s.Min, s.Max = min(s.Min, v), max(s.Max, v)
		}
		if s.NonFinite == 0 && len(vals) <= maxInline {
			f, fp32 := t.Data.([]float32)
			if fp32 && f == nil {
				vals = nil // as the float32 slice, null in JSON
			}
			out[t.Name] = protocol.TensorSample{Values: vals, Float32: fp32} // float32 precision in JSON
			continue
		}
		if finite == 0 {
			s.Min, s.Max = 0, 0
		} else {
			s.Mean = sum / float64(finite)
		}
		out[t.Name] = protocol.TensorSample{Summary: &s}
	}
	return out
}
