package agent

// The Agent's side of shadow mode: the runner's start and shutdown hooks,
// Apply's steps that fetch, verify, load and start a candidate, replace it
// or stop it, and the candidate as the reported state and Status show it.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/agent/slot"
	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

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
