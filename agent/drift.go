package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/config"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// DefaultDriftWindow is the length of a drift window (WithDriftWindow).
const DefaultDriftWindow = config.DefaultDriftWindow

// WithDriftWindow sets the length of the drift windows: every d, the
// summary of the predictions of the active bundle (when it ships a drift
// profile) is appended to the outbox as a "drift" record
// (default: the configuration's metrics.driftWindow).
func WithDriftWindow(d time.Duration) Option {
	return func(o *options) { o.driftWindow = d }
}

// driftWindows keeps the drift summary of the served bundle's current
// window. observe runs on the API server's observer goroutine, never in
// a request; the windows are closed and appended on a goroutine of their
// own, at every tick, at a model swap and at stop.
type driftWindows struct {
	ob       *outbox.Outbox
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	cur     *driftWindow // nil when the served bundle has no profile
	stopped bool
	warned  map[string]bool // bundles whose observation errors were logged

	quit    chan struct{}
	started bool
	done    sync.WaitGroup // the ticker and flushes of swapped windows

	windows, invalid, ignored atomic.Uint64
}

// driftWindow is one bundle version's summary being filled.
type driftWindow struct {
	model, version string
	profile        *drift.Profile
	sum            *drift.Summary
}

func newDriftWindows(ob *outbox.Outbox, log *slog.Logger, interval time.Duration) *driftWindows {
	return &driftWindows{ob: ob, log: log, interval: interval, now: time.Now,
		warned: map[string]bool{}, quit: make(chan struct{})}
}

// register adds the drift counters to the API's metrics registry.
func (d *driftWindows) register(reg *prometheus.Registry) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edge_agent_drift_windows_total",
			Help: "Drift windows appended to the outbox (predictions of a bundle with a drift profile, summarized).",
		}, func() float64 { return float64(d.windows.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edge_agent_drift_observations_invalid_total",
			Help: "Predictions whose tensors do not fit the bundle's drift profile (e.g. tensor requests that bypass the pre-processor): counted in the window's health, not in its features.",
		}, func() float64 { return float64(d.invalid.Load()) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// start closes a window every interval until stop.
func (d *driftWindows) start() {
	d.started = true
	d.done.Add(1)
	go func() {
		defer d.done.Done()
		every(d.interval, d.quit, d.rotate)
	}()
}

// stop appends the partial window and waits for the flushes in flight.
// The API server must have stopped calling observe.
func (d *driftWindows) stop() {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.stopped = true
	w := d.cur
	d.cur = nil
	d.mu.Unlock()
	if d.started {
		close(d.quit)
	}
	d.done.Wait()
	d.flush(w)
}

// observe is the API's OnPrediction hook: it adds p to the current window
// if p was answered by the bundle version the window is for.
func (d *driftWindows) observe(p api.Prediction) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.cur
	if w == nil || w.model != p.Model || w.version != p.Version {
		d.ignored.Add(1) // no profile, or a request of the replaced version
		return
	}
	w.sum.ObserveHealth(p.Latency, p.Err != nil)
	if p.Err != nil || p.Output == nil {
		return
	}
	if err := w.sum.ObserveTensors(p.Output.Features, p.Output.Tensors); err != nil {
		d.invalid.Add(1)
		if id := p.Model + "@" + p.Version; !d.warned[id] {
			d.warned[id] = true
			d.log.Warn("predictions do not fit the bundle's drift profile; they count in the drift window's health only (logged once per bundle)",
				"bundle", id, "err", err)
		}
	}
}

// swap starts the window of a newly served bundle version (none when p is
// nil: the bundle has no profile) and appends the window it replaces, in
// the background.
func (d *driftWindows) swap(name, version string, p *drift.Profile) {
	var next *driftWindow
	if p != nil {
		next = &driftWindow{model: name, version: version, profile: p, sum: drift.NewSummary(p)}
		next.sum.Start = d.now()
	}
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	prev := d.cur
	d.cur = next
	if prev != nil {
		d.done.Add(1)
	}
	d.mu.Unlock()
	if prev != nil {
		go func() {
			defer d.done.Done()
			d.flush(prev)
		}()
	}
}

// rotate closes the current window and starts the next one of the same
// bundle version.
func (d *driftWindows) rotate() {
	d.mu.Lock()
	w := d.cur
	if w == nil || d.stopped {
		d.mu.Unlock()
		return
	}
	next := *w
	next.sum = drift.NewSummary(w.profile)
	next.sum.Start = d.now()
	d.cur = &next
	d.mu.Unlock()
	d.flush(w)
}

// flush appends w as a "drift" record, unless it saw no prediction.
func (d *driftWindows) flush(w *driftWindow) {
	if w == nil || w.sum.Predictions() == 0 {
		return
	}
	b, err := w.record(d.now())
	if err != nil {
		d.log.Warn("drift window not encoded", "bundle", w.model+"@"+w.version, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if _, err := d.ob.Append(ctx, protocol.RecordDrift, b); err != nil {
		d.log.Warn("telemetry record not appended", "kind", protocol.RecordDrift, "err", err)
		return
	}
	d.windows.Add(1)
}

// record closes w at end and encodes its record, with this window's own
// verdict (drift.Compare against the profile: about a millisecond for
// Silero's seven features, once per window).
func (w *driftWindow) record(end time.Time) ([]byte, error) {
	w.sum.End = end
	enc, err := w.sum.MarshalBase64JSON()
	if err != nil {
		return nil, err
	}
	r := protocol.DriftRecord{
		Model: w.model + "@" + w.version, Profile: w.sum.Profile(),
		Start: w.sum.Start.UTC(), End: end.UTC(),
		Predictions: w.sum.Predictions(), Errors: w.sum.Errors(), Summary: enc,
	}
	rep, err := drift.Compare(w.profile, w.sum, drift.CompareOptions{})
	if err != nil {
		return nil, fmt.Errorf("comparing the window with its profile: %w", err)
	}
	if rep.Status == drift.StatusOK {
		r.Score = &rep.Share
	}
	r.Tested = rep.Tested
	for _, f := range rep.Features {
		if f.Drift {
			r.Drifted = append(r.Drifted, f.Name)
		}
	}
	return json.Marshal(r)
}

// driftSwap is putInService's hook: the drift window follows the served
// model. The profile is read from the active slot, which holds the bundle
// of m (its digest checked at unpack); a profile that cannot be read is
// logged and the bundle served without drift windows.
func (a *Agent) driftSwap(m *model.Model) {
	if a.drift == nil {
		return
	}
	man := m.Manifest()
	var p *drift.Profile
	if man.Profile != "" {
		if sl, ok := a.store.Active(); ok && sl.ID == man.ID() {
			var err error
			if p, err = drift.LoadProfile(filepath.Join(sl.Dir, filepath.FromSlash(man.Profile))); err != nil {
				a.log.Warn("the bundle's drift profile cannot be read; serving it without drift windows", "bundle", man.ID(), "err", err)
				p = nil
			}
		} else {
			a.log.Warn("the served bundle is not the active slot; serving it without drift windows", "bundle", man.ID())
		}
	}
	a.drift.swap(man.Name, man.Version, p)
}

// every calls f each interval until quit is closed.
func every(interval time.Duration, quit <-chan struct{}, f func()) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			f()
		case <-quit:
			return
		}
	}
}
