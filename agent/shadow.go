package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/agent/slot"
	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Shadow mode: a desired state may name a candidate bundle to run in
// shadow (protocol.DesiredState.Shadow). The agent fetches and verifies it
// like an install (slot.Store.Unpack: signature, digests, limits) into
// DATA/shadow/, loads it and runs its smoke test, and from then on runs a
// sample of the active model's successful requests through it as well, on
// the same inputs. The candidate never answers a client: the request path
// only decides whether to keep a request's input (api.Options.KeepInput)
// and hands it to a bounded queue; one goroutine runs the candidate and
// compares. Every shadow window, a "shadow" record per candidate goes to
// the outbox (shadowRecord), which fleetd's rollout engine reads for the
// shadowAgreement gate. The candidate is persisted (DATA/shadow/state.json)
// and restored at start; it is stopped when a desired state no longer
// names it (a rollback, or the waves installing it as active).

// ShadowDir holds the shadow candidate under the data directory: its
// state file and its unpacked bundle directory.
const ShadowDir = "shadow"

// Defaults of the shadow options.
const (
	// DefaultShadowRate is the share of the active model's successful
	// requests also run on the shadow candidate.
	DefaultShadowRate = 0.1
	// DefaultShadowWindow is how often a shadow record is appended.
	DefaultShadowWindow = time.Minute
	// DefaultShadowQueue bounds the inputs waiting for the candidate;
	// samples that find it full are dropped and counted.
	DefaultShadowQueue = 64
)

// The comparison's tolerance when the candidate's smoke vectors give
// none: |candidate - active| <= abs + rel·|active|.
const (
	defaultShadowAbs = 1e-4
	defaultShadowRel = 1e-3
)

const (
	shadowStateName   = "state.json"
	shadowStateSchema = 1
	// maxShadowLatencies bounds the latencies kept per shadow window
	// (reservoir sampling beyond it).
	maxShadowLatencies = 1024
)

type shadowOptions struct {
	rate      float64
	window    time.Duration
	queue     int
	rateSet   bool
	windowSet bool
	queueSet  bool
}

// WithShadowRate sets the share, in [0, 1], of the active model's
// successful requests that a shadow candidate also runs
// (DefaultShadowRate); 0 loads a candidate but compares nothing.
func WithShadowRate(r float64) Option {
	return func(o *options) { o.shadow.rate, o.shadow.rateSet = r, true }
}

// WithShadowWindow sets how often the shadow comparison is appended to
// the outbox as a "shadow" record (DefaultShadowWindow).
func WithShadowWindow(d time.Duration) Option {
	return func(o *options) { o.shadow.window, o.shadow.windowSet = d, true }
}

// WithShadowQueue sets how many sampled inputs may wait for the shadow
// candidate (DefaultShadowQueue).
func WithShadowQueue(n int) Option {
	return func(o *options) { o.shadow.queue, o.shadow.queueSet = n, true }
}

// resolve fills in the defaults and checks the values.
func (o *shadowOptions) resolve() error {
	if !o.rateSet {
		o.rate = DefaultShadowRate
	}
	if !o.windowSet {
		o.window = DefaultShadowWindow
	}
	if !o.queueSet {
		o.queue = DefaultShadowQueue
	}
	switch {
	case !(o.rate >= 0 && o.rate <= 1):
		return fmt.Errorf("agent: the shadow sample rate must be in [0, 1], got %v", o.rate)
	case o.window <= 0:
		return fmt.Errorf("agent: the shadow window must be > 0, got %v", o.window)
	case o.queue <= 0:
		return fmt.Errorf("agent: the shadow queue must be > 0, got %d", o.queue)
	}
	return nil
}

// shadowRecord is the payload of a "shadow" record: one candidate's
// comparison with the active model over one window. fleetd's
// rollout.RecordObserver reads candidate, samples and agreed.
type shadowRecord struct {
	// Candidate is the shadow bundle, Active the bundle that answered
	// the requests compared (name@version).
	Candidate string    `json:"candidate"`
	Active    string    `json:"active"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	// Samples counts the requests run on both; Agreed those on which the
	// candidate's outputs agreed with the active model's (see agree);
	// Errors those the candidate failed (counted in Samples, not in
	// Agreed).
	Samples uint64 `json:"samples"`
	Agreed  uint64 `json:"agreed"`
	Errors  uint64 `json:"errors"`
	// Dropped counts sampled requests not compared because the queue was
	// full.
	Dropped uint64 `json:"dropped"`
	// Agreement is Agreed/Samples (absent without samples).
	Agreement *float64 `json:"agreement,omitempty"`
	// LatencyP50Ms and LatencyP95Ms are the candidate's inference time
	// (pre-processor, model, post-processor); ActiveP95Ms the active
	// model's on the same requests.
	LatencyP50Ms float64 `json:"latencyP50Ms"`
	LatencyP95Ms float64 `json:"latencyP95Ms"`
	ActiveP95Ms  float64 `json:"activeP95Ms"`
	// MaxAbsDiff is the largest difference between two numeric output
	// elements compared one by one.
	MaxAbsDiff float64 `json:"maxAbsDiff"`
}

// ShadowStatus describes the shadow candidate in Status.
type ShadowStatus struct {
	// Candidate is "name@version"; Since when it started.
	Candidate string    `json:"candidate"`
	Since     time.Time `json:"since"`
	// Rate is the sampled share of requests.
	Rate float64 `json:"rate"`
	// Samples, Agreed, Errors and Dropped count since Since (see
	// shadowRecord).
	Samples uint64 `json:"samples"`
	Agreed  uint64 `json:"agreed"`
	Errors  uint64 `json:"errors"`
	Dropped uint64 `json:"dropped"`
	// Records counts the shadow records appended since Since.
	Records uint64 `json:"records"`
}

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

func (w *shadowWindow) record(end time.Time) shadowRecord {
	r := shadowRecord{
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
		tick := time.NewTicker(r.opts.window)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				r.rotate()
			case <-r.quit:
				return
			}
		}
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

// agree compares the candidate's outputs with the active model's. Every
// output of the active model must come from the candidate too, with the
// same datatype and shape, and:
//
//   - a classifier's scores (a float [N, C] output, C ≥ 2, whose rows are
//     probability distributions: values in [0, 1] summing to 1) agree
//     when every row has the same top class;
//   - other numeric outputs agree when every element is within tol of the
//     active one (|c - a| <= abs + rel·|a|; NaN only matches NaN);
//   - outputs that do not read as numbers must be deeply equal.
//
// It also returns the largest element difference seen.
func agree(active, cand []tensor.Tensor, tol bundle.Tolerance) (bool, float64) {
	ok, worst := true, 0.0
	for _, a := range active {
		var c *tensor.Tensor
		for i := range cand {
			if cand[i].Name == a.Name {
				c = &cand[i]
				break
			}
		}
		if c == nil || c.Datatype != a.Datatype || !reflect.DeepEqual(c.Shape, a.Shape) {
			ok = false
			continue
		}
		av, aerr := a.Float64s()
		cv, cerr := c.Float64s()
		if aerr != nil || cerr != nil || len(av) != len(cv) {
			if !reflect.DeepEqual(a.Data, c.Data) {
				ok = false
			}
			continue
		}
		if rows, cols, isClassifier := classifier(a, av); isClassifier {
			for r := range rows {
				if argmax(av[r*cols:(r+1)*cols]) != argmax(cv[r*cols:(r+1)*cols]) {
					ok = false
				}
			}
			for i := range av {
				worst = max(worst, math.Abs(av[i]-cv[i]))
			}
			continue
		}
		for i := range av {
			x, y := av[i], cv[i]
			switch {
			case math.IsNaN(x) || math.IsNaN(y):
				if math.IsNaN(x) != math.IsNaN(y) {
					ok = false
				}
			case x == y: // infinities included
			default:
				d := math.Abs(x - y)
				if !math.IsInf(d, 0) {
					worst = max(worst, d)
				}
				if !(d <= tol.Abs+tol.Rel*math.Abs(x)) {
					ok = false
				}
			}
		}
	}
	return ok, worst
}

// classifier reports whether t (with values v) is a batch of class
// probabilities: float, [N, C] with C ≥ 2, each row in [0, 1] summing to 1.
func classifier(t tensor.Tensor, v []float64) (rows, cols int, ok bool) {
	if (t.Datatype != tensor.FP32 && t.Datatype != tensor.FP64) || len(t.Shape) != 2 || t.Shape[1] < 2 || t.Shape[0] < 1 {
		return 0, 0, false
	}
	rows, cols = int(t.Shape[0]), int(t.Shape[1])
	if rows*cols != len(v) {
		return 0, 0, false
	}
	for r := range rows {
		sum := 0.0
		for _, x := range v[r*cols : (r+1)*cols] {
			if !(x >= 0 && x <= 1) {
				return 0, 0, false
			}
			sum += x
		}
		if math.Abs(sum-1) > 1e-3 {
			return 0, 0, false
		}
	}
	return rows, cols, true
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// shadowTolerance is the widest tolerance of m's smoke vectors, or the
// default when they give none.
func shadowTolerance(m *bundle.Manifest) bundle.Tolerance {
	var t bundle.Tolerance
	for _, v := range m.Smoke {
		t.Abs, t.Rel = max(t.Abs, v.Tolerance.Abs), max(t.Rel, v.Tolerance.Rel)
	}
	if t.Abs == 0 && t.Rel == 0 {
		t = bundle.Tolerance{Abs: defaultShadowAbs, Rel: defaultShadowRel}
	}
	return t
}

// shadowState is DATA/shadow/state.json: the candidate to restore at
// start.
type shadowState struct {
	SchemaVersion int    `json:"schemaVersion"`
	Candidate     string `json:"candidate"`
	// Dir is the candidate's directory, relative to DATA/shadow.
	Dir    string             `json:"dir"`
	Bundle protocol.BundleRef `json:"bundle"`
	Since  time.Time          `json:"since"`
}

func (a *Agent) shadowRoot() string { return filepath.Join(a.cfg.DataDir, ShadowDir) }

// startShadowRunner is start's hook: sh serves the API's KeepInput and
// OnPrediction from now on.
func (a *Agent) startShadowRunner(sh *shadowRunner) {
	a.mu.Lock()
	a.shadow = sh
	a.mu.Unlock()
	sh.start()
}

// stopShadowRunner is shutdown's hook, after the API server stopped: the
// partial window is appended and the candidate closed; its files stay for
// the next start.
func (a *Agent) stopShadowRunner() {
	if a.shadow == nil {
		return
	}
	if c := a.shadow.stop(); c != nil {
		if err := a.closeModel(c.model); err != nil {
			a.log.Warn("closing the shadow candidate", "candidate", c.id, "err", err)
		}
	}
}

// keepShadowOnly is Apply's first step: it stops the running candidate
// unless want names it (a rollback, or a desired state without a shadow,
// clears it), before anything is installed.
func (a *Agent) keepShadowOnly(want *protocol.Shadow) {
	if a.shadow == nil {
		return
	}
	c := a.shadow.current()
	if c == nil || (want != nil && sameRef(c.ref, want.Bundle)) {
		return
	}
	a.stopShadow("the desired state no longer names it")
}

// applyShadow is Apply's last step, once d.Bundle is active: it starts
// d.Shadow's candidate if it is not running (or stops the shadow if d has
// none). Errors carry a reason "shadow-" + the install reason.
func (a *Agent) applyShadow(ctx context.Context, d *protocol.DesiredState, progress uplink.ProgressFunc) error {
	if d.Shadow == nil {
		a.stopShadow("the desired state names none")
		return nil
	}
	ref := d.Shadow.Bundle
	if a.shadow == nil {
		err := errors.New("shadow candidates run only while the agent serves (Run)")
		return applyError("shadow-"+ReasonClosed, err)
	}
	if c := a.shadow.current(); c != nil && sameRef(c.ref, ref) {
		return nil
	}
	if act, ok := a.store.Active(); ok && act.ID == ref.ID() {
		a.stopShadow("the candidate is the active version")
		a.log.Info("shadow candidate is the active version: nothing to compare", "candidate", ref.ID())
		return nil
	}
	a.progress = progress
	defer func() { a.progress = nil }()
	c, err := a.prepareShadow(ctx, ref)
	if err != nil {
		a.log.Warn("shadow candidate refused", "candidate", ref.ID(), "reason", ReasonOf(err), "err", err)
		return applyError("shadow-"+ReasonOf(err), fmt.Errorf("shadow candidate %s: %w", ref.ID(), err))
	}
	a.phase(protocol.PhaseActivating)
	if err := a.setShadow(c); err != nil {
		return applyError("shadow-"+ReasonInternal, fmt.Errorf("shadow candidate %s: %w", ref.ID(), err))
	}
	a.log.Info("shadow candidate running", "candidate", c.id, "rate", a.opts.shadow.rate)
	return nil
}

func sameRef(a, b protocol.BundleRef) bool {
	return a.Name == b.Name && a.Version == b.Version && a.SHA256 == b.SHA256
}

// prepareShadow fetches, verifies and unpacks ref into a new directory
// under DATA/shadow, then loads and smoke-tests it. The install lock is
// held.
func (a *Agent) prepareShadow(ctx context.Context, ref protocol.BundleRef) (*shadowCandidate, error) {
	if a.trust == nil {
		if a.trustErr != nil {
			return nil, a.trustErr
		}
		return nil, ErrNoTrust
	}
	suffix := make([]byte, 6)
	rand.Read(suffix)
	dir := filepath.Join(a.shadowRoot(), ref.ID()+"-"+hex.EncodeToString(suffix))
	a.phase(protocol.PhaseDownloading)
	m, err := a.store.Unpack(ctx, slot.Request{Bundle: ref.URL, Sig: ref.SigURL, ID: ref.ID(), Size: ref.Size, SHA256: ref.SHA256}, dir)
	if err != nil {
		return nil, err
	}
	a.phase(protocol.PhaseSmokeTest)
	mdl, err := a.load(ctx, dir, m)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &shadowCandidate{id: m.ID(), name: m.Name, version: m.Version, ref: ref, dir: dir,
		model: mdl, tol: shadowTolerance(m), since: time.Now()}, nil
}

// setShadow records c as the candidate (state.json first, so that a crash
// leaves either the old or the new one to restore), puts it into the
// runner and closes and removes the one it replaces.
func (a *Agent) setShadow(c *shadowCandidate) error {
	rel, err := filepath.Rel(a.shadowRoot(), c.dir)
	if err != nil {
		a.closeModel(c.model)
		os.RemoveAll(c.dir)
		return err
	}
	st := shadowState{SchemaVersion: shadowStateSchema, Candidate: c.id, Dir: filepath.ToSlash(rel), Bundle: c.ref, Since: c.since.UTC()}
	b, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		err = shadowWriteFile(filepath.Join(a.shadowRoot(), shadowStateName), b)
	}
	if err != nil {
		a.closeModel(c.model)
		os.RemoveAll(c.dir)
		return fmt.Errorf("recording the shadow candidate: %w", err)
	}
	old := a.shadow.set(c)
	if old == c { // stopped meanwhile (shutdown): restored at the next start
		a.closeModel(c.model)
		return nil
	}
	a.retireShadow(old)
	a.changed()
	return nil
}

// stopShadow stops the running candidate, if any, and forgets it (its
// state and files).
func (a *Agent) stopShadow(why string) {
	var old *shadowCandidate
	if a.shadow != nil {
		old = a.shadow.set(nil)
	}
	if old != nil {
		a.log.Info("shadow candidate stopped", "candidate", old.id, "why", why)
	}
	if err := os.Remove(filepath.Join(a.shadowRoot(), shadowStateName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("removing the shadow state", "err", err)
	}
	a.retireShadow(old)
	a.cleanShadowDir("")
	if old != nil {
		a.changed()
	}
}

// retireShadow closes a replaced candidate and removes its directory.
func (a *Agent) retireShadow(c *shadowCandidate) {
	if c == nil {
		return
	}
	if err := a.closeModel(c.model); err != nil {
		a.log.Warn("closing the shadow candidate", "candidate", c.id, "err", err)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		a.log.Warn("removing the shadow candidate", "dir", c.dir, "err", err)
	}
}

// cleanShadowDir removes everything under DATA/shadow but the state file
// and keep (a directory name).
func (a *Agent) cleanShadowDir(keep string) {
	ents, err := os.ReadDir(a.shadowRoot())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("listing the shadow directory", "err", err)
		}
		return
	}
	for _, e := range ents {
		if e.Name() == shadowStateName || (keep != "" && e.Name() == keep) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(a.shadowRoot(), e.Name())); err != nil {
			a.log.Warn("removing a leftover shadow directory", "name", e.Name(), "err", err)
		}
	}
}

// restoreShadow is start's hook, after the active bundle is loaded: it
// brings back the candidate of DATA/shadow/state.json, re-hashing its
// files first. A candidate that cannot be restored is forgotten (the
// device then reports no shadow, which fleetd sees).
func (a *Agent) restoreShadow(ctx context.Context) {
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
	b, err := os.ReadFile(filepath.Join(a.shadowRoot(), shadowStateName))
	if errors.Is(err, os.ErrNotExist) {
		a.cleanShadowDir("")
		return
	}
	var st shadowState
	if err == nil {
		st, err = parseShadowState(b)
	}
	var c *shadowCandidate
	if err == nil {
		c, err = a.loadShadow(ctx, st)
	}
	if err != nil {
		a.log.Warn("the shadow candidate cannot be restored; forgetting it", "candidate", st.Candidate, "err", err)
		a.stopShadow("not restorable")
		return
	}
	a.cleanShadowDir(filepath.Base(c.dir))
	if old := a.shadow.set(c); old != nil {
		a.retireShadow(old) // none expected at start
	}
	a.log.Info("shadow candidate restored", "candidate", c.id)
	releaseMemory()
}

// parseShadowState decodes and checks DATA/shadow/state.json.
func parseShadowState(b []byte) (shadowState, error) {
	var st shadowState
	if err := json.Unmarshal(b, &st); err != nil {
		return shadowState{}, fmt.Errorf("%s: %w", shadowStateName, err)
	}
	switch {
	case st.SchemaVersion != shadowStateSchema:
		return shadowState{}, fmt.Errorf("%s: schema version %d, want %d", shadowStateName, st.SchemaVersion, shadowStateSchema)
	case !filepath.IsLocal(st.Dir) || strings.ContainsAny(st.Dir, `/\`):
		return shadowState{}, fmt.Errorf("%s: dir %q is not a directory under %s", shadowStateName, st.Dir, ShadowDir)
	case st.Candidate == "" || st.Candidate != st.Bundle.ID():
		return shadowState{}, fmt.Errorf("%s: candidate %q is not its bundle's %q", shadowStateName, st.Candidate, st.Bundle.ID())
	}
	return st, nil
}

func (a *Agent) loadShadow(ctx context.Context, st shadowState) (*shadowCandidate, error) {
	dir := filepath.Join(a.shadowRoot(), filepath.FromSlash(st.Dir))
	m, err := slot.Verify(ctx, dir)
	if err != nil {
		return nil, err
	}
	if m.ID() != st.Candidate {
		return nil, fmt.Errorf("%w: %s holds %s, state says %s", slot.ErrMismatch, dir, m.ID(), st.Candidate)
	}
	mdl, err := a.load(ctx, dir, m)
	if err != nil {
		return nil, err
	}
	return &shadowCandidate{id: m.ID(), name: m.Name, version: m.Version, ref: st.Bundle, dir: dir,
		model: mdl, tol: shadowTolerance(m), since: st.Since}, nil
}

// shadowID is the running candidate, for the reported state.
func (a *Agent) shadowID() *protocol.BundleID {
	if a.shadow == nil {
		return nil
	}
	if c := a.shadow.current(); c != nil {
		return &protocol.BundleID{Name: c.name, Version: c.version}
	}
	return nil
}

// shadowStatus is the running candidate's counters, for Status.
func (a *Agent) shadowStatus() *ShadowStatus {
	if a.shadow == nil {
		return nil
	}
	return a.shadow.status()
}

// shadowWriteFile writes b to path through a temporary file, fsynced and
// renamed, then fsyncs the directory.
func shadowWriteFile(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
