package agent

// The shadow runner: the loaded candidate, the bounded queue of sampled
// requests fed from the request path (keep) and the API's observer
// (observe), and the goroutines that run each sample on the candidate and
// close a window every interval.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// shadowCandidate is a loaded shadow bundle.
type shadowCandidate struct {
	id, name, version string
	ref               protocol.BundleRef
	dir               string // absolute
	model             *model.Model
	tol               bundle.Tolerance
	since             time.Time
}

// shadowSample is one request to run on the candidate.
type shadowSample struct {
	cand        *shadowCandidate
	active      string
	in          *model.Input
	out         *model.Output
	activeInfer time.Duration
}

// shadowRunner runs the sampled requests on the candidate and appends the
// windows. keep runs on the request path, observe on the API's observer
// goroutine; neither waits.
type shadowRunner struct {
	ob   *outbox.Outbox
	log  *slog.Logger
	opts shadowOptions

	queue  chan shadowSample
	ctx    context.Context // cancelled by stop: a comparison in flight ends
	cancel context.CancelFunc
	quit   chan struct{}
	done   sync.WaitGroup

	cur atomic.Pointer[shadowCandidate]

	mu      sync.Mutex // guards the fields below
	started bool
	stopped bool
	win     *shadowWindow // of cur, nil when none
	total   ShadowStatus  // of cur
}

func newShadowRunner(ob *outbox.Outbox, log *slog.Logger, o shadowOptions) *shadowRunner {
	ctx, cancel := context.WithCancel(context.Background())
	return &shadowRunner{ob: ob, log: log, opts: o, queue: make(chan shadowSample, o.queue),
		ctx: ctx, cancel: cancel, quit: make(chan struct{})}
}

// start runs the comparisons and closes a window every interval, until
// stop.
func (r *shadowRunner) start() {
	r.mu.Lock()
	r.started = true
	r.mu.Unlock()
	r.done.Add(2)
	go func() {
		defer r.done.Done()
		for {
			select {
			case s := <-r.queue:
				r.compare(s)
			case <-r.quit:
				return
			}
		}
	}()
	go func() {
		defer r.done.Done()
		every(r.opts.window, r.quit, r.rotate)
	}()
}

// stop stops the comparisons, appends the partial window and returns the
// candidate, which the caller closes (its files stay for the next start).
// Samples still queued are dropped.
func (r *shadowRunner) stop() *shadowCandidate {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	started := r.started
	r.mu.Unlock()
	r.cancel()
	if started {
		close(r.quit)
		r.done.Wait()
	}
	r.mu.Lock()
	c := r.cur.Swap(nil)
	w := r.win
	r.win = nil
	r.mu.Unlock()
	r.flush(w, time.Now())
	return c
}

// current is the running candidate, nil if none.
func (r *shadowRunner) current() *shadowCandidate { return r.cur.Load() }

// set makes c the candidate (nil: none) and returns the one it replaces,
// whose window it appends; the caller closes that one. If the runner is
// stopped, c is returned for the caller to close.
func (r *shadowRunner) set(c *shadowCandidate) (old *shadowCandidate) {
	now := time.Now()
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return c
	}
	old = r.cur.Swap(c)
	w := r.win
	r.win, r.total = nil, ShadowStatus{}
	if c != nil {
		r.win = &shadowWindow{candidate: c.id, start: now}
		r.total = ShadowStatus{Candidate: c.id, Since: c.since.UTC(), Rate: r.opts.rate}
	}
	r.mu.Unlock()
	r.flush(w, now)
	return old
}

// keep is api.Options.KeepInput: whether to run this request on the
// candidate too. It is called on the request path: an atomic load, a
// random number and a channel length.
func (r *shadowRunner) keep(name, version string) bool {
	c := r.cur.Load()
	if c == nil || r.opts.rate <= 0 || (c.name == name && c.version == version) {
		return false
	}
	if r.opts.rate < 1 && mrand.Float64() >= r.opts.rate {
		return false
	}
	if len(r.queue) >= cap(r.queue) {
		r.dropped(c)
		return false
	}
	return true
}

// observe is the API's OnPrediction hook: it queues the kept requests.
func (r *shadowRunner) observe(p api.Prediction) {
	if p.Input == nil || p.Err != nil || p.Output == nil {
		return
	}
	c := r.cur.Load()
	if c == nil {
		return
	}
	select {
	case r.queue <- shadowSample{cand: c, active: p.Model + "@" + p.Version, in: p.Input, out: p.Output, activeInfer: p.InferLatency}:
	default:
		r.dropped(c)
	}
}

func (r *shadowRunner) dropped(c *shadowCandidate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur.Load() == c && r.win != nil {
		r.win.dropped++
		r.total.Dropped++
	}
}

// compare runs one sample on its candidate and adds the outcome to the
// window, unless the candidate changed meanwhile.
func (r *shadowRunner) compare(s shadowSample) {
	if r.cur.Load() != s.cand {
		return
	}
	t0 := time.Now()
	out, err := s.cand.model.Infer(r.ctx, *s.in)
	lat := time.Since(t0)
	agreed, diff := false, 0.0
	if err == nil {
		agreed, diff = agree(s.out.Tensors, out.Tensors, s.cand.tol)
	}
	now := time.Now()
	r.mu.Lock()
	if r.stopped || r.cur.Load() != s.cand || r.win == nil {
		r.mu.Unlock()
		return // replaced or stopped: an error here says nothing of the candidate
	}
	var full *shadowWindow
	if r.win.active != "" && r.win.active != s.active {
		// Another version answers now: a window compares one pair.
		full = r.win
		r.win = &shadowWindow{candidate: s.cand.id, start: now}
	}
	r.win.active = s.active
	r.win.add(agreed, err != nil, lat, s.activeInfer, diff)
	r.total.Samples++
	switch {
	case err != nil:
		r.total.Errors++
	case agreed:
		r.total.Agreed++
	}
	r.mu.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) {
		r.log.Debug("shadow candidate failed on a request the active model answered", "candidate", s.cand.id, "err", err)
	}
	r.flush(full, now)
}

// rotate closes the current window and starts the next.
func (r *shadowRunner) rotate() {
	now := time.Now()
	r.mu.Lock()
	w := r.win
	if w != nil {
		r.win = &shadowWindow{candidate: w.candidate, active: w.active, start: now}
	}
	r.mu.Unlock()
	r.flush(w, now)
}

// flush appends w as a "shadow" record, unless it holds nothing.
func (r *shadowRunner) flush(w *shadowWindow, end time.Time) {
	if w == nil || (w.samples == 0 && w.dropped == 0) {
		return
	}
	b, err := json.Marshal(w.record(end))
	if err != nil {
		r.log.Warn("shadow record not encoded", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if _, err := r.ob.Append(ctx, protocol.RecordShadow, b); err != nil {
		r.log.Warn("telemetry record not appended", "kind", protocol.RecordShadow, "err", err)
		return
	}
	r.mu.Lock()
	if c := r.cur.Load(); c != nil && c.id == w.candidate {
		r.total.Records++
	}
	r.mu.Unlock()
}

func (r *shadowRunner) status() *ShadowStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur.Load() == nil {
		return nil
	}
	st := r.total
	return &st
}
