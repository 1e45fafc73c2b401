package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/agent/slot"
	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/version"
)

// InstallOptions qualify an install; the zero value installs whatever
// signed bundle src holds, if it is newer than the active version of the
// same name.
type InstallOptions struct {
	// ID is the "name@version" expected; another signed bundle is refused
	// (slot.ErrMismatch). When it is the active version nothing is done.
	ID string `json:"id,omitempty"`
	// SHA256 and Size of the bundle file, when known; checked after the
	// download.
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
	// Force reinstalls the active version.
	Force bool `json:"force,omitempty"`
	// AllowDowngrade permits a lower version than the active one.
	AllowDowngrade bool `json:"allowDowngrade,omitempty"`
}

// Result is what an install or rollback left in service.
type Result struct {
	// Changed is false when the requested version was already active.
	Changed       bool       `json:"changed"`
	Active        *slot.Slot `json:"active"`
	LastKnownGood *slot.Slot `json:"lastKnownGood"`
	// Provider is the execution provider of the active model, when the
	// agent serves it.
	Provider string `json:"provider,omitempty"`
}

// Reasons are the short, stable labels of install and rollback failures:
// the admin API's "reason", the uplink's install.failed reason.
const (
	ReasonBusy           = "busy"
	ReasonNoTrust        = "no-trust"
	ReasonSignature      = "signature"
	ReasonDigest         = "digest"
	ReasonNoSpace        = "no-space"
	ReasonTooLarge       = "too-large"
	ReasonBadBundle      = "bad-bundle"
	ReasonMismatch       = "mismatch"
	ReasonDowngrade      = "downgrade"
	ReasonAgentTooOld    = "agent-too-old"
	ReasonNoLastKnown    = "no-last-known-good"
	ReasonSmokeFailed    = "smoke-failed"
	ReasonLoadFailed     = "load-failed"
	ReasonDownload       = "download"
	ReasonSource         = "bad-source"
	ReasonBadRequest     = "bad-request"
	ReasonCanceled       = "canceled"
	ReasonClosed         = "closed"
	ReasonManual         = "manual"
	ReasonInternal       = "internal"
	reasonAlreadyActive  = "already-active"
	reasonOriginLocal    = "local"
	reasonOriginFallback = "fallback"
)

// ReasonOf maps an install or rollback error to its Reason label.
func ReasonOf(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, slot.ErrBusy):
		return ReasonBusy
	case errors.Is(err, ErrClosed), errors.Is(err, slot.ErrClosed), errors.Is(err, ErrNotOpen):
		return ReasonClosed
	case errors.Is(err, ErrNoTrust):
		return ReasonNoTrust
	case errors.Is(err, bundle.ErrSignature):
		return ReasonSignature
	case errors.Is(err, fetch.ErrDigest), errors.Is(err, fetch.ErrSize), errors.Is(err, bundle.ErrDigest):
		return ReasonDigest
	case errors.Is(err, slot.ErrNoSpace):
		return ReasonNoSpace
	case errors.Is(err, fetch.ErrTooLarge), errors.Is(err, bundle.ErrLimit):
		return ReasonTooLarge
	case errors.Is(err, bundle.ErrManifest), errors.Is(err, bundle.ErrUnsafePath), errors.Is(err, bundle.ErrMissingFile),
		errors.Is(err, bundle.ErrExtraFile), errors.Is(err, bundle.ErrFormat):
		return ReasonBadBundle
	case errors.Is(err, slot.ErrMismatch):
		return ReasonMismatch
	case errors.Is(err, slot.ErrDowngrade):
		return ReasonDowngrade
	case errors.Is(err, slot.ErrAgentTooOld):
		return ReasonAgentTooOld
	case errors.Is(err, slot.ErrNoLastKnownGood):
		return ReasonNoLastKnown
	case errors.Is(err, model.ErrSmoke):
		return ReasonSmokeFailed
	case errors.Is(err, slot.ErrActivate):
		return ReasonLoadFailed
	case errors.Is(err, fetch.ErrSource):
		return ReasonSource
	case errors.Is(err, fetch.ErrStatus), errors.Is(err, fetch.ErrInterrupted):
		return ReasonDownload
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ReasonCanceled
	}
	return ReasonInternal
}

// transientReason reports whether an install that failed for reason may
// pass if tried again later, unchanged: a download cut or refused, a full
// disk, the slots busy, a timeout, or a cause the agent cannot name. A bad
// signature, an untrusted or broken bundle, a model that fails its smoke
// test or an agent too old for the bundle stay so: trying again cannot help
// until the desired state changes.
func transientReason(reason string) bool {
	switch strings.TrimPrefix(reason, "shadow-") {
	case ReasonDownload, ReasonNoSpace, ReasonBusy, ReasonCanceled, ReasonInternal:
		return true
	}
	return false
}

// applyError is Apply's error for err: with its reason, and marked
// transient where transientReason says so.
func applyError(reason string, err error) error {
	err = uplink.WithReason(reason, err)
	if err != nil && transientReason(reason) {
		err = uplink.Transient(err)
	}
	return err
}

// httpStatus is the admin API's status code for an install error.
func httpStatus(err error) int {
	switch ReasonOf(err) {
	case ReasonBusy:
		return http.StatusConflict
	case ReasonClosed, ReasonCanceled, ReasonNoTrust:
		return http.StatusServiceUnavailable
	case ReasonSource:
		return http.StatusBadRequest
	case ReasonNoSpace:
		return http.StatusInsufficientStorage
	case ReasonInternal:
		return http.StatusInternalServerError
	case ReasonDownload:
		return http.StatusBadGateway
	}
	return http.StatusUnprocessableEntity
}

// change is one install or rollback.
type change struct {
	req      slot.Request
	rollback bool
	// events: record install/rollback events in the outbox (local
	// changes; the uplink records its own).
	events   bool
	reason   string // of a rollback event
	progress uplink.ProgressFunc
}

// Install installs the signed bundle at src (a local path or an http(s)
// URL) with its detached signature sig ("" means src + ".sig"), through
// the slot store: verify, unpack, load, smoke test, commit, serve. The
// previous version becomes the last-known-good. On error nothing changed.
// Only one install or rollback runs at a time; another gets slot.ErrBusy.
func (a *Agent) Install(ctx context.Context, src, sig string, opts InstallOptions) (Result, error) {
	return a.change(ctx, change{
		req: slot.Request{
			Bundle: src, Sig: sig, ID: opts.ID, Size: opts.Size, SHA256: opts.SHA256,
			Force: opts.Force, AllowDowngrade: opts.AllowDowngrade,
		},
		events: true,
	})
}

// Rollback makes the last-known-good version active again (no download),
// through the same load and smoke test; the version it replaces becomes
// the last-known-good.
func (a *Agent) Rollback(ctx context.Context) (Result, error) {
	return a.change(ctx, change{rollback: true, events: true, reason: ReasonManual})
}

// Apply implements uplink.Agent: it makes d.Bundle the active version,
// by a rollback to the last-known-good when that is the version asked for
// (no download), otherwise by an install from d.Bundle's URL with its
// digest and size checked and its identity pinned (a downgrade only for
// ActionRollback). Then it starts d.Shadow's candidate, or stops the
// shadow when d names none (see shadow_agent.go); a candidate d does not name
// is stopped before the install. Errors carry a reason
// (uplink.WithReason; "shadow-" + the reason for the candidate's).
func (a *Agent) Apply(ctx context.Context, d *protocol.DesiredState, progress uplink.ProgressFunc) error {
	// Wait for a local install in progress rather than fail: fleetd's
	// instruction must not be lost to an operator's command.
	unlock, err := a.lock(ctx, true)
	if err != nil {
		return applyError(ReasonOf(err), err)
	}
	defer unlock()
	a.keepShadowOnly(d.Shadow)
	want := d.Bundle.ID()
	c := change{progress: progress}
	// Decided under the lock: no other install can change the slots now.
	if act, ok := a.store.Active(); !ok || act.ID != want {
		if lkg, ok := a.store.LastKnownGood(); ok && lkg.ID == want {
			c.rollback = true
		} else {
			c.req = slot.Request{
				Bundle: d.Bundle.URL, Sig: d.Bundle.SigURL, ID: want,
				Size: d.Bundle.Size, SHA256: d.Bundle.SHA256,
				AllowDowngrade: d.Action == protocol.ActionRollback,
			}
		}
		if _, err := a.changeLocked(ctx, c); err != nil {
			return applyError(ReasonOf(err), err)
		}
	}
	return a.applyShadow(ctx, d, progress)
}

var _ uplink.Agent = (*Agent)(nil)

func (a *Agent) checkOpen() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.closing || a.closed:
		return ErrClosed
	case !a.opened:
		return ErrNotOpen
	}
	return nil
}

// lock takes the install semaphore, at once (or slot.ErrBusy) or waiting
// until ctx ends, once the agent is open; unlock releases it.
func (a *Agent) lock(ctx context.Context, wait bool) (unlock func(), err error) {
	if err := a.checkOpen(); err != nil {
		return nil, err
	}
	if wait {
		select {
		case a.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		select {
		case a.sem <- struct{}{}:
		default:
			return nil, slot.ErrBusy
		}
	}
	// Close may have begun while this waited.
	if err := a.checkOpen(); err != nil {
		<-a.sem
		return nil, err
	}
	return func() { releaseMemory(); <-a.sem }, nil
}

// change runs one install or rollback, failing with slot.ErrBusy if
// another one is running.
func (a *Agent) change(ctx context.Context, c change) (Result, error) {
	unlock, err := a.lock(ctx, false)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	return a.changeLocked(ctx, c)
}

// changeLocked is change with the install semaphore held.
func (a *Agent) changeLocked(ctx context.Context, c change) (Result, error) {
	if !c.rollback && a.trust == nil {
		err := a.trustErr
		if err == nil {
			err = ErrNoTrust
		}
		a.log.Warn("install refused", "source", c.req.Bundle, "err", err)
		return Result{}, err
	}

	from := a.activeID()
	if c.events && !c.rollback {
		a.event(protocol.Event{Type: protocol.EventInstallStarted, From: from, Reason: reasonOriginLocal,
			Data: mustJSON(map[string]any{"source": redact(c.req.Bundle)})})
	}
	a.progress = c.progress
	a.phase(protocol.PhaseDownloading)
	var sl slot.Slot
	var err error
	if c.rollback {
		a.log.Info("rolling back", "from", from, "reason", c.reason)
		sl, err = a.store.Rollback(ctx, a.activate)
	} else {
		a.log.Info("installing", "source", redact(c.req.Bundle), "id", c.req.ID)
		sl, err = a.store.Install(ctx, c.req, a.activate)
	}
	a.progress = nil
	pending := a.pending
	a.pending = nil

	if err != nil {
		if pending != nil {
			a.closeModel(pending)
		}
		a.log.Warn("install failed", "rollback", c.rollback, "reason", ReasonOf(err), "err", err)
		if c.events {
			e := protocol.Event{Type: protocol.EventInstallFailed, From: from, Reason: ReasonOf(err), Message: protocol.Truncate(err.Error(), 1024)}
			if c.rollback {
				e.Type, e.Reason = protocol.EventRollbackFailed, c.reason
				if lkg, ok := a.store.LastKnownGood(); ok {
					e.Bundle = bundleID(lkg)
				}
			} else if le := a.store.State().LastError; le != nil && le.ID != "" {
				e.Bundle = parseID(le.ID)
			}
			a.event(e)
		}
		return Result{}, err
	}

	changed := pending != nil
	if pending != nil {
		if a.isServing() {
			a.putInService(pending)
		} else {
			a.closeModel(pending)
		}
	}
	a.log.Info("install done", "rollback", c.rollback, "active", sl.ID, "changed", changed)
	if c.events {
		e := protocol.Event{Type: protocol.EventInstallSucceeded, Bundle: bundleID(sl), From: from, Reason: reasonOriginLocal}
		if c.rollback {
			e.Type, e.Reason = protocol.EventRollbackSucceeded, c.reason
		} else if !changed {
			e.Reason = reasonAlreadyActive
		}
		a.event(e)
	}
	if changed {
		a.changed()
	}
	return a.result(changed), nil
}

// result describes what is active now.
func (a *Agent) result(changed bool) Result {
	r := Result{Changed: changed}
	if s, ok := a.store.Active(); ok {
		r.Active = &s
	}
	if s, ok := a.store.LastKnownGood(); ok {
		r.LastKnownGood = &s
	}
	r.Provider = a.provider()
	return r
}

// changed tells systemd and the uplink that the active bundle changed.
func (a *Agent) changed() {
	if a.ready.Load() {
		a.notify("", a.statusLine())
	}
	if a.up != nil {
		a.up.ReportChanged()
	}
}

// activate is the slot store's callback: check the agent version, load
// the model, run its smoke vectors, keep it pending.
func (a *Agent) activate(ctx context.Context, dir string, m *bundle.Manifest) error {
	ok, err := version.AtLeast(m.MinAgentVersion)
	if err != nil {
		return fmt.Errorf("%w: %s: minAgentVersion: %w", slot.ErrAgentTooOld, m.ID(), err)
	}
	if !ok {
		return fmt.Errorf("%w: %s needs agent %s, this is %s", slot.ErrAgentTooOld, m.ID(), m.MinAgentVersion, version.Version)
	}
	a.phase(protocol.PhaseSmokeTest)
	mdl, err := a.load(ctx, dir, m)
	if err != nil {
		return err
	}
	a.pending = mdl
	return nil
}

// load loads and smoke-tests the model of an unpacked bundle, or takes
// it from the ModelCache.
func (a *Agent) load(ctx context.Context, dir string, m *bundle.Manifest) (*model.Model, error) {
	if a.opts.models != nil {
		return a.opts.models.acquire(ctx, dir, m, a.loadModel)
	}
	return a.loadModel(ctx, dir, m)
}

// closeModel closes a model load returned (or gives it back to the
// ModelCache).
func (a *Agent) closeModel(m *model.Model) error {
	if a.opts.models != nil {
		if cached, err := a.opts.models.release(m); cached {
			return err
		}
	}
	return m.Close()
}

func (a *Agent) loadModel(ctx context.Context, dir string, m *bundle.Manifest) (*model.Model, error) {
	mdl, err := model.Load(ctx, dir, m, a.mopts)
	if err != nil {
		return nil, fmt.Errorf("loading the model of %s: %w", m.ID(), err)
	}
	if err := mdl.Smoke(ctx); err != nil {
		mdl.Close()
		return nil, fmt.Errorf("smoke test of %s: %w", m.ID(), err)
	}
	a.log.Info("model loaded", "bundle", m.ID(), "provider", mdl.Provider())
	return mdl, nil
}

// putInService swaps m into the registry and closes the model it replaces
// once no request uses it any more.
func (a *Agent) putInService(m *model.Model) {
	a.modelMu.Lock()
	prev := a.serving
	a.serving = m
	a.degraded = ""
	a.modelMu.Unlock()
	a.driftSwap(m) // before the new version answers
	a.sampleSwap(m)
	old, wait := a.reg.Set(m)
	if prev != nil && prev.Manifest().Name != m.Manifest().Name {
		// Another bundle name: the previous one leaves the API.
		old, wait = a.reg.Remove(prev.Manifest().Name)
	}
	if old == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.drainTimeout)
	defer cancel()
	if err := wait(ctx); err != nil {
		a.log.Warn("closing a replaced model while requests still use it", "err", err)
	}
	var err error
	switch c := old.(type) {
	case *model.Model:
		err = a.closeModel(c)
	case interface{ Close() error }:
		err = c.Close()
	}
	if err != nil {
		a.log.Warn("closing the replaced model", "err", err)
	}
}

// loadActive loads the active bundle at start. If it cannot be loaded,
// the agent returns to the last-known-good on its own; if that fails too,
// it serves nothing and says so (status, STATUS=, /v2/health/ready 503)
// but keeps running, so that an install can repair it.
func (a *Agent) loadActive(ctx context.Context) {
	active, ok := a.store.Active()
	if !ok {
		return
	}
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
	defer releaseMemory()
	mdl, err := a.loadSlot(ctx, active)
	if err == nil {
		a.putInService(mdl)
		return
	}
	a.log.Error("the active bundle cannot be served", "bundle", active.ID, "err", err)
	a.modelMu.Lock()
	a.degraded = fmt.Sprintf("%s cannot be loaded: %v", active.ID, err)
	a.modelMu.Unlock()
	if _, ok := a.store.LastKnownGood(); !ok {
		a.reg.Remove(active.Name)
		return
	}
	sl, rerr := a.store.Rollback(ctx, a.activate)
	pending := a.pending
	a.pending = nil
	if rerr != nil {
		if pending != nil {
			a.closeModel(pending)
		}
		a.log.Error("returning to the last-known-good failed too; serving nothing", "err", rerr)
		a.event(protocol.Event{Type: protocol.EventRollbackFailed, Bundle: parseID(a.lkgString()), From: bundleID(active),
			Reason: ReasonLoadFailed, Message: protocol.Truncate(rerr.Error(), 1024)})
		a.reg.Remove(active.Name)
		return
	}
	a.log.Warn("returned to the last-known-good version", "active", sl.ID, "from", active.ID)
	if pending != nil {
		a.putInService(pending)
	}
	if sl.Name != active.Name {
		a.reg.Remove(active.Name)
	}
	a.event(protocol.Event{Type: protocol.EventRollbackSucceeded, Bundle: bundleID(sl), From: bundleID(active),
		Reason: ReasonLoadFailed, Message: protocol.Truncate(err.Error(), 1024), Data: mustJSON(map[string]string{"origin": reasonOriginFallback})})
}

func (a *Agent) loadSlot(ctx context.Context, s slot.Slot) (*model.Model, error) {
	m, err := slot.ReadManifest(s.Dir)
	if err != nil {
		return nil, err
	}
	if ok, err := version.AtLeast(m.MinAgentVersion); err != nil || !ok {
		return nil, fmt.Errorf("%w: %s needs agent %s, this is %s", slot.ErrAgentTooOld, m.ID(), m.MinAgentVersion, version.Version)
	}
	return a.load(ctx, s.Dir, m)
}

// releaseMemory returns the memory an install used transiently (the
// unpacker's buffers, a model loaded for its smoke test, the model
// replaced) to the operating system at once rather than over minutes: on
// a small device the resident size is what counts.
func releaseMemory() { debug.FreeOSMemory() }

// hook is the slot store's crash-point hook: the test hook, then the
// install phase for the uplink.
func (a *Agent) hook(point string) {
	if h := a.opts.installHook; h != nil {
		h(point)
	}
	switch point {
	case slot.PointDownloaded:
		a.phase(protocol.PhaseVerifying)
	case slot.PointActivated:
		a.phase(protocol.PhaseActivating)
	}
}

// phase reports an install phase to the uplink's Apply, if it drives the
// install. It runs on the installing goroutine.
func (a *Agent) phase(p protocol.InstallPhase) {
	if a.progress != nil {
		a.progress(p, nil)
	}
}

// event appends e to the outbox; failures are logged. Events must not be
// lost to a shutdown, so the append does not follow a caller's context.
func (a *Agent) event(e protocol.Event) {
	if a.ob == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if _, err := uplink.AppendEvent(ctx, a.ob, e); err != nil {
		a.log.Error("event not recorded", "type", e.Type, "err", err)
	}
}

func bundleID(s slot.Slot) *protocol.BundleID {
	return &protocol.BundleID{Name: s.Name, Version: s.Version}
}

// parseID turns "name@version" into a BundleID (nil if it is not one).
func parseID(id string) *protocol.BundleID {
	for i := len(id) - 1; i > 0; i-- {
		if id[i] == '@' {
			if i == len(id)-1 {
				return nil
			}
			return &protocol.BundleID{Name: id[:i], Version: id[i+1:]}
		}
	}
	return nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with maps of plain values
	}
	return b
}
