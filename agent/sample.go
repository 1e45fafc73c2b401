package agent

// Data sampling for the feature store: the served bundle's sampling policy
// (bundle.Sampling, in its signed manifest) picks requests whose model
// inputs (as fed to the model, after the pre-processor) and outputs the
// agent appends to the outbox as "sample" records (protocol.SampleRecord).
// See docs/integrations.md.

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// dataSampleQueue is the length of the queue between the observer, which
// picks samples, and the goroutine that encodes and appends them.
const dataSampleQueue = 256

// Reasons a picked sample is not appended (SampleStats and the
// edge_agent_data_samples_dropped_total metric's reason label).
const (
	sampleDropBudget   = "budget"    // the day's maxBytesPerDay is spent
	sampleDropTooLarge = "too_large" // over protocol.MaxSampleRecordBytes or the outbox's record limit
	sampleDropQueue    = "queue"     // the encode queue was full
	sampleDropFailed   = "failed"    // not encoded, or the outbox refused it
)

// SampleStats are the served bundle's data sampling since the agent
// started (status's "samples"; absent when the bundle has no policy and
// nothing was sampled).
type SampleStats struct {
	// Bundle is the served bundle whose policy applies ("" if none);
	// Rate and MaxBytesPerDay are its policy.
	Bundle         string  `json:"bundle,omitempty"`
	Rate           float64 `json:"rate,omitempty"`
	MaxBytesPerDay int64   `json:"maxBytesPerDay,omitempty"`
	// Day is the latest UTC day the budget counted (YYYY-MM-DD),
	// BytesToday the encoded bytes appended for the bundle on it, before
	// a restart too (after a crash: what DATA/sample-budget.json had
	// reserved, up to a 16th of the budget more).
	Day        string `json:"day,omitempty"`
	BytesToday int64  `json:"bytesToday"`
	// Picked counts the requests the rate picked; Appended those
	// appended to the outbox; the Dropped fields the others, by reason.
	Picked          uint64 `json:"picked"`
	Appended        uint64 `json:"appended"`
	DroppedBudget   uint64 `json:"droppedBudget"`
	DroppedTooLarge uint64 `json:"droppedTooLarge"`
	DroppedQueue    uint64 `json:"droppedQueue"`
	Failed          uint64 `json:"failed"`
}

// samplePolicy is the served bundle version's policy.
type samplePolicy struct {
	model, version, id string
	rate               float64
	maxBytes           int64
}

// sampleJob is a picked request, encoded off the observer goroutine.
type sampleJob struct {
	pol *samplePolicy
	at  time.Time
	req string
	raw bool
	out *model.Output
}

// sampler picks and appends data samples. observe runs on the API
// server's observer goroutine; the encoding and the outbox append run on
// a goroutine of their own.
type sampler struct {
	ob        *outbox.Outbox
	log       *slog.Logger
	labels    map[string]string
	maxRecord int
	draw      func() float64 // uniform in [0, 1)

	pol atomic.Pointer[samplePolicy] // nil: the served bundle samples nothing

	closeMu sync.RWMutex // keeps observe from sending once stop closed jobs
	closed  bool
	jobs    chan sampleJob
	done    chan struct{}
	started bool

	mu  sync.Mutex // guards bud
	bud sampleBudget

	picked, appended, budget, tooLarge, queue, failed atomic.Uint64
}

// newSampler appends samples to ob with the device's labels; maxRecord is
// the outbox's record limit (0: outbox.DefaultMaxRecordBytes).
func newSampler(ob *outbox.Outbox, log *slog.Logger, labels map[string]string, maxRecord int) *sampler {
	if maxRecord <= 0 {
		maxRecord = outbox.DefaultMaxRecordBytes
	}
	return &sampler{
		ob: ob, log: log, labels: maps.Clone(labels), maxRecord: min(maxRecord, protocol.MaxSampleRecordBytes),
		draw: rand.Float64, jobs: make(chan sampleJob, dataSampleQueue), done: make(chan struct{}),
		bud: sampleBudget{log: log},
	}
}

// persist keeps the budget's spend in the file path (SampleBudgetFile
// under the data directory), starting from what it says; the first call
// counts, and it must come before the first swap to a policy (so before
// any sample is appended) for the spend saved before to count.
func (s *sampler) persist(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bud.attach(path)
}

// register adds the sampling counters to the API's metrics registry.
func (s *sampler) register(reg *prometheus.Registry) error {
	dropped := prometheus.NewDesc("edge_agent_data_samples_dropped_total",
		"Data samples (bundle sampling policy) picked but not appended, by reason: budget (maxBytesPerDay spent), too_large, queue (full), failed.",
		[]string{"reason"}, nil)
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edge_agent_data_samples_total",
			Help: "Data samples (model inputs and outputs, by the bundle's sampling policy) appended to the outbox.",
		}, func() float64 { return float64(s.appended.Load()) }),
		collectorFunc{desc: dropped, collect: func(ch chan<- prometheus.Metric) {
			for _, r := range []struct {
				reason string
				n      *atomic.Uint64
			}{{sampleDropBudget, &s.budget}, {sampleDropTooLarge, &s.tooLarge}, {sampleDropQueue, &s.queue}, {sampleDropFailed, &s.failed}} {
				ch <- prometheus.MustNewConstMetric(dropped, prometheus.CounterValue, float64(r.n.Load()), r.reason)
			}
		}},
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// collectorFunc is a prometheus.Collector of one description.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// swap applies the policy of the newly served bundle (none: nil).
func (s *sampler) swap(m *bundle.Manifest) {
	if m == nil || m.Sampling == nil {
		s.pol.Store(nil)
		return
	}
	s.pol.Store(&samplePolicy{model: m.Name, version: m.Version, id: m.ID(), rate: m.Sampling.Rate, maxBytes: m.Sampling.MaxBytesPerDay})
}

// observe is the API's OnPrediction hook. A request not picked costs an
// atomic load and, under a policy, one random draw.
func (s *sampler) observe(p api.Prediction) {
	pol := s.pol.Load()
	if pol == nil || p.Err != nil || p.Output == nil || len(p.Output.Inputs) == 0 ||
		p.Model != pol.model || p.Version != pol.version {
		return
	}
	if pol.rate < 1 && s.draw() >= pol.rate {
		return
	}
	s.picked.Add(1)
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		s.queue.Add(1)
		return
	}
	select {
	case s.jobs <- sampleJob{pol: pol, at: p.Time, req: p.RequestID, raw: p.Raw, out: p.Output}:
	default:
		s.queue.Add(1)
	}
}

func (s *sampler) start() {
	s.started = true
	go func() {
		defer close(s.done)
		for j := range s.jobs {
			s.append(j)
		}
	}()
}

// stop appends what is queued and saves the budget's exact spend. The
// API server must have stopped calling observe.
func (s *sampler) stop() {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return
	}
	s.closed = true
	close(s.jobs)
	s.closeMu.Unlock()
	if s.started {
		<-s.done
	}
	s.mu.Lock()
	s.bud.flush()
	s.mu.Unlock()
}

// record is j's sample record.
func (s *sampler) record(j sampleJob) protocol.SampleRecord {
	conv := func(ts []tensor.Tensor) []protocol.SampleTensor {
		if len(ts) == 0 {
			return nil
		}
		out := make([]protocol.SampleTensor, len(ts))
		for i, t := range ts {
			out[i] = protocol.NewSampleTensor(t)
		}
		return out
	}
	return protocol.SampleRecord{
		Time: j.at.UTC(), Model: j.pol.id, RequestID: j.req, Raw: j.raw, Labels: s.labels,
		Inputs: conv(j.out.Inputs), Outputs: conv(j.out.Tensors), Features: conv(j.out.Features),
	}
}

// append encodes j and appends it within the size limits and the day's
// budget of its bundle version (saving the spend ahead of it: see
// sample_budget.go).
func (s *sampler) append(j sampleJob) {
	b, err := json.Marshal(s.record(j))
	if err != nil {
		s.failed.Add(1)
		s.log.Warn("data sample not encoded", "bundle", j.pol.id, "err", err)
		return
	}
	if len(b) > s.maxRecord {
		s.tooLarge.Add(1)
		return
	}
	n := int64(len(b))
	s.mu.Lock()
	ok := s.bud.take(j.pol.id, j.at, n, j.pol.maxBytes)
	s.mu.Unlock()
	if !ok {
		s.budget.Add(1)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if _, err := s.ob.Append(ctx, protocol.RecordSample, b); err != nil {
		s.mu.Lock()
		s.bud.refund(j.pol.id, j.at.UTC().Format(time.DateOnly), n)
		s.mu.Unlock()
		s.failed.Add(1)
		s.log.Warn("telemetry record not appended", "kind", protocol.RecordSample, "err", err)
		return
	}
	s.appended.Add(1)
}

// stats are the sampling counters; nil when no policy applies and none
// was ever picked.
func (s *sampler) stats() *SampleStats {
	pol := s.pol.Load()
	st := &SampleStats{
		Picked: s.picked.Load(), Appended: s.appended.Load(), DroppedBudget: s.budget.Load(),
		DroppedTooLarge: s.tooLarge.Load(), DroppedQueue: s.queue.Load(), Failed: s.failed.Load(),
	}
	if pol == nil && st.Picked == 0 {
		return nil
	}
	if pol != nil {
		st.Bundle, st.Rate, st.MaxBytesPerDay = pol.id, pol.rate, pol.maxBytes
	}
	s.mu.Lock()
	st.Day, st.BytesToday = s.bud.today(st.Bundle)
	s.mu.Unlock()
	return st
}

// sampleSwap is putInService's hook: the sampling policy follows the
// served model. The first swap (before any sample is picked) attaches
// the budget's state file.
func (a *Agent) sampleSwap(m *model.Model) {
	if a.samples != nil {
		a.samples.persist(filepath.Join(a.cfg.DataDir, SampleBudgetFile))
		a.samples.swap(m.Manifest())
	}
}
