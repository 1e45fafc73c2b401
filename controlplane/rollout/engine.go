package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// DefaultInterval is how often Run advances the active rollouts.
const DefaultInterval = 2 * time.Second

// Config configures an Engine.
type Config struct {
	// DB holds the engine's state, in a top-level bucket "rollouts" (the
	// file may be shared; the caller opens and closes it).
	DB *bolt.DB
	// Inventory, Bundles, Fleet and Observer are fleetd's side.
	Inventory Inventory
	Bundles   Bundles
	Fleet     Fleet
	Observer  Observer
	// Interval is how often Run advances the rollouts; zero means
	// DefaultInterval.
	Interval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NewID makes rollout ids ([A-Za-z0-9._-], at most 64 bytes); nil
	// means "ro-" and 10 random hex digits.
	NewID func() string
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
	// Emitter, if set, hears of every history event inside the
	// transaction that records it (fleetd queues its outgoing events
	// there).
	Emitter Emitter
}

// Emitter hears of rollouts' history events (a gate breached, a rollback
// done, an experiment completed, ...) inside the bbolt transaction that
// appends them to the history, with the event's Seq set and the rollout
// as it is being written: what it writes in tx commits with the event or
// not at all. It must not keep r or call the Engine; an error fails the
// write, which the engine retries at the next tick.
type Emitter interface {
	RolloutEvent(tx *bolt.Tx, r *Rollout, ev Event) error
}

// Engine runs rollouts and experiments. Its methods are safe for
// concurrent use; they serialize on one lock, held while a rollout is
// advanced (which calls Fleet and Observer).
type Engine struct {
	db       *bolt.DB
	inv      Inventory
	bundles  Bundles
	fleet    Fleet
	obs      Observer
	interval time.Duration
	now      func() time.Time
	newID    func() string
	log      *slog.Logger
	emit     Emitter
	kick     chan struct{}

	mu     sync.Mutex
	runs   map[string]*run // active rollouts
	closed bool
}

// New opens the engine over cfg.DB, loading the active rollouts as they
// were persisted: a rollout that was baking keeps its deadlines and its
// cohorts. It does not start advancing them: call Run (or Tick).
func New(cfg Config) (*Engine, error) {
	switch {
	case cfg.DB == nil:
		return nil, fmt.Errorf("%w: config: DB is required", ErrInvalid)
	case cfg.Inventory == nil, cfg.Bundles == nil, cfg.Fleet == nil, cfg.Observer == nil:
		return nil, fmt.Errorf("%w: config: Inventory, Bundles, Fleet and Observer are required", ErrInvalid)
	case cfg.Interval < 0:
		return nil, fmt.Errorf("%w: config: Interval %v is negative", ErrInvalid, cfg.Interval)
	}
	e := &Engine{
		db: cfg.DB, inv: cfg.Inventory, bundles: cfg.Bundles, fleet: cfg.Fleet, obs: cfg.Observer,
		interval: cfg.Interval, now: cfg.Now, newID: cfg.NewID, log: cfg.Logger, emit: cfg.Emitter,
		kick: make(chan struct{}, 1),
		runs: map[string]*run{},
	}
	if e.interval == 0 {
		e.interval = DefaultInterval
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.newID == nil {
		e.newID = randomID
	}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := initDB(e.db); err != nil {
		return nil, fmt.Errorf("rollout: opening the store: %w", err)
	}
	err := e.db.View(func(tx *bolt.Tx) error {
		return sub(tx, bucketRollouts).ForEach(func(k, _ []byte) error {
			r, err := getRollout(tx, string(k))
			if err != nil {
				return err
			}
			if !r.State.Active() {
				return nil
			}
			devs, err := loadDevices(tx, r.ID)
			if err != nil {
				return err
			}
			rn, err := e.newRun(r, devs)
			if err != nil {
				return err
			}
			e.runs[r.ID] = rn
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("rollout: loading rollouts: %w", err)
	}
	if len(e.runs) > 0 {
		e.log.Info("rollout: resumed active rollouts", "count", len(e.runs))
	}
	return e, nil
}

func randomID() string {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return "ro-" + hex.EncodeToString(b[:])
}

// Close stops the engine; later calls fail with ErrClosed. It does not
// close the DB.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

// minKickGap is the least time between two ticks Notify causes, so that
// a burst of reports does not make the engine tick back to back.
const minKickGap = 200 * time.Millisecond

// Run advances the active rollouts every Interval (and on Notify, at most
// every 200 ms) until ctx ends; it returns ctx's error.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.interval)
	defer t.Stop()
	for {
		if err := e.Tick(ctx); err != nil && !errors.Is(err, context.Canceled) {
			if errors.Is(err, ErrClosed) {
				return err
			}
			e.log.Warn("rollout: tick", "err", err)
		}
		gap := time.NewTimer(min(minKickGap, e.interval))
		select {
		case <-ctx.Done():
			gap.Stop()
			return ctx.Err()
		case <-t.C:
			gap.Stop()
			continue
		case <-gap.C:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-e.kick:
		}
	}
}

// Notify asks Run to advance the rollouts now rather than at the next
// interval (fleetd calls it when a device reports a new state). It never
// blocks.
func (e *Engine) Notify() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Tick advances every active rollout as far as it can go now: assigns
// what the limits allow, reads reports, evaluates gates, moves to the next
// step, rolls back. Problems with the fleet or the observer are recorded
// in the rollout (LastError) and retried at the next tick; the error
// returned is a persistence failure or ctx's.
func (e *Engine) Tick(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	var errs []error
	ids := mapsKeys(e.runs)
	slices.Sort(ids)
	for _, id := range ids {
		rn, ok := e.runs[id]
		if !ok {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.advance(ctx, rn); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func mapsKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Plan is a validated spec resolved against the fleet: what Create would
// do (fleetctl rollout create --dry-run).
type Plan struct {
	// ID is the id the rollout would get (Create makes a new one).
	ID string `json:"id"`
	// Spec is the spec with defaults filled in.
	Spec *Spec `json:"spec"`
	// Bundle is the version to roll out; Arms an experiment's versions.
	Bundle protocol.BundleID   `json:"bundle,omitzero"`
	Arms   []protocol.BundleID `json:"arms,omitempty"`
	// Devices are the target devices in cohort order: step i covers the
	// first Steps[i].Size of them.
	Devices []string `json:"devices"`
	Steps   []Step   `json:"steps"`
	// ArmSizes are the experiment's cohort sizes (arm 0 first).
	ArmSizes []int `json:"armSizes,omitempty"`
	// Lineage is where Bundle's model came from, as the registry's
	// manifest says (nil if it does not say).
	Lineage *bundle.Lineage `json:"lineage,omitempty"`
}

// Plan validates spec, checks it against the fleet and the registry (the
// selector matches devices, the bundles exist, the gates can be evaluated,
// the waves grow, the target overlaps no active rollout) and resolves its
// steps, without changing anything. Spec problems are *FieldErrors
// (errors.Is(err, ErrInvalid)); an overlap is a *ConflictError.
func (e *Engine) Plan(ctx context.Context, spec *Spec) (*Plan, error) {
	p, err := e.plan(ctx, spec, e.newID())
	if err != nil {
		return nil, err
	}
	if err := e.db.View(func(tx *bolt.Tx) error {
		if h := holders(tx, p.Devices, ""); h != nil {
			return &ConflictError{Holders: h}
		}
		return nil
	}); err != nil {
		return nil, closedErr(err)
	}
	return p, nil
}

func (e *Engine) plan(ctx context.Context, spec *Spec, id string) (*Plan, error) {
	if spec == nil {
		return nil, fmt.Errorf("%w: no spec", ErrInvalid)
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	s := spec.Normalize()
	p := &Plan{ID: id, Spec: s}
	var l errorList
	sel, _ := inventory.ParseSelector(s.Target) // validated
	devs, err := e.inv.List(sel)
	if err != nil {
		return nil, fmt.Errorf("rollout: listing the target devices: %w", err)
	}
	if len(devs) == 0 {
		l.add("target", "selector %q matches no device", s.Target)
	}
	lookup := func(path, ref string) (protocol.BundleID, *registry.Entry, error) {
		b, _ := ParseBundleID(ref) // validated
		ent, err := e.bundles.Get(ctx, b.Name, b.Version)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			l.add(path, "%s is not in the registry (push it with fleetctl bundle push)", ref)
			return b, nil, nil
		case err != nil:
			return b, nil, fmt.Errorf("rollout: looking up %s in the registry: %w", ref, err)
		}
		return b, &ent, nil
	}
	if s.Kind == KindExperiment {
		for i, a := range s.Experiment.Arms {
			b, _, err := lookup(fmt.Sprintf("experiment.arms[%d].bundle", i), a.Bundle)
			if err != nil {
				return nil, err
			}
			p.Arms = append(p.Arms, b)
		}
	} else {
		b, ent, err := lookup("bundle", s.Bundle)
		if err != nil {
			return nil, err
		}
		p.Bundle = b
		if ent != nil {
			p.Lineage = ent.Manifest.Lineage
		}
		if ent != nil && s.Gates.Drift != nil && ent.Manifest.Profile == "" {
			l.add("gates.drift", "cannot be evaluated: bundle %s has no drift profile (build it with a reference profile)", s.Bundle)
		}
		if s.Gates.LatencyP95 != nil && len(devs) > 0 {
			prev := 0
			for _, d := range devs {
				if a := d.Active(); a != nil && *a != b {
					prev++
				}
			}
			if prev == 0 {
				l.add("gates.latencyP95", "cannot be evaluated: none of the %d target devices reports running an earlier version to compare with", len(devs))
			}
		}
	}
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.ID
	}
	p.Devices = CohortOrder(id, ids)
	n := len(ids)
	if n > 0 {
		p.Steps, p.ArmSizes = resolveSteps(s, n, &l)
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	return p, nil
}

// resolveSteps turns the spec's shares into step sizes for n devices.
func resolveSteps(s *Spec, n int, l *errorList) ([]Step, []int) {
	if s.Kind == KindExperiment {
		x := s.Experiment
		a := shareSize(n, x.Arms[0].Percent, x.Arms[0].Count, 0)
		b := shareSize(n, x.Arms[1].Percent, x.Arms[1].Count, 0)
		if a+b > n {
			l.add("experiment.arms", "the arms need %d + %d devices, the target has %d", a, b, n)
		}
		return []Step{{Name: "experiment", Kind: StepExperiment, Size: min(a+b, n), Bake: x.Duration}}, []int{a, b}
	}
	var steps []Step
	if sh := s.Shadow; sh != nil {
		steps = append(steps, Step{Name: "shadow", Kind: StepShadow, Size: shareSize(n, sh.Percent, sh.Count, sh.MinDevices), Bake: sh.Bake})
	}
	prev, prevAt := 0, -1
	for i, w := range s.Waves {
		size := shareSize(n, w.Percent, w.Count, w.MinDevices)
		if size < prev {
			l.add(fmt.Sprintf("waves[%d]", i), "resolves to %d of the %d target devices, fewer than the %d of waves[%d]: waves are cumulative and must not shrink", size, n, prev, prevAt)
		}
		prev, prevAt = size, i
		steps = append(steps, Step{Name: w.Name, Kind: StepWave, Size: size, Bake: w.Bake})
	}
	if s.Shadow != nil && len(steps) > 1 && steps[0].Size > steps[len(steps)-1].Size {
		l.add("shadow", "covers %d devices, more than the %d of the last wave: they would be left running the candidate in shadow", steps[0].Size, steps[len(steps)-1].Size)
	}
	return steps, nil
}

// Create validates spec, checks it against the fleet (Plan), persists the
// new rollout holding its target devices, and starts it: the first step's
// devices are assigned before Create returns (as far as the limits allow).
// A target overlapping an active rollout is refused with a *ConflictError
// naming it.
func (e *Engine) Create(ctx context.Context, spec *Spec) (*Rollout, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	p, err := e.plan(ctx, spec, e.newID())
	if err != nil {
		return nil, err
	}
	rn, err := e.create(p, nil, "")
	if err != nil {
		return nil, err
	}
	if err := e.advance(ctx, rn); err != nil {
		e.log.Warn("rollout: advancing a new rollout", "rollout", rn.r.ID, "err", err)
	}
	return rn.snapshot(), nil
}

// create persists the rollout planned by p and adds it to the runs.
// previous, if set, gives devices' previous versions (a promoted
// experiment's); from names that experiment.
func (e *Engine) create(p *Plan, previous map[string]*protocol.BundleID, from string) (*run, error) {
	now := e.now()
	r := &Rollout{
		ID: p.ID, Spec: p.Spec, Bundle: p.Bundle, Lineage: p.Lineage, Arms: p.Arms, State: StateRunning,
		Created: now, Updated: now, Devices: len(p.Devices), Steps: p.Steps, StepStarted: now, From: from,
	}
	devs := make([]*Device, len(p.Devices))
	for i, id := range p.Devices {
		d := &Device{ID: id, Order: i}
		if p.ArmSizes != nil && i >= p.ArmSizes[0] {
			d.Arm = 1
		}
		if prev, ok := previous[id]; ok {
			d.Previous, d.PreviousKnown = prev, true
		}
		devs[i] = d
	}
	rn, err := e.newRun(r, devs)
	if err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("%s of %d devices in %d steps", describe(r), len(devs), len(r.Steps))
	if from != "" {
		msg += ", promoted from experiment " + from
	}
	rn.event(now, EventCreated, -1, msg)
	rn.event(now, EventStepStarted, 0, stepMessage(r, 0))
	err = e.db.Update(func(tx *bolt.Tx) error {
		if sub(tx, bucketRollouts).Get([]byte(r.ID)) != nil {
			return fmt.Errorf("%w: rollout id %q already exists", ErrInvalid, r.ID)
		}
		if h := holders(tx, p.Devices, from); h != nil {
			return &ConflictError{Holders: h}
		}
		if err := hold(tx, p.Devices, r.ID); err != nil {
			return err
		}
		for _, d := range devs {
			if err := putDevice(tx, r.ID, d); err != nil {
				return err
			}
		}
		return rn.write(tx, e.emit)
	})
	if err != nil {
		return nil, closedErr(err)
	}
	rn.clean()
	e.runs[r.ID] = rn
	e.log.Info("rollout: created", "rollout", r.ID, "what", describe(r), "devices", len(devs))
	return rn, nil
}

func describe(r *Rollout) string {
	if r.Spec.Kind == KindExperiment {
		return fmt.Sprintf("experiment %s vs %s", r.Arms[0].ID(), r.Arms[1].ID())
	}
	return "rollout of " + r.Bundle.ID()
}

func stepMessage(r *Rollout, i int) string {
	s := r.Steps[i]
	return fmt.Sprintf("step %d/%d %q (%s): %d of %d devices, bake %s", i+1, len(r.Steps), s.Name, s.Kind, s.Size, r.Devices, s.Bake)
}

// Get returns rollout id's status.
func (e *Engine) Get(id string) (*Rollout, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if rn, ok := e.runs[id]; ok {
		return rn.snapshot(), nil
	}
	var r *Rollout
	err := e.db.View(func(tx *bolt.Tx) (err error) {
		r, err = getRollout(tx, id)
		return err
	})
	return r, closedErr(err)
}

// List returns every rollout, newest first.
func (e *Engine) List() ([]*Rollout, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	var out []*Rollout
	err := e.db.View(func(tx *bolt.Tx) error {
		return sub(tx, bucketRollouts).ForEach(func(k, _ []byte) error {
			if rn, ok := e.runs[string(k)]; ok {
				out = append(out, rn.snapshot())
				return nil
			}
			r, err := getRollout(tx, string(k))
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, closedErr(err)
	}
	slices.SortStableFunc(out, func(a, b *Rollout) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return compareStrings(b.ID, a.ID)
	})
	return out, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// History returns rollout id's history, oldest first.
func (e *Engine) History(id string) ([]Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	var out []Event
	err := e.db.View(func(tx *bolt.Tx) (err error) {
		if _, err := getRollout(tx, id); err != nil {
			return err
		}
		out, err = loadEvents(tx, id)
		return err
	})
	return out, closedErr(err)
}

// Devices returns rollout id's devices in cohort order, with what each
// reports now (from the Inventory; a device gone from it shows as
// offline with no active bundle).
func (e *Engine) Devices(id string) ([]DeviceStatus, error) {
	e.mu.Lock()
	var devs []*Device
	if rn, ok := e.runs[id]; ok {
		devs = make([]*Device, len(rn.devs))
		for i, d := range rn.devs {
			cp := *d
			devs[i] = &cp
		}
	} else if !e.closed {
		err := e.db.View(func(tx *bolt.Tx) (err error) {
			if _, err := getRollout(tx, id); err != nil {
				return err
			}
			devs, err = loadDevices(tx, id)
			return err
		})
		if err != nil {
			e.mu.Unlock()
			return nil, closedErr(err)
		}
	}
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	out := make([]DeviceStatus, len(devs))
	for i, d := range devs {
		out[i].Device = *d
		if v, err := e.inv.Get(d.ID); err == nil {
			out[i].Active = v.Active()
			out[i].Online = v.Status.Online
		}
	}
	return out, nil
}

// Holder returns the active rollout holding device id, if any (fleetd may
// warn before a manual assignment that would fight it).
func (e *Engine) Holder(id string) (string, bool) {
	var h string
	_ = e.db.View(func(tx *bolt.Tx) error {
		h = string(sub(tx, bucketHolds).Get([]byte(id)))
		return nil
	})
	return h, h != ""
}
