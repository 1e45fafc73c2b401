package rollout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// advance moves rn as far as it can go now, writing after every pass.
func (e *Engine) advance(ctx context.Context, rn *run) error {
	for range len(rn.r.Steps) + 3 {
		moved := e.stepOnce(ctx, rn)
		if err := e.flush(rn); err != nil {
			return err
		}
		if !moved || !rn.r.State.Active() {
			break
		}
	}
	if !rn.r.State.Active() {
		delete(e.runs, rn.r.ID)
	}
	return nil
}

// stepOnce does one pass over rn; it reports whether the rollout moved
// (to another step or state), so that another pass may do more.
func (e *Engine) stepOnce(ctx context.Context, rn *run) bool {
	r := rn.r
	now := e.now()
	switch r.State {
	case StateRollingBack:
		e.sendRollbacks(ctx, rn, now)
		return false
	case StateRunning:
	default:
		return false
	}
	step := r.Steps[r.Step]
	views, viewErr := e.views(rn, step)
	for _, d := range rn.devs {
		if v := views[d.Order]; v != nil {
			rn.observe(d, v, now)
		}
	}
	done, waiting, sent := e.assign(ctx, rn, step, views, now)
	// Look again at the devices just assigned: one that already runs the
	// version (or acts at once) counts now rather than at the next tick.
	for _, d := range sent {
		if v, err := e.inv.Get(d.ID); err == nil {
			rn.observe(d, v, now)
		}
	}
	rn.count(viewErr)

	// Installs that failed decide at once: no later report can save the
	// step.
	inst := rn.installGate(step)
	if inst.certain {
		r.Gates = []GateResult{inst.GateResult}
		e.breach(ctx, rn, inst.GateResult, false, now)
		return true
	}
	if !done {
		r.Gates = []GateResult{inst.GateResult}
		r.Progress.Waiting = "assigning: " + waiting
		return false
	}
	if r.BakeStart.IsZero() {
		r.BakeStart = now
		r.BakeUntil = now.Add(step.Bake.D())
		r.Deadline = r.BakeUntil.Add(r.Spec.WaveDeadline.D())
		rn.event(now, EventStepBaking, r.Step, fmt.Sprintf("every device of step %q assigned; baking until %s, evidence deadline %s",
			step.Name, r.BakeUntil.UTC().Format(time.RFC3339), r.Deadline.UTC().Format(time.RFC3339)))
	}
	if r.Promoted {
		r.Gates = []GateResult{inst.GateResult}
		e.nextStep(ctx, rn, now, EventStepPassed, fmt.Sprintf("step %q passed by promotion (bake and gates skipped)", step.Name))
		return true
	}
	if now.Before(r.BakeUntil) {
		r.Gates = []GateResult{inst.GateResult}
		r.Progress.Waiting = "baking until " + r.BakeUntil.UTC().Format(time.RFC3339)
		return false
	}
	if step.Kind == StepExperiment {
		return e.evaluateExperiment(ctx, rn, inst.GateResult, now)
	}
	results, err := e.evaluate(ctx, rn, step, inst.GateResult)
	if err != nil {
		r.LastError = err.Error()
		r.Progress.Waiting = "reading device health: " + err.Error()
		return false
	}
	r.Gates = results
	var wait *GateResult
	for i, g := range results {
		switch g.Status {
		case GateBreach:
			e.breach(ctx, rn, g, false, now)
			return true
		case GateWaiting:
			if wait == nil {
				wait = &results[i]
			}
		}
	}
	if wait == nil {
		e.nextStep(ctx, rn, now, EventStepPassed, fmt.Sprintf("step %q passed its gates", step.Name))
		return true
	}
	if !now.Before(r.Deadline) {
		e.breach(ctx, rn, *wait, true, now)
		return true
	}
	r.Progress.Waiting = fmt.Sprintf("evidence for %s: %d of %d reports, until %s",
		wait.Gate, wait.Reports, wait.MinReports, r.Deadline.UTC().Format(time.RFC3339))
	return false
}

// views reads the devices the step needs from the inventory, indexed by
// cohort order: every device assigned so far and every device of the
// step. A device gone from the inventory is marked removed.
func (e *Engine) views(rn *run, step Step) ([]*inventory.Device, error) {
	views := make([]*inventory.Device, len(rn.devs))
	var errs []error
	for i, d := range rn.devs {
		if d.Phase == PhaseRemoved || (d.Mode == ModeNone && i >= step.Size) {
			continue
		}
		v, err := e.inv.Get(d.ID)
		switch {
		case errors.Is(err, inventory.ErrNotFound):
			d.Phase = PhaseRemoved
			rn.touch(d)
		case err != nil:
			if len(errs) < 3 {
				errs = append(errs, fmt.Errorf("reading device %s: %w", d.ID, err))
			}
		default:
			views[i] = v
		}
	}
	return views, errors.Join(errs...)
}

// observe updates d's phase from what it reports.
func (rn *run) observe(d *Device, v *inventory.Device, now time.Time) {
	switch d.Phase {
	case PhaseUnassigned, PhaseAssigning, PhaseRemoved, PhaseSkipped:
		return
	}
	target := rn.bundleFor(d)
	rep := v.Reported
	phase, msg := d.Phase, d.Error
	switch {
	case rep == nil:
	case d.Mode == ModeInstall && sameBundle(rep.Active, target),
		d.Mode == ModeShadow && sameBundle(rep.Shadow, target):
		phase, msg = PhaseInstalled, ""
	// The device's report of this desired state (or a later one). In
	// shadow mode the install status names the main bundle, not the
	// candidate: a failure there (e.g. the candidate's smoke test) is the
	// step's failure all the same.
	case rep.Install != nil && rep.Install.Seq >= d.Seq && (rep.Install.Bundle == target || d.Mode == ModeShadow):
		switch rep.Install.Phase {
		case protocol.PhaseFailed, protocol.PhaseRolledBack:
			phase, msg = PhaseFailed, rep.Install.Error
			if msg == "" {
				msg = "install " + string(rep.Install.Phase)
			}
		case protocol.PhaseRetrying:
			// A transient failure the device tries again: still
			// installing, with what went wrong so far.
			phase, msg = PhaseInstalling, fmt.Sprintf("retrying after attempt %d: %s", rep.Install.Attempt, rep.Install.Error)
		case protocol.PhaseSucceeded:
			if d.Phase == PhaseInstalled {
				phase, msg = PhaseFailed, fmt.Sprintf("no longer runs %s (active: %s)", target.ID(), idText(rep.Active))
			}
		default:
			phase = PhaseInstalling
		}
	case d.Phase == PhaseInstalled:
		phase, msg = PhaseFailed, fmt.Sprintf("no longer runs %s (active: %s)", target.ID(), idText(rep.Active))
	}
	if phase == d.Phase && msg == d.Error {
		return
	}
	d.Phase, d.Error = phase, msg
	if phase == PhaseInstalled && d.InstalledAt.IsZero() {
		d.InstalledAt = now
	}
	rn.touch(d)
}

func sameBundle(a *protocol.BundleID, b protocol.BundleID) bool { return a != nil && *a == b }

func idText(b *protocol.BundleID) string {
	if b == nil {
		return "none"
	}
	return b.ID()
}

// inflight counts the devices installing now, for MaxConcurrentDownloads:
// assigned, no result yet, online (an offline device downloads nothing;
// it resumes when it returns), and assigned less than WaveDeadline ago (a
// device stuck longer stops counting).
func (rn *run) inflight(views []*inventory.Device, now time.Time) int {
	n := 0
	for _, d := range rn.devs {
		switch d.Phase {
		case PhaseAssigning:
			n++
		case PhaseAssigned, PhaseInstalling:
			if now.Sub(d.AssignedAt) >= rn.r.Spec.WaveDeadline.D() {
				continue
			}
			if v := views[d.Order]; v != nil && v.Status.Online {
				n++
			}
		}
	}
	return n
}

// assign sends the step's desired state to those of its devices that do
// not have it yet, as far as maintenance windows and download slots
// allow. It reports whether every device of the step has it, and if not,
// what it waits for.
func (e *Engine) assign(ctx context.Context, rn *run, step Step, views []*inventory.Device, now time.Time) (done bool, waiting string, sent []*Device) {
	r := rn.r
	want := ModeInstall
	if step.Kind == StepShadow {
		want = ModeShadow
	}
	budget := math.MaxInt
	if lim := r.Spec.Limits.MaxConcurrentDownloads; lim > 0 {
		budget = lim - rn.inflight(views, now)
	}
	var batch []*Device
	left, inWindow, noSlot, unread := 0, 0, 0, 0
	for _, d := range rn.devs[:step.Size] {
		if d.Phase == PhaseRemoved || (d.Mode == want && d.Phase != PhaseAssigning) {
			continue
		}
		left++
		v := views[d.Order]
		if v == nil {
			unread++
			continue
		}
		if !rn.win.open(v.EffectiveLabels(), now) {
			inWindow++
			continue
		}
		if !d.PreviousKnown {
			if a := v.Active(); a != nil {
				d.Previous = new(*a)
			}
			d.PreviousKnown = true
			rn.touch(d)
		}
		if want == ModeShadow && (d.Previous == nil || *d.Previous == r.Bundle) {
			d.Mode, d.Phase = want, PhaseSkipped
			rn.touch(d)
			left--
			continue
		}
		if d.Phase != PhaseAssigning {
			if budget <= 0 {
				noSlot++
				continue
			}
			budget--
		}
		d.Mode, d.Phase, d.InstalledAt, d.Error = want, PhaseAssigning, time.Time{}, ""
		rn.touch(d)
		batch = append(batch, d)
	}
	if len(batch) > 0 {
		// Write ahead: a crash between here and the end of the loop
		// re-sends to these devices, with the previous version recorded
		// now (by then the device may report the new one active).
		if err := e.flush(rn); err != nil {
			r.LastError = err.Error()
			return false, "writing the assignments: " + err.Error(), nil
		}
	}
	var failed []string
	for _, d := range batch {
		a := Assignment{RolloutID: r.ID, Action: protocol.ActionInstall, Bundle: rn.bundleFor(d)}
		if want == ModeShadow {
			a.Bundle, a.Shadow = *d.Previous, new(r.Bundle)
		}
		ds, err := e.fleet.Assign(ctx, d.ID, a)
		switch {
		case errors.Is(err, inventory.ErrNotFound):
			d.Phase = PhaseRemoved
			left--
		case err != nil:
			if len(failed) < 3 {
				failed = append(failed, fmt.Sprintf("%s: %v", d.ID, err))
			}
			continue
		default:
			d.Seq, d.AssignedAt, d.Phase = ds.Seq, now, PhaseAssigned
			sent = append(sent, d)
			left--
		}
		rn.touch(d)
	}
	if len(failed) > 0 {
		r.LastError = "assigning: " + strings.Join(failed, "; ")
	} else if len(batch) > 0 {
		r.LastError = ""
	}
	if left <= 0 {
		return true, "", sent
	}
	var why []string
	if inWindow > 0 {
		why = append(why, fmt.Sprintf("%d outside their maintenance window", inWindow))
	}
	if noSlot > 0 {
		why = append(why, fmt.Sprintf("%d for a download slot (maxConcurrentDownloads %d)", noSlot, r.Spec.Limits.MaxConcurrentDownloads))
	}
	if unread > 0 {
		why = append(why, fmt.Sprintf("%d unreadable in the inventory", unread))
	}
	if len(failed) > 0 {
		why = append(why, fmt.Sprintf("%d failed to send (retried)", len(failed)))
	}
	return false, fmt.Sprintf("%d of %d devices not yet assigned (%s)", left, step.Size, strings.Join(why, ", ")), sent
}

// count recomputes the progress counters.
func (rn *run) count(viewErr error) {
	p := Progress{}
	for _, d := range rn.devs {
		if d.Mode != ModeNone {
			p.Assigned++
		}
		switch d.Phase {
		case PhaseAssigning, PhaseAssigned, PhaseInstalling:
			p.Installing++
		case PhaseInstalled:
			if d.Mode == ModeShadow {
				p.Shadowing++
			} else {
				p.Installed++
			}
		case PhaseFailed:
			p.Failed++
		case PhaseRemoved:
			p.Removed++
		}
		switch d.Rollback {
		case RollbackSent:
			p.RollbackSent++
		case RollbackSkipped:
			p.RollbackSkipped++
		}
	}
	rn.r.Progress = p
	if viewErr != nil {
		rn.r.LastError = viewErr.Error()
	}
}

// nextStep closes the current step and starts the next (skipping waves
// that add no device), or finishes the rollout.
func (e *Engine) nextStep(ctx context.Context, rn *run, now time.Time, typ EventType, msg string) {
	r := rn.r
	ev := rn.event(now, typ, r.Step, msg)
	ev.Gates = r.Gates
	r.Step++
	for r.Step < len(r.Steps) && r.Step > 0 && r.Steps[r.Step].Kind == StepWave &&
		r.Steps[r.Step-1].Kind == StepWave && r.Steps[r.Step].Size == r.Steps[r.Step-1].Size {
		rn.event(now, EventStepSkipped, r.Step, fmt.Sprintf("step %q adds no device (%d, as the step before): skipped", r.Steps[r.Step].Name, r.Steps[r.Step].Size))
		r.Step++
	}
	r.BakeStart, r.BakeUntil, r.Deadline, r.Promoted = time.Time{}, time.Time{}, time.Time{}, false
	r.Progress.Waiting = ""
	if r.Step >= len(r.Steps) {
		r.State, r.Reason = StateSucceeded, ""
		rn.release = true
		rn.event(now, EventSucceeded, -1, fmt.Sprintf("%s: every step passed", describe(r)))
		e.log.Info("rollout: succeeded", "rollout", r.ID)
		return
	}
	r.StepStarted, r.Gates = now, nil
	rn.event(now, EventStepStarted, r.Step, stepMessage(r, r.Step))
}

// breach records a failed gate and rolls back (or pauses, with
// rollback.auto false).
func (e *Engine) breach(ctx context.Context, rn *run, g GateResult, evidence bool, now time.Time) {
	r := rn.r
	step := r.Steps[r.Step]
	b := &Breach{GateResult: g, Step: r.Step, StepName: step.Name, Evidence: evidence, At: now}
	r.Breach = b
	msg := breachText(b)
	ev := rn.event(now, EventBreach, r.Step, msg)
	ev.Breach, ev.Gates = b, r.Gates
	e.log.Warn("rollout: gate breached", "rollout", r.ID, "gate", g.Gate, "value", g.Value, "threshold", g.Threshold, "evidence", evidence)
	if !r.Spec.Rollback.AutoRollback() {
		r.State, r.PausedAt, r.Reason = StatePaused, now, "paused (rollback.auto is false): "+msg
		r.Progress.Waiting = ""
		rn.event(now, EventPaused, r.Step, r.Reason)
		return
	}
	e.startRollback(ctx, rn, now, msg)
}

func breachText(b *Breach) string {
	if b.Evidence {
		return fmt.Sprintf("not enough evidence for %s on step %d %q by the deadline: %d of %d reports",
			b.Gate, b.Step+1, b.StepName, b.Reports, b.MinReports)
	}
	op := ">"
	if b.Gate == GateInstallSuccess || b.Gate == GateShadowAgreement {
		op = "<"
	}
	return fmt.Sprintf("%s breached on step %d %q: %s %s threshold %s (%d reports)",
		b.Gate, b.Step+1, b.StepName, fmtFloat(b.Value), op, fmtFloat(b.Threshold), b.Reports)
}

func fmtFloat(v float64) string { return fmt.Sprintf("%.4g", v) }

// startRollback moves rn to rolling_back, writes that, and sends the
// rollbacks.
func (e *Engine) startRollback(ctx context.Context, rn *run, now time.Time, reason string) {
	r := rn.r
	r.State, r.Reason, r.Progress.Waiting = StateRollingBack, reason, ""
	rn.event(now, EventRollback, r.Step, "rolling every device of the rollout back to the version it ran before: "+reason)
	if err := e.flush(rn); err != nil {
		r.LastError = err.Error()
		return // the next tick sends them
	}
	e.sendRollbacks(ctx, rn, now)
}

// sendRollbacks tells every device the rollout assigned to return to the
// version it ran before (action rollback: the agent swaps to its
// last-known-good slot). Devices not reached yet are retried at the next
// tick; once all are done the rollout is rolled_back and its devices are
// released.
func (e *Engine) sendRollbacks(ctx context.Context, rn *run, now time.Time) {
	r := rn.r
	pending := 0
	var failed []string
	for _, d := range rn.devs {
		if d.Mode == ModeNone || d.Rollback != RollbackNone || d.Phase == PhaseSkipped {
			continue
		}
		target := rn.bundleFor(d)
		switch {
		case d.Previous == nil:
			d.Rollback, d.Note = RollbackSkipped, "ran no version before the rollout: nothing to return to"
		case *d.Previous == target && d.Mode == ModeInstall:
			d.Rollback, d.Note = RollbackSkipped, "already ran "+target.ID()+" before the rollout"
		default:
			ds, err := e.fleet.Assign(ctx, d.ID, Assignment{RolloutID: r.ID, Action: protocol.ActionRollback, Bundle: *d.Previous})
			switch {
			case errors.Is(err, inventory.ErrNotFound):
				d.Rollback, d.Note = RollbackSkipped, "gone from the inventory"
			case err != nil:
				pending++
				if len(failed) < 3 {
					failed = append(failed, fmt.Sprintf("%s: %v", d.ID, err))
				}
				continue
			default:
				d.Rollback, d.RollbackSeq = RollbackSent, ds.Seq
			}
		}
		rn.touch(d)
	}
	rn.count(nil)
	if pending > 0 {
		r.LastError = fmt.Sprintf("rollback: %d devices not reached yet (retried): %s", pending, strings.Join(failed, "; "))
		return
	}
	r.State, r.LastError = StateRolledBack, ""
	rn.release = true
	rn.event(now, EventRolledBack, -1, fmt.Sprintf("rollback sent to %d devices (%d had nothing to return to)", r.Progress.RollbackSent, r.Progress.RollbackSkipped))
	e.log.Info("rollout: rolled back", "rollout", r.ID, "sent", r.Progress.RollbackSent, "skipped", r.Progress.RollbackSkipped)
}
