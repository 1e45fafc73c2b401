package rollout

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// The production implementations satisfy the engine's interfaces.
var (
	_ Inventory = (*inventory.Store)(nil)
	_ Bundles   = registry.Registry(nil)
)

var t0 = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

var (
	v1 = protocol.BundleID{Name: "vad", Version: "1.0.0"}
	v2 = protocol.BundleID{Name: "vad", Version: "1.1.0"} // has a drift profile
	v3 = protocol.BundleID{Name: "vad", Version: "1.2.0"} // has none
)

// memFleet is an in-memory fleet: its "devices" apply the desired states
// they are sent, the way an agent does (install: the bundle becomes
// active and the old one last-known-good; rollback: back to the named
// version, no download), and report Health from per-bundle settings.
type memFleet struct {
	mu    sync.Mutex
	clock *cptest.Clock
	devs  map[string]*memDevice
	reg   map[protocol.BundleID]registry.Entry

	// async: an install stays "downloading" until finish() is called.
	async bool
	// failInstall: installs of these bundles fail.
	failInstall map[protocol.BundleID]string
	// retryInstall: installs of these bundles fail transiently, the
	// device retrying, until finish() is called.
	retryInstall map[protocol.BundleID]string
	// latency, errRate and output per bundle (defaults 10 ms, 0, 0.5);
	// agreement of shadow candidates (default 1).
	latency   map[protocol.BundleID]float64
	errRate   map[protocol.BundleID]float64
	output    map[protocol.BundleID]float64
	agreement map[protocol.BundleID]float64
	drift     map[protocol.BundleID]float64
	// latencyOn overrides latency for one device and bundle.
	latencyOn map[string]float64
	// silent devices send no telemetry.
	silent map[string]bool
	// assignErr, if set, fails Assign.
	assignErr func(id string, a Assignment) error

	assigns     []assignRec
	healthCalls int
}

type assignRec struct {
	id string
	a  Assignment
}

type memDevice struct {
	inventory.Device
	// ran are the bundles the device has run (for Health).
	ran map[protocol.BundleID]bool
	// downloading: an install waiting for finish().
	downloading bool
}

func newMemFleet(clock *cptest.Clock) *memFleet {
	f := &memFleet{
		clock: clock, devs: map[string]*memDevice{}, reg: map[protocol.BundleID]registry.Entry{},
		failInstall: map[protocol.BundleID]string{}, retryInstall: map[protocol.BundleID]string{},
		latency: map[protocol.BundleID]float64{}, errRate: map[protocol.BundleID]float64{},
		output: map[protocol.BundleID]float64{}, agreement: map[protocol.BundleID]float64{},
		drift: map[protocol.BundleID]float64{}, latencyOn: map[string]float64{}, silent: map[string]bool{},
	}
	for _, b := range []protocol.BundleID{v1, v2, v3} {
		e := registry.Entry{Name: b.Name, Version: b.Version, Size: 1000, SHA256: fmt.Sprintf("%064x", 1), Verified: true}
		if b != v3 {
			e.Manifest.Profile = "profile.json"
		}
		f.reg[b] = e
	}
	return f
}

// add adds an online device running active (nil: nothing).
func (f *memFleet) add(id string, labels map[string]string, active *protocol.BundleID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := &memDevice{Device: inventory.Device{ID: id, Labels: labels, Created: t0, Status: inventory.Status{Online: true, Session: 1, Since: t0}}, ran: map[protocol.BundleID]bool{}}
	d.Reported = &protocol.ReportedState{V: 1, DeviceID: id, Time: t0, AgentVersion: "0.1.0"}
	if active != nil {
		d.Reported.Active = new(*active)
		d.ran[*active] = true
	}
	f.devs[id] = d
}

func (f *memFleet) List(sel inventory.Selector) ([]*inventory.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*inventory.Device
	for _, d := range f.devs {
		if sel.Matches(d.EffectiveLabels()) {
			out = append(out, d.copy())
		}
	}
	slices.SortFunc(out, func(a, b *inventory.Device) int { return compareStrings(a.ID, b.ID) })
	return out, nil
}

func (f *memFleet) Get(id string) (*inventory.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", inventory.ErrNotFound, id)
	}
	return d.copy(), nil
}

func (d *memDevice) copy() *inventory.Device {
	c := d.Device
	if d.Reported != nil {
		r := *d.Reported
		c.Reported = &r
	}
	if d.Desired != nil {
		ds := *d.Desired
		c.Desired = &ds
	}
	return &c
}

// bundles is the fleet's registry (Bundles).
type bundles struct{ f *memFleet }

func (b bundles) Get(ctx context.Context, name, version string) (registry.Entry, error) {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	e, ok := b.f.reg[protocol.BundleID{Name: name, Version: version}]
	if !ok {
		return registry.Entry{}, fmt.Errorf("%w: %s@%s", registry.ErrNotFound, name, version)
	}
	return e, nil
}

func (f *memFleet) Assign(ctx context.Context, id string, a Assignment) (protocol.DesiredState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.assignErr != nil {
		if err := f.assignErr(id, a); err != nil {
			return protocol.DesiredState{}, err
		}
	}
	d, ok := f.devs[id]
	if !ok {
		return protocol.DesiredState{}, fmt.Errorf("%w: %q", inventory.ErrNotFound, id)
	}
	seq := uint64(1)
	if d.Desired != nil {
		seq = d.Desired.Seq + 1
	}
	now := f.clock.Now()
	ds := protocol.DesiredState{V: 1, DeviceID: id, Seq: seq, IssuedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour),
		Action: a.Action, RolloutID: a.RolloutID,
		Bundle: protocol.BundleRef{Name: a.Bundle.Name, Version: a.Bundle.Version, URL: "https://fleetd/b", SigURL: "https://fleetd/s", SHA256: fmt.Sprintf("%064x", 1), Size: 1000}}
	if a.Shadow != nil {
		ds.Shadow = &protocol.Shadow{Bundle: protocol.BundleRef{Name: a.Shadow.Name, Version: a.Shadow.Version, URL: "https://fleetd/b", SigURL: "https://fleetd/s", SHA256: fmt.Sprintf("%064x", 1), Size: 1000}}
	}
	d.Desired = &ds
	f.assigns = append(f.assigns, assignRec{id, a})
	f.applyLocked(d)
	return ds, nil
}

// applyLocked makes an online device act on its desired state.
func (f *memFleet) applyLocked(d *memDevice) {
	ds := d.Desired
	rep := d.Reported
	if ds == nil || !d.Status.Online || ds.Seq <= rep.AppliedSeq && !d.downloading {
		return
	}
	now := f.clock.Now()
	b := protocol.BundleID{Name: ds.Bundle.Name, Version: ds.Bundle.Version}
	rep.AppliedSeq, rep.Time = ds.Seq, now
	st := &protocol.InstallStatus{Seq: ds.Seq, Bundle: b, Time: now}
	rep.Install = st
	switch {
	case ds.Action == protocol.ActionRollback:
		if rep.Active != nil && *rep.Active != b {
			rep.LastKnownGood = rep.Active
		}
		rep.Active, rep.Shadow = new(b), nil
		st.Phase = protocol.PhaseSucceeded
		d.downloading = false
	case f.failInstall[b] != "":
		st.Phase, st.Error = protocol.PhaseFailed, f.failInstall[b]
	case f.async && !d.downloading && f.retryInstall[b] != "":
		next := now.Add(time.Minute)
		st.Phase, st.Error, st.Reason, st.Attempt, st.NextAttemptAt = protocol.PhaseRetrying, f.retryInstall[b], "download", 1, &next
		d.downloading = true
	case ds.Shadow != nil && f.failInstall[protocol.BundleID{Name: ds.Shadow.Bundle.Name, Version: ds.Shadow.Bundle.Version}] != "":
		// Like the agent: the main bundle's install status fails with
		// the candidate's reason.
		st.Phase, st.Error = protocol.PhaseFailed, "shadow-smoke-failed"
	case f.async && !d.downloading && (rep.Active == nil || *rep.Active != b || ds.Shadow != nil):
		st.Phase, st.Progress = protocol.PhaseDownloading, &protocol.Progress{Done: 10, Total: 1000}
		d.downloading = true
	default:
		if rep.Active != nil && *rep.Active != b {
			rep.LastKnownGood = rep.Active
		}
		rep.Active = new(b)
		rep.Shadow = nil
		if ds.Shadow != nil {
			rep.Shadow = &protocol.BundleID{Name: ds.Shadow.Bundle.Name, Version: ds.Shadow.Bundle.Version}
		}
		st.Phase = protocol.PhaseSucceeded
		d.ran[b] = true
		d.downloading = false
	}
}

// finish completes the downloads in progress.
func (f *memFleet) finish(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, d := range f.devs {
		if d.downloading && (len(ids) == 0 || slices.Contains(ids, id)) {
			async := f.async
			f.async = false
			f.applyLocked(d)
			f.async = async
		}
	}
}

// setOnline connects or disconnects a device; a device coming back acts
// on its (retained) desired state.
func (f *memFleet) setOnline(id string, online bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devs[id]
	d.Status.Online = online
	d.Status.Session++
	if online {
		f.applyLocked(d)
	}
}

func (f *memFleet) device(id string) *inventory.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.devs[id].copy()
}

// Health reports 100 requests per query of a bundle the device has run,
// with the configured error rate, latency and outputs, and shadow
// agreement for the candidate it shadows.
func (f *memFleet) Health(ctx context.Context, q HealthQuery) (Health, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.healthCalls++
	d, ok := f.devs[q.Device]
	if !ok || f.silent[q.Device] {
		return Health{}, nil
	}
	var h Health
	if d.ran[q.Bundle] {
		h.Requests = 100
		h.Errors = int64(f.errRate[q.Bundle]*100 + 0.5)
		h.LatencyP95Ms = or(f.latency[q.Bundle], 10)
		if l, ok := f.latencyOn[q.Device+"/"+q.Bundle.ID()]; ok {
			h.LatencyP95Ms = l
		}
		if s, ok := f.drift[q.Bundle]; ok {
			h.DriftScore, h.DriftWindows = s, 3
		}
		mean := or(f.output[q.Bundle], 0.5)
		for i := range 20 {
			h.Output.Add(mean + float64(i%5-2)*0.01)
		}
	}
	if d.Reported.Shadow != nil && *d.Reported.Shadow == q.Bundle {
		h.ShadowSamples = 200
		h.ShadowAgreed = int64(or(f.agreement[q.Bundle], 1) * 200)
	}
	return h, nil
}

func or(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

// env is an engine over a real bbolt file with the in-memory fleet.
type env struct {
	t     testing.TB
	clock *cptest.Clock
	fleet *memFleet
	path  string
	db    *bolt.DB
	eng   *Engine
	ids   int
	// emitter, if set, is the engine's Emitter.
	emitter Emitter
}

// newEnv makes n devices dev-000.. running v1, labelled site a/b/c by
// index mod 3 and hw=pi4 (even) or jetson (odd).
func newEnv(t testing.TB, n int) *env {
	t.Helper()
	clock := cptest.NewClock(t0)
	e := &env{t: t, clock: clock, fleet: newMemFleet(clock), path: filepath.Join(t.TempDir(), "rollouts.db")}
	for i := range n {
		e.fleet.add(devID(i), map[string]string{"site": string(rune('a' + i%3)), "hw": map[bool]string{true: "pi4", false: "jetson"}[i%2 == 0]}, &v1)
	}
	e.open()
	t.Cleanup(e.close)
	return e
}

func devID(i int) string { return fmt.Sprintf("dev-%03d", i) }

func (e *env) open() {
	e.t.Helper()
	db, err := bolt.Open(e.path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		e.t.Fatalf("bolt.Open: %v", err)
	}
	eng, err := New(Config{
		DB: db, Inventory: e.fleet, Bundles: bundles{e.fleet}, Fleet: e.fleet, Observer: e.fleet,
		Now: e.clock.Now, Emitter: e.emitter,
		NewID: func() string {
			e.ids++
			return fmt.Sprintf("ro-test-%d", e.ids)
		},
	})
	if err != nil {
		db.Close()
		e.t.Fatalf("New: %v", err)
	}
	e.db, e.eng = db, eng
}

func (e *env) close() {
	if e.eng != nil {
		e.eng.Close()
		e.db.Close()
		e.eng, e.db = nil, nil
	}
}

// restart closes the engine and the file and opens them again, as a
// fleetd restart does.
func (e *env) restart() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *env) create(spec string) *Rollout {
	e.t.Helper()
	s, err := ParseSpec([]byte(spec))
	if err != nil {
		e.t.Fatalf("ParseSpec: %v", err)
	}
	r, err := e.eng.Create(context.Background(), s)
	if err != nil {
		e.t.Fatalf("Create: %v", err)
	}
	return r
}

func (e *env) tick() {
	e.t.Helper()
	if err := e.eng.Tick(context.Background()); err != nil {
		e.t.Fatalf("Tick: %v", err)
	}
}

// advance moves the clock and ticks.
func (e *env) advance(d time.Duration) *env {
	e.t.Helper()
	e.clock.Advance(d)
	e.tick()
	return e
}

func (e *env) get(id string) *Rollout {
	e.t.Helper()
	r, err := e.eng.Get(id)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", id, err)
	}
	return r
}

// assigned returns the devices the rollout sent an install (or shadow)
// to, in cohort order.
func (e *env) assigned(id string) []string {
	e.t.Helper()
	ds, err := e.eng.Devices(id)
	if err != nil {
		e.t.Fatalf("Devices: %v", err)
	}
	var out []string
	for _, d := range ds {
		if d.Mode != ModeNone && d.Phase != PhaseSkipped {
			out = append(out, d.ID)
		}
	}
	return out
}

// running returns how many devices run b.
func (e *env) running(b protocol.BundleID) int {
	n := 0
	e.fleet.mu.Lock()
	defer e.fleet.mu.Unlock()
	for _, d := range e.fleet.devs {
		if d.Reported.Active != nil && *d.Reported.Active == b {
			n++
		}
	}
	return n
}

func (e *env) history(id string) []EventType {
	e.t.Helper()
	evs, err := e.eng.History(id)
	if err != nil {
		e.t.Fatalf("History: %v", err)
	}
	out := make([]EventType, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

func wantState(t testing.TB, r *Rollout, s State) {
	t.Helper()
	if r.State != s {
		t.Fatalf("rollout %s is %s (%s; waiting: %s; error: %s), want %s", r.ID, r.State, r.Reason, r.Progress.Waiting, r.LastError, s)
	}
}

func wantStep(t testing.TB, r *Rollout, step int) {
	t.Helper()
	if r.Step != step {
		t.Fatalf("rollout %s at step %d (%s; waiting: %s), want %d", r.ID, r.Step, r.State, r.Progress.Waiting, step)
	}
}

func openBolt(t testing.TB) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "rollouts.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
