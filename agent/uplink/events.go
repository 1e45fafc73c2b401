package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// RecordEvent is the outbox record kind of events. The uplink publishes
// records of this kind one per message on the device's events topic; every
// other kind goes into telemetry batches under its own kind
// (protocol.RecordPrediction, ...).
//
// The payload is a protocol.Event in JSON whose ID, DeviceID, Epoch and V
// the uplink sets when it publishes (the id is the outbox record id);
// AppendEvent writes one.
const RecordEvent = "event"

// AppendEvent validates e and appends it to the outbox as a RecordEvent
// record, durably. A zero e.Time is set to now. Events reach fleetd at
// least once, in outbox order, also after offline periods and restarts.
func AppendEvent(ctx context.Context, ob *outbox.Outbox, e protocol.Event) (uint64, error) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.V, e.ID, e.DeviceID, e.Epoch = 0, 0, "", ""
	// Check everything but the fields the uplink fills in.
	probe := e
	probe.V, probe.ID, probe.DeviceID = protocol.Version, 1, "device"
	if err := probe.Validate(); err != nil {
		return 0, fmt.Errorf("uplink: append event: %w", err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("uplink: append event: %w", err)
	}
	id, err := ob.Append(ctx, RecordEvent, b)
	if err != nil {
		return 0, fmt.Errorf("uplink: append %s event: %w", e.Type, err)
	}
	return id, nil
}

// Event appends e to the outbox (see AppendEvent); the agent daemon uses it
// for the events it produces itself (agent.started, provider.fallback, a
// rollback it decided on its own, ...).
func (u *Uplink) Event(ctx context.Context, e protocol.Event) error {
	_, err := AppendEvent(ctx, u.ob, e)
	return err
}

// appendEvent appends an event the uplink produces, detached from Run's
// context: a shutdown must not lose it. Failures are logged.
func (u *Uplink) appendEvent(e protocol.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if _, err := AppendEvent(ctx, u.ob, e); err != nil {
		u.log.Error("uplink: event not recorded", "type", e.Type, "seq", e.Seq, "err", err)
	}
}

// eventFromRecord turns an outbox RecordEvent record into the message to
// publish.
func (u *Uplink) eventFromRecord(r outbox.Record) ([]byte, error) {
	var e protocol.Event
	if err := json.Unmarshal(r.Payload, &e); err != nil {
		return nil, fmt.Errorf("event payload: %w", err)
	}
	e.V, e.DeviceID, e.Epoch, e.ID = protocol.Version, u.cfg.DeviceID, u.cfg.Epoch, r.ID
	if e.Time.IsZero() {
		e.Time = r.Time
	}
	return protocol.Encode(&e)
}

// WithReason wraps an Apply error with a short machine-readable reason
// ([a-z0-9][a-z0-9._-]*, e.g. "smoke-failed", "signature", "no-space")
// that the uplink puts in the install.failed event.
func WithReason(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &reasonError{reason: reason, err: err}
}

type reasonError struct {
	reason string
	err    error
}

func (e *reasonError) Error() string  { return e.err.Error() }
func (e *reasonError) Unwrap() error  { return e.err }
func (e *reasonError) Reason() string { return e.reason }

// Transient marks an Apply error as one that may pass if the desired state
// is tried again later (a download cut, a full disk, the slots busy): the
// uplink reports the install retrying and tries again with exponential
// backoff and jitter, until it succeeds, fails for a reason that is not
// transient, is superseded, or would expire. Errors not so marked are
// final for that desired state.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err}
}

type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func isTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}
