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

// recordOverhead estimates the JSON bytes a record adds to a batch
// besides its kind and payload ({"id":...,"kind":"","time":"...","payload":}).
const recordOverhead = 96

// drain is the outbox drainer: oldest record first, one message at a time
// (stop-and-wait), each record acked in the outbox only after the broker's
// PUBACK for the message carrying it. A failed publish is retried with the
// same records after a backoff, or after the reconnect if the connection
// was lost; nothing is skipped except a record no message can carry
// (logged, counted, reported). It returns an error only when the outbox
// fails (closed underneath the uplink).
//
// What the outbox holds when a connection comes up is its backlog (after
// a cut, possibly hours of records). Until the backlog is sent, the
// drainer alternates messages: one of the oldest backlog records, then one
// of the records appended since the connection came up, if any, so that
// fresh telemetry waits for one message, not for the whole backlog. Each
// stream goes in id order; fleetd deduplicates by id and keeps the two
// streams apart at the cost of one run in its window.
func (u *Uplink) drain(ctx context.Context) error {
	var bo backoff
	bo.min, bo.max = u.cfg.MinBackoff, u.cfg.MaxBackoff
	var (
		last     *conn
		mark     uint64 // records up to mark are the backlog; 0 when there is none
		liveTurn bool
	)
	for {
		c := u.waitConn(ctx)
		if c == nil {
			return nil
		}
		if c != last {
			last, mark, liveTurn = c, u.ob.Stats().LastID, false
		}
		var recs []outbox.Record
		var err error
		if liveTurn && mark != 0 {
			recs, err = u.ob.PeekAfter(mark, u.peekCount())
		}
		if err == nil && len(recs) == 0 {
			recs, err = u.ob.Peek(u.peekCount())
			if err == nil && (len(recs) == 0 || recs[0].ID > mark) {
				mark = 0 // the backlog is sent: plain FIFO from here
			}
		}
		liveTurn = !liveTurn
		if err != nil {
			if errors.Is(err, outbox.ErrClosed) {
				return fmt.Errorf("uplink: drain: %w", err)
			}
			d := bo.next()
			u.log.Error("uplink: reading the outbox", "err", err, "retry_in", d)
			sleep(ctx, d)
			continue
		}
		if len(recs) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case _, ok := <-u.ob.Wait():
				if !ok {
					return fmt.Errorf("uplink: drain: %w", outbox.ErrClosed)
				}
			}
			continue
		}
		for len(recs) > 0 {
			n, err := u.sendNext(ctx, c, recs)
			if err != nil {
				if stop, err := u.publishFailed(ctx, c, &bo, err); stop {
					return err
				}
				break
			}
			bo.reset()
			recs = recs[n:]
			if mark != 0 {
				break // one message a turn while a backlog remains
			}
		}
	}
}

// publishFailed handles a failed sendNext: it reports whether the drainer
// must stop (with the error to return), after waiting out the backoff of
// a failure that was not a lost connection.
func (u *Uplink) publishFailed(ctx context.Context, c *conn, bo *backoff, err error) (bool, error) {
	if errors.Is(err, outbox.ErrClosed) {
		return true, fmt.Errorf("uplink: drain: %w", err)
	}
	if ctx.Err() != nil {
		return true, nil
	}
	u.stats.publishFailures.Add(1)
	if errors.Is(err, errConnLost) || c.isLost() {
		u.log.Info("uplink: publish interrupted by a lost connection; resending after the reconnect", "err", err)
		return false, nil
	}
	d := bo.next()
	u.log.Warn("uplink: publish failed; retrying the same records", "err", err, "retry_in", d.Round(time.Millisecond))
	sleep(ctx, d)
	return false, nil
}

// peekCount is how many records to read at once: BatchRecords, fewer when
// the records are large on average, so that a backlog of big records is
// not read into memory BatchRecords at a time.
func (u *Uplink) peekCount() int {
	n := u.cfg.BatchRecords
	if s := u.ob.Stats(); s.Records > 0 {
		if avg := s.Bytes / int64(s.Records); avg > 0 {
			n = int(min(int64(n), max(1, 2*int64(u.cfg.BatchBytes)/avg)))
		}
	}
	return n
}

// sendNext publishes the message that carries the oldest of recs (an
// event alone, or a telemetry batch of the leading non-event records),
// acks those records in the outbox after the PUBACK and returns how many
// of recs it consumed.
func (u *Uplink) sendNext(ctx context.Context, c *conn, recs []outbox.Record) (int, error) {
	if recs[0].Kind == RecordEvent {
		payload, err := u.eventFromRecord(recs[0])
		if err != nil {
			return 1, u.unsendable(recs[0], err)
		}
		if err := u.publish(ctx, c, u.topics.events, false, payload); err != nil {
			return 0, err
		}
		if err := u.ob.Ack(recs[0].ID); err != nil {
			return 0, fmt.Errorf("ack: %w", err)
		}
		u.stats.events.Add(1)
		u.stats.records.Add(1)
		return 1, nil
	}

	batch, err := u.takeBatch(recs)
	if err != nil {
		return 1, u.unsendable(recs[0], err)
	}
	var payload []byte
	for {
		payload, err = u.codec.EncodeTelemetry(&protocol.TelemetryBatch{
			V: protocol.Version, DeviceID: u.cfg.DeviceID, Epoch: u.cfg.Epoch, Records: batch,
		})
		if !errors.Is(err, protocol.ErrTooLarge) || len(batch) == 1 {
			break
		}
		batch = batch[:len(batch)/2] // over the wire limit: fewer records
	}
	if err != nil {
		return 1, u.unsendable(recs[0], err)
	}
	if err := u.publish(ctx, c, u.topics.telemetry, false, payload); err != nil {
		return 0, err
	}
	ids := make([]uint64, len(batch))
	for i, r := range batch {
		ids[i] = r.ID
	}
	if err := u.ob.Ack(ids...); err != nil {
		return 0, fmt.Errorf("ack: %w", err)
	}
	u.stats.batches.Add(1)
	u.stats.records.Add(uint64(len(batch)))
	return len(batch), nil
}

// takeBatch returns the telemetry records of the longest prefix of recs
// that holds no event, no invalid record, and fits BatchBytes (at least one
// record). An error means recs[0] itself cannot be sent.
func (u *Uplink) takeBatch(recs []outbox.Record) ([]protocol.Record, error) {
	batch := make([]protocol.Record, 0, len(recs))
	size := 0
	for i, r := range recs {
		if r.Kind == RecordEvent {
			break
		}
		pr := protocol.Record{ID: r.ID, Kind: r.Kind, Time: r.Time, Payload: json.RawMessage(r.Payload)}
		if err := u.checkRecord(pr); err != nil {
			if i == 0 {
				return nil, err
			}
			break // sent on its own turn, then dropped
		}
		size += len(r.Payload) + len(r.Kind) + recordOverhead
		if i > 0 && size > u.cfg.BatchBytes {
			break
		}
		batch = append(batch, pr)
	}
	return batch, nil
}

// checkRecord applies the protocol's record rules to one record.
func (u *Uplink) checkRecord(r protocol.Record) error {
	b := protocol.TelemetryBatch{V: protocol.Version, DeviceID: u.cfg.DeviceID, Records: []protocol.Record{r}}
	return b.Validate()
}

// unsendable drops a record that no valid message can carry (its payload
// is not JSON, its kind is not a protocol token, it is too large even
// alone...): waiting would block the outbox forever. It is logged, counted
// and reported with a buffer.dropped event, and acked.
func (u *Uplink) unsendable(r outbox.Record, cause error) error {
	u.stats.unsendable.Add(1)
	u.log.Error("uplink: dropping an outbox record no message can carry", "id", r.ID, "kind", r.Kind, "bytes", len(r.Payload), "err", cause)
	data, _ := json.Marshal(map[string]any{"id": r.ID, "kind": protocol.Truncate(r.Kind, 64)})
	u.appendEvent(protocol.Event{
		Type:     protocol.EventBufferDropped,
		Reason:   ReasonUnsendable,
		Message:  protocol.Truncate(fmt.Sprintf("record %d (kind %q, %d bytes): %v", r.ID, r.Kind, len(r.Payload), cause), 1024),
		Progress: &protocol.Progress{Done: 1},
		Data:     data,
	})
	if err := u.ob.Ack(r.ID); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}
