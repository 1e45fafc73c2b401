package rollout

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Operator actions. Each takes an optional note recorded in the history,
// applies at once (the rollout is advanced before the call returns) and
// returns the new status. An action the state does not allow fails with
// ErrState.

// Pause stops a running rollout or experiment: nothing more is assigned
// or evaluated, and its bake and deadline clocks stop until Resume.
func (e *Engine) Pause(ctx context.Context, id, note string) (*Rollout, error) {
	return e.act(ctx, id, func(rn *run, now time.Time) error {
		r := rn.r
		if r.State != StateRunning {
			return stateErr(r, "pause", "only a running one can be paused")
		}
		r.State, r.PausedAt, r.Reason = StatePaused, now, withNote("paused by an operator", note)
		r.Progress.Waiting = ""
		rn.event(now, EventPaused, r.Step, r.Reason)
		return nil
	})
}

// Resume continues a paused rollout; its bake and deadline are moved on
// by the time it spent paused. A rollout paused on a breach (rollback.auto
// false) evaluates its gates again: use Promote to override them.
func (e *Engine) Resume(ctx context.Context, id, note string) (*Rollout, error) {
	return e.act(ctx, id, func(rn *run, now time.Time) error {
		r := rn.r
		if r.State != StatePaused {
			return stateErr(r, "resume", "only a paused one can be resumed")
		}
		resume(r, now)
		rn.event(now, EventResumed, r.Step, withNote("resumed by an operator", note))
		return nil
	})
}

func resume(r *Rollout, now time.Time) {
	if !r.BakeStart.IsZero() && !r.PausedAt.IsZero() {
		d := now.Sub(r.PausedAt)
		r.BakeUntil, r.Deadline = r.BakeUntil.Add(d), r.Deadline.Add(d)
	}
	r.State, r.PausedAt, r.Reason, r.Breach = StateRunning, time.Time{}, "", nil
}

// Abort stops a rollout or experiment for good and releases its devices,
// leaving each where it is (running whatever it runs now; desired states
// already sent stay).
func (e *Engine) Abort(ctx context.Context, id, note string) (*Rollout, error) {
	return e.act(ctx, id, func(rn *run, now time.Time) error {
		r := rn.r
		switch r.State {
		case StateRunning, StatePaused, StateCompleted:
		default:
			return stateErr(r, "abort", "a rollback being sent cannot be aborted")
		}
		r.State, r.Reason = StateAborted, withNote("aborted by an operator", note)
		r.Progress.Waiting = ""
		rn.release = true
		rn.event(now, EventAborted, r.Step, r.Reason+": devices left as they are")
		return nil
	})
}

// Promote ends the current step of a running or paused rollout early: its
// remaining bake and its gates are skipped (once its devices are
// assigned) and the next step starts; promoting the last step completes
// the rollout. A paused rollout is resumed.
func (e *Engine) Promote(ctx context.Context, id, note string) (*Rollout, error) {
	return e.act(ctx, id, func(rn *run, now time.Time) error {
		r := rn.r
		if r.Spec.Kind == KindExperiment {
			return fmt.Errorf("%w: %s is an experiment: promote one of its arms into a rollout (PromoteExperiment)", ErrState, r.ID)
		}
		switch r.State {
		case StatePaused:
			resume(r, now)
		case StateRunning:
		default:
			return stateErr(r, "promote", "only a running or paused one can be promoted")
		}
		r.Promoted = true
		rn.event(now, EventStepPromoted, r.Step, withNote(fmt.Sprintf("step %q promoted by an operator: its bake and gates are skipped", r.Steps[r.Step].Name), note))
		return nil
	})
}

// Rollback rolls every device of the rollout back to the version it ran
// before, by hand: allowed while it is active, and after it succeeded or
// was aborted as long as no other active rollout holds its devices (they
// are held again until the rollback is sent).
func (e *Engine) Rollback(ctx context.Context, id, note string) (*Rollout, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	rn, ok := e.runs[id]
	if !ok {
		var err error
		if rn, err = e.revive(id); err != nil {
			return nil, err
		}
	}
	r := rn.r
	switch r.State {
	case StateRunning, StatePaused, StateCompleted, StateSucceeded, StateAborted:
	default:
		return nil, stateErr(r, "roll back", "it is already rolling back or rolled back")
	}
	now := e.now()
	e.runs[id] = rn
	e.startRollback(ctx, rn, now, withNote(ReasonManualRollback, note))
	if err := e.advance(ctx, rn); err != nil {
		return nil, err
	}
	return rn.snapshot(), nil
}

// ReasonManualRollback starts the Reason of a rollout an operator rolled
// back.
const ReasonManualRollback = "manual rollback by an operator"

// revive loads a finished rollout for a manual rollback, checking that no
// other active rollout holds its devices.
func (e *Engine) revive(id string) (*run, error) {
	var rn *run
	err := e.db.View(func(tx *bolt.Tx) error {
		r, err := getRollout(tx, id)
		if err != nil {
			return err
		}
		if r.State != StateSucceeded && r.State != StateAborted {
			return stateErr(r, "roll back", "only an active, succeeded or aborted one can be rolled back")
		}
		devs, err := loadDevices(tx, id)
		if err != nil {
			return err
		}
		if rn, err = e.newRun(r, devs); err != nil {
			return err
		}
		if h := holders(tx, rn.ids(), id); h != nil {
			return &ConflictError{Holders: h}
		}
		return nil
	})
	if err != nil {
		return nil, closedErr(err)
	}
	rn.acquire = true
	return rn, nil
}

// act runs an action on an active rollout, then advances it.
func (e *Engine) act(ctx context.Context, id string, fn func(*run, time.Time) error) (*Rollout, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rn, err := e.activeRun(id, "change")
	if err != nil {
		return nil, err
	}
	if err := fn(rn, e.now()); err != nil {
		return nil, err
	}
	if err := e.advance(ctx, rn); err != nil {
		return nil, err
	}
	return rn.snapshot(), nil
}

// activeRun returns the run of the active rollout id, for action (a verb
// in the error): ErrClosed after Close, ErrState if the rollout has
// finished. e.mu must be held.
func (e *Engine) activeRun(id, action string) (*run, error) {
	if e.closed {
		return nil, ErrClosed
	}
	rn, ok := e.runs[id]
	if !ok {
		r, err := e.load(id)
		if err != nil {
			return nil, err
		}
		return nil, stateErr(r, action, "it has finished")
	}
	return rn, nil
}

func (e *Engine) load(id string) (*Rollout, error) {
	var r *Rollout
	err := e.db.View(func(tx *bolt.Tx) (err error) {
		r, err = getRollout(tx, id)
		return err
	})
	return r, closedErr(err)
}

func stateErr(r *Rollout, action, why string) error {
	return fmt.Errorf("%w: cannot %s %s: it is %s (%s)", ErrState, action, r.ID, r.State, why)
}

func withNote(msg, note string) string {
	if note == "" {
		return msg
	}
	return msg + ": " + note
}
