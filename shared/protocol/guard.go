package protocol

import (
	"fmt"
	"time"
)

// DefaultMaxSkew is the clock skew a Guard allows between fleetd and the
// device when MaxSkew is zero.
const DefaultMaxSkew = 5 * time.Minute

// Guard refuses replayed, stale and misaddressed desired states on the
// device (TUF's rollback and freeze attacks): it holds the seq of the last
// accepted one. The caller persists LastSeq after Accept and restores it
// on start; a Guard with LastSeq 0 accepts any valid seq.
//
// Guard is a plain value, not safe for concurrent use.
type Guard struct {
	// DeviceID, when set, is the only device a desired state may name.
	DeviceID string
	// LastSeq is the seq of the last accepted desired state.
	LastSeq uint64
	// MaxSkew is how far in the future issuedAt may be (DefaultMaxSkew
	// when zero; negative means no allowance).
	MaxSkew time.Duration
}

// Check reports whether d may be applied at now, without recording it.
// The errors, in the order checked: ErrInvalid (d itself is invalid),
// ErrWrongDevice, ErrDuplicate (seq equals LastSeq: the retained message
// redelivered, nothing to do), ErrReplay (seq below LastSeq),
// ErrNotYetValid (issuedAt beyond now plus the skew), ErrExpired (now at
// or after expiresAt).
func (g *Guard) Check(d *DesiredState, now time.Time) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if g.DeviceID != "" && d.DeviceID != g.DeviceID {
		return fmt.Errorf("%w: it names %q, this is %q", ErrWrongDevice, d.DeviceID, g.DeviceID)
	}
	if d.Seq == g.LastSeq {
		return fmt.Errorf("%w: seq %d", ErrDuplicate, d.Seq)
	}
	if d.Seq < g.LastSeq {
		return fmt.Errorf("%w: seq %d is below the last accepted %d", ErrReplay, d.Seq, g.LastSeq)
	}
	skew := g.MaxSkew
	if skew == 0 {
		skew = DefaultMaxSkew
	} else if skew < 0 {
		skew = 0
	}
	if d.IssuedAt.After(now.Add(skew)) {
		return fmt.Errorf("%w: issued at %s, more than %s after the device clock (%s)",
			ErrNotYetValid, d.IssuedAt.UTC().Format(time.RFC3339), skew, now.UTC().Format(time.RFC3339))
	}
	if !now.Before(d.ExpiresAt) {
		return fmt.Errorf("%w: expired at %s, the device clock says %s",
			ErrExpired, d.ExpiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// Accept checks d like Check and, if it may be applied, records its seq in
// LastSeq. Persist LastSeq before acting on d, so that a crash cannot
// make the device accept an older instruction again.
func (g *Guard) Accept(d *DesiredState, now time.Time) error {
	if err := g.Check(d, now); err != nil {
		return err
	}
	g.LastSeq = d.Seq
	return nil
}
