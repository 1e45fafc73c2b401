package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// PhaseStarting is the install phase the reported state shows between the
// guard accepting a desired state and Apply reporting its first phase.
// Consumers treat phases they do not know as opaque (docs/protocol.md).
const PhaseStarting protocol.InstallPhase = "starting"

// Event reasons the uplink writes besides protocol's refusal reasons.
const (
	// ReasonSuperseded: the install was cancelled for a newer desired state.
	ReasonSuperseded = "superseded"
	// ReasonInterrupted: the agent stopped during this install maxAttempts
	// times (crash or restart); the uplink gives up on it.
	ReasonInterrupted = "interrupted"
	// ReasonInstructed: a rollback carried out because fleetd asked for it.
	ReasonInstructed = "instructed"
	// ReasonUnsendable: an outbox record no message can carry was dropped.
	ReasonUnsendable = "unsendable"
	// ReasonState: the uplink could not write its state file.
	ReasonState = "state"
)

const (
	// refusalQueue bounds the refusals waiting for the worker to append
	// their events; beyond it they are still counted and logged.
	refusalQueue = 64
	// maxAttempts bounds how often an accepted desired state is started:
	// once, plus resumes after the agent stopped in the middle of it.
	maxAttempts = 3
	// eventTimeout bounds one outbox Append of an event, detached from
	// Run's context so that shutdown does not lose events.
	eventTimeout = 10 * time.Second
)

var errSuperseded = errors.New("superseded by a newer desired state")

// latest is the size-1 slot between the paho handler and the worker: a
// newer desired state replaces one that has not started yet.
type latest struct {
	mu    sync.Mutex
	d     *protocol.DesiredState
	ready chan struct{} // cap 1: d was set
}

// put stores d unless the slot holds a higher seq. It returns what was
// dropped (the replaced one, or d itself), if anything.
func (l *latest) put(d *protocol.DesiredState) (dropped *protocol.DesiredState) {
	l.mu.Lock()
	if l.d != nil && l.d.Seq > d.Seq {
		l.mu.Unlock()
		return d
	}
	dropped, l.d = l.d, d
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
	return dropped
}

func (l *latest) take() *protocol.DesiredState {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.d
	l.d = nil
	return d
}

// applying is the Apply in progress.
type applying struct {
	seq    uint64
	cancel context.CancelCauseFunc
}

// attempt counts the attempts at one seq (Uplink.attempt, under mu).
type attempt struct {
	seq uint64
	n   int
}

// retry is a desired state whose Apply failed transiently, waiting for
// its next attempt (Uplink.retry, used by the worker goroutine only).
type retry struct {
	d     *protocol.DesiredState
	timer *time.Timer
}

// refusal is a refused desired state whose event the worker appends.
type refusal struct {
	d   *protocol.DesiredState // nil if it did not decode
	err error
	at  time.Time
}

// onDesired is the paho handler of the desired topic. It never blocks:
// decode, count and log a refusal, hand the rest to the worker.
func (u *Uplink) onDesired(_ mqtt.Client, m mqtt.Message) {
	p := m.Payload()
	if len(p) == 0 {
		// fleetd cleared the retained message: nothing to do.
		u.log.Info("uplink: desired state cleared")
		return
	}
	d, err := protocol.DecodeDesired(p)
	if err != nil {
		u.refuse(nil, err)
		return
	}
	u.supersede(d)
	if dropped := u.pending.put(d); dropped != nil {
		u.stats.superseded.Add(1)
		u.log.Info("uplink: desired state superseded before it ran", "seq", dropped.Seq)
	}
}

// supersede cancels the Apply in progress if d is newer and would pass
// the guard (so that neither a replay nor garbage can interrupt one).
func (u *Uplink) supersede(d *protocol.DesiredState) {
	u.mu.Lock()
	a := u.applying
	u.mu.Unlock()
	if a.cancel == nil || d.Seq <= a.seq {
		return
	}
	g := u.state.guard(u.cfg.DeviceID, u.cfg.MaxSkew)
	if g.Check(d, time.Now()) != nil {
		return
	}
	u.log.Info("uplink: cancelling the install in progress for a newer desired state", "seq", a.seq, "newer", d.Seq)
	a.cancel(errSuperseded)
}

// refuse counts and logs a refused desired state and queues its event for
// the worker without blocking.
func (u *Uplink) refuse(d *protocol.DesiredState, err error) {
	reason := protocol.ReasonOf(err)
	u.stats.refused.Inc(reason)
	args := []any{"reason", reason, "err", err}
	if d != nil {
		args = append(args, "seq", d.Seq)
	}
	u.log.Warn("uplink: desired state refused", args...)
	select {
	case u.refusals <- refusal{d: d, err: err, at: time.Now().UTC()}:
	default:
		u.log.Error("uplink: refusal queue full; desired.refused event not recorded (still counted)", "reason", reason)
	}
}

// work is the worker goroutine: it appends refusal events and runs
// desired states through the guard and Apply, one at a time.
func (u *Uplink) work(ctx context.Context) {
	for {
		var retryC <-chan time.Time
		if u.retry != nil {
			retryC = u.retry.timer.C
		}
		select {
		case <-ctx.Done():
			// Refusals already counted still get their events.
			for {
				select {
				case r := <-u.refusals:
					u.refusalEvent(r)
				default:
					return
				}
			}
		case r := <-u.refusals:
			u.refusalEvent(r)
		case <-u.pending.ready:
			if d := u.pending.take(); d != nil {
				u.handleDesired(ctx, d)
			}
		case <-retryC:
			d := u.retry.d
			u.retry = nil
			u.retryDesired(ctx, d)
		}
	}
}

func (u *Uplink) refusalEvent(r refusal) {
	e := protocol.Event{
		Time:    r.at,
		Type:    protocol.EventDesiredRefused,
		Reason:  protocol.ReasonOf(r.err),
		Message: protocol.Truncate(r.err.Error(), 1024),
	}
	if r.d != nil {
		e.Seq, e.RolloutID = r.d.Seq, r.d.RolloutID
		e.Bundle = &protocol.BundleID{Name: r.d.Bundle.Name, Version: r.d.Bundle.Version}
	}
	u.appendEvent(e)
}

// handleDesired runs d through the guard and, if accepted, Apply.
func (u *Uplink) handleDesired(ctx context.Context, d *protocol.DesiredState) {
	if r := u.retry; r != nil && r.d.Seq == d.Seq {
		// Redelivered (a reconnect) while it waits for its next attempt:
		// the backoff decides when, not the connection.
		u.stats.duplicates.Add(1)
		u.log.Debug("uplink: desired state already waiting to be retried", "seq", d.Seq)
		return
	}
	st := u.state.get()
	g := protocol.Guard{DeviceID: u.cfg.DeviceID, LastSeq: st.AcceptedSeq, MaxSkew: u.cfg.MaxSkew}
	// The accepted seq again, while its Apply never finished: the agent
	// stopped in the middle of it. Resume, if it is still valid.
	resume := d.Seq == st.AcceptedSeq && st.DoneSeq < st.AcceptedSeq
	if resume {
		g.LastSeq = d.Seq - 1
	}
	if err := g.Check(d, time.Now()); err != nil {
		switch {
		case errors.Is(err, protocol.ErrDuplicate):
			u.stats.duplicates.Add(1)
			u.log.Debug("uplink: desired state already applied", "seq", d.Seq)
		case resume:
			// Accepted once, but it expired before it could be finished.
			u.finishUnapplied(d, err, protocol.ReasonOf(err))
		default:
			u.refuse(d, err)
		}
		return
	}
	var err error
	if resume {
		if st.Attempts >= maxAttempts {
			u.finishUnapplied(d, fmt.Errorf("the agent stopped during this install %d times; not trying again", st.Attempts), ReasonInterrupted)
			return
		}
		err = u.state.resume()
	} else {
		err = u.state.accept(d.Seq)
	}
	if err != nil {
		// Without the seq on disk a restart could accept an older
		// instruction: do not act on this one.
		u.refuse(d, fmt.Errorf("could not record the accepted seq: %w", err))
		return
	}
	if u.retry != nil {
		// A newer desired state replaces the one waiting for a retry.
		u.retry.timer.Stop()
		u.retry = nil
	}
	u.apply(ctx, d, resume)
}

// retryDesired makes the next attempt at d, which failed transiently, if
// it is still valid.
func (u *Uplink) retryDesired(ctx context.Context, d *protocol.DesiredState) {
	g := protocol.Guard{DeviceID: u.cfg.DeviceID, LastSeq: d.Seq - 1, MaxSkew: u.cfg.MaxSkew}
	if err := g.Check(d, time.Now()); err != nil {
		u.finishUnapplied(d, err, protocol.ReasonOf(err))
		return
	}
	if err := u.state.resume(); err != nil {
		u.log.Error("uplink: could not record an install attempt; trying again later", "seq", d.Seq, "err", err)
		if next, ok := u.scheduleRetry(d); ok {
			u.retrying(d, err, ReasonState, next)
		} else {
			u.finishUnapplied(d, err, ReasonState)
		}
		return
	}
	u.apply(ctx, d, false)
}

// scheduleRetry sets d's next attempt after a jittered exponential
// backoff and reports d retrying, unless d would expire first (then it
// returns false and d is not retried).
func (u *Uplink) scheduleRetry(d *protocol.DesiredState) (next time.Time, ok bool) {
	u.mu.Lock()
	n := 1
	if u.attempt.seq == d.Seq {
		n = u.attempt.n
	}
	u.mu.Unlock()
	wait := retryWait(u.cfg.RetryMin, u.cfg.RetryMax, n)
	next = time.Now().Add(wait).UTC()
	if !next.Before(d.ExpiresAt) {
		return next, false
	}
	// The Apply finished: a restart while d waits resumes it as a first
	// attempt, not as one more interrupted install.
	if err := u.state.update(func(st *state) { st.Attempts = 0 }); err != nil {
		u.log.Error("uplink: could not record a failed attempt", "seq", d.Seq, "err", err)
	}
	u.retry = &retry{d: d, timer: time.NewTimer(wait)}
	return next, true
}

// retryWait is the wait before attempt n+1: min doubling per attempt up
// to max, with "equal jitter" (uniform in [w/2, w]) so that devices that
// failed together do not retry together.
func retryWait(lo, hi time.Duration, n int) time.Duration {
	w := lo
	for i := 1; i < n && w < hi; i++ {
		w *= 2
	}
	w = min(w, hi)
	half := w / 2
	return half + rand.N(w-half+1)
}

// finishUnapplied gives up on an accepted desired state whose Apply was
// interrupted or failed transiently and cannot be tried again (expired,
// or interrupted too often): it reports the install failed and marks it
// done.
func (u *Uplink) finishUnapplied(d *protocol.DesiredState, err error, reason string) {
	u.log.Error("uplink: giving up on an install", "seq", d.Seq, "reason", reason, "err", err)
	u.stats.applyFailed.Add(1)
	u.setFailed(d, err, reason)
	u.appendEvent(u.resultEvent(d, nil, err, reason))
	u.markDone(d.Seq)
}

// apply calls the agent's Apply and reports what happened.
func (u *Uplink) apply(ctx context.Context, d *protocol.DesiredState, resumed bool) {
	from := u.agent.Reported().Active
	u.mu.Lock()
	if u.attempt.seq != d.Seq {
		u.attempt = attempt{seq: d.Seq}
	}
	u.attempt.n++
	n := u.attempt.n
	u.mu.Unlock()
	u.log.Info("uplink: applying desired state", "seq", d.Seq, "action", d.Action, "bundle", d.Bundle.ID(), "resumed", resumed, "attempt", n)
	u.setInstall(d, PhaseStarting, nil, nil)
	data, _ := json.Marshal(map[string]any{"action": d.Action, "resumed": resumed, "attempt": n})
	e := installEvent(protocol.EventInstallStarted, d)
	e.From, e.Data = from, data
	u.appendEvent(e)
	u.kickReport()

	actx, cancel := context.WithCancelCause(ctx)
	u.mu.Lock()
	u.applying = applying{seq: d.Seq, cancel: cancel}
	u.mu.Unlock()
	var finished atomic.Bool
	err := u.agent.Apply(actx, d, u.progress(d, &finished))
	finished.Store(true)
	cause := context.Cause(actx)
	cancel(nil)
	u.mu.Lock()
	u.applying = applying{}
	u.mu.Unlock()

	switch {
	case err == nil:
		u.stats.applied.Add(1)
		u.log.Info("uplink: desired state applied", "seq", d.Seq, "bundle", d.Bundle.ID())
		u.setInstall(d, protocol.PhaseSucceeded, nil, nil)
		u.appendEvent(u.resultEvent(d, from, nil, ""))
	case ctx.Err() != nil:
		// Shutting down: DoneSeq stays behind, so the retained desired
		// state resumes the install after the restart.
		u.log.Info("uplink: install interrupted by shutdown; it resumes on restart", "seq", d.Seq, "err", err)
		return
	default:
		reason := reasonOf(err)
		if errors.Is(cause, errSuperseded) {
			reason = ReasonSuperseded
		} else if isTransient(err) {
			if next, ok := u.scheduleRetry(d); ok {
				u.retrying(d, err, reason, next)
				return
			}
		}
		u.stats.applyFailed.Add(1)
		u.log.Warn("uplink: desired state failed", "seq", d.Seq, "bundle", d.Bundle.ID(), "reason", reason, "err", err)
		u.setFailed(d, err, reason)
		u.appendEvent(u.resultEvent(d, from, err, reason))
	}
	u.markDone(d.Seq)
}

// retrying reports that an attempt at d failed with err and that d waits
// for its next attempt at next (u.retry).
func (u *Uplink) retrying(d *protocol.DesiredState, err error, reason string, next time.Time) {
	u.stats.retries.Add(1)
	u.setInstallStatus(d, protocol.PhaseRetrying, nil, err, reason, &next)
	u.mu.Lock()
	n := u.attempt.n
	u.mu.Unlock()
	u.log.Warn("uplink: install attempt failed; trying again", "seq", d.Seq, "bundle", d.Bundle.ID(), "reason", reason,
		"attempt", n, "next_attempt", next.Format(time.RFC3339), "err", err)
	data, _ := json.Marshal(map[string]any{"attempt": n, "nextAttemptAt": next})
	e := installEvent(protocol.EventInstallRetrying, d)
	e.Reason, e.Message, e.Data = reason, protocol.Truncate(err.Error(), 1024), data
	u.appendEvent(e)
	u.kickReport()
}

func (u *Uplink) markDone(seq uint64) {
	if err := u.state.done(seq); err != nil {
		u.log.Error("uplink: could not record a finished install", "seq", seq, "err", err)
	}
	u.kickReport()
}

// installEvent is an event of type typ about the install of d.
func installEvent(typ protocol.EventType, d *protocol.DesiredState) protocol.Event {
	return protocol.Event{
		Type:      typ,
		Seq:       d.Seq,
		RolloutID: d.RolloutID,
		Bundle:    &protocol.BundleID{Name: d.Bundle.Name, Version: d.Bundle.Version},
	}
}

// resultEvent builds the install.succeeded/failed (rollback.succeeded/
// failed for ActionRollback) event of d.
func (u *Uplink) resultEvent(d *protocol.DesiredState, from *protocol.BundleID, err error, reason string) protocol.Event {
	e := installEvent("", d) // the type depends on the outcome
	e.From, e.Reason = from, reason
	rollback := d.Action == protocol.ActionRollback
	switch {
	case err == nil && rollback:
		e.Type, e.Reason = protocol.EventRollbackSucceeded, ReasonInstructed
	case err == nil:
		e.Type = protocol.EventInstallSucceeded
	case rollback:
		e.Type = protocol.EventRollbackFailed
	default:
		e.Type = protocol.EventInstallFailed
	}
	if err != nil {
		e.Message = protocol.Truncate(err.Error(), 1024)
	}
	return e
}

// progress returns the ProgressFunc of d's Apply; it ignores calls made
// after Apply returned (finished).
func (u *Uplink) progress(d *protocol.DesiredState, finished *atomic.Bool) ProgressFunc {
	return func(phase protocol.InstallPhase, p *protocol.Progress) {
		if finished.Load() {
			return
		}
		if !u.setInstall(d, phase, p, nil) {
			u.kickReport()
			return
		}
		data, _ := json.Marshal(map[string]any{"phase": phase})
		e := installEvent(protocol.EventInstallProgress, d)
		e.Data = data
		if p != nil {
			cp := *p
			e.Progress = &cp
		}
		u.appendEvent(e)
		u.kickReport()
	}
}

// setInstall updates the install status of the reported state and says
// whether the phase changed.
func (u *Uplink) setInstall(d *protocol.DesiredState, phase protocol.InstallPhase, p *protocol.Progress, err error) bool {
	return u.setInstallStatus(d, phase, p, err, "", nil)
}

// setFailed reports d's install failed for good: err, with its reason.
func (u *Uplink) setFailed(d *protocol.DesiredState, err error, reason string) {
	u.setInstallStatus(d, protocol.PhaseFailed, nil, err, reason, nil)
}

func (u *Uplink) setInstallStatus(d *protocol.DesiredState, phase protocol.InstallPhase, p *protocol.Progress, err error, reason string, next *time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	prev := u.install
	if prev != nil && prev.Seq == d.Seq && prev.Phase == phase && phase != protocol.PhaseRetrying {
		if p != nil {
			cp := *p
			prev.Progress = &cp
		}
		return false
	}
	in := &protocol.InstallStatus{
		Seq:           d.Seq,
		Bundle:        protocol.BundleID{Name: d.Bundle.Name, Version: d.Bundle.Version},
		Phase:         phase,
		Reason:        reason,
		NextAttemptAt: next,
		Time:          time.Now().UTC(),
	}
	if u.attempt.seq == d.Seq {
		in.Attempt = u.attempt.n
	}
	if p != nil {
		cp := *p
		in.Progress = &cp
	}
	if err != nil {
		in.Error = protocol.Truncate(err.Error(), 1024)
	}
	u.install = in
	return true
}

// reasonOf returns the reason an Apply error carries (WithReason), or ""
// if it carries none or one the protocol would refuse.
func reasonOf(err error) string {
	var r interface{ Reason() string }
	if !errors.As(err, &r) {
		return ""
	}
	probe := protocol.Event{V: protocol.Version, DeviceID: "d", ID: 1, Time: time.Unix(1, 0), Type: "x", Reason: r.Reason()}
	if probe.Validate() != nil {
		return ""
	}
	return r.Reason()
}
