package telemetry

// Ingest: storing a device's batch exactly once, in the three durable
// steps the package documentation describes, serialized per device.

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Result says what Ingest did with a batch.
type Result struct {
	// Delivered counts the records delivered for the first time (now
	// stored and counted).
	Delivered int
	// Duplicates counts the records delivered before.
	Duplicates int
}

// SeenFunc is the dedup oracle Ingest consults: it records ids (of one
// device and epoch) as seen, durably, and reports for each whether it was
// seen before. fleetd passes inventory.Store.SeenRecords.
type SeenFunc func(ids []uint64) (duplicate []bool, err error)

// per-record outcome of the stage step.
const (
	outInserted   = iota // written now, pending
	outRecovering        // found pending from an interrupted Ingest
	outPresent           // held and confirmed: a duplicate
)

// Ingest stores recs, delivered by device from outbox epoch, and counts
// exactly the records not delivered before (see the package
// documentation). Every record's Device and Epoch must be device and
// epoch; Received is set to now. What Ingest stored is durable when it
// returns without error; after an error the caller refuses the delivery
// and the device delivers again.
func (s *Store) Ingest(device, epoch string, recs []Record, seen SeenFunc) (Result, error) {
	if err := checkIDs(device, epoch); err != nil {
		return Result{}, err
	}
	if len(recs) == 0 {
		return Result{}, nil
	}
	now := s.now()
	vals := make([][]byte, len(recs))
	for i := range recs {
		r := &recs[i]
		if r.Device != device || r.Epoch != epoch {
			return Result{}, fmt.Errorf("%w: record %d is of device %q epoch %q, not %q %q", ErrInvalid, i, r.Device, r.Epoch, device, epoch)
		}
		if r.ID == 0 {
			return Result{}, fmt.Errorf("%w: device %q: record at index %d has id 0", ErrInvalid, device, i)
		}
		if !validKind(r.Kind) {
			return Result{}, fmt.Errorf("%w: device %q: record %d: kind %q is not a token", ErrInvalid, device, r.ID, r.Kind)
		}
		if len(r.Payload) == 0 {
			return Result{}, fmt.Errorf("%w: device %q: record %d has no payload", ErrInvalid, device, r.ID)
		}
		r.Received = now
		v, err := json.Marshal(r)
		if err != nil {
			return Result{}, fmt.Errorf("telemetry: encoding record %d of %q: %w", r.ID, device, err)
		}
		vals[i] = v
	}

	defer s.locks.Lock(device)()

	// 1. Stage.
	outs := make([]int, len(recs))
	err := s.db.Batch(func(tx *bolt.Tx) error {
		db, err := deviceBucket(tx, device, true)
		if err != nil {
			return err
		}
		tb, kb, mb := db.Bucket(bucketTime), db.Bucket(bucketKeys), db.Bucket(bucketCounts)
		held := getU64(mb, keyHeld)
		inBatch := make(map[uint64]bool, len(recs))
		for i, r := range recs {
			ik := idxKey(epoch, r.ID)
			switch v := kb.Get(ik); {
			case inBatch[r.ID]:
				outs[i] = outPresent
			case v == nil:
				tk := append(timeKey(r.Time), ik...)
				if err := tb.Put(tk, vals[i]); err != nil {
					return err
				}
				if err := kb.Put(ik, append(tk[:8:8], statePending)); err != nil {
					return err
				}
				held++
				outs[i] = outInserted
			case len(v) == 9 && v[8] == statePending:
				outs[i] = outRecovering
			default:
				outs[i] = outPresent
			}
			inBatch[r.ID] = true
		}
		return mb.Put(keyHeld, u64(held))
	})
	if err != nil {
		return Result{}, fmt.Errorf("telemetry: staging %d records of %q: %w", len(recs), device, err)
	}

	// 2. Ask the oracle about what was staged.
	var ask []uint64
	for i, o := range outs {
		if o != outPresent {
			ask = append(ask, recs[i].ID)
		}
	}
	var dup []bool
	if len(ask) > 0 {
		if dup, err = seen(ask); err != nil {
			return Result{}, fmt.Errorf("telemetry: dedup of %d records of %q: %w", len(ask), device, err)
		}
		if len(dup) != len(ask) {
			return Result{}, fmt.Errorf("telemetry: dedup of %q answered %d results for %d ids", device, len(dup), len(ask))
		}
	}

	// 3. Commit.
	var res Result
	err = s.db.Batch(func(tx *bolt.Tx) error {
		res = Result{}
		db, err := deviceBucket(tx, device, true)
		if err != nil {
			return err
		}
		tb, kb, mb := db.Bucket(bucketTime), db.Bucket(bucketKeys), db.Bucket(bucketCounts)
		held := getU64(mb, keyHeld)
		j := 0
		for i, r := range recs {
			if outs[i] == outPresent {
				res.Duplicates++
				continue
			}
			d := dup[j]
			j++
			ik := idxKey(epoch, r.ID)
			v := kb.Get(ik)
			if len(v) != 9 || v[8] != statePending {
				// Pruned in between (only a full device can do that):
				// it was stored; count what the oracle says.
				if d {
					res.Duplicates++
				} else {
					res.Delivered++
				}
				continue
			}
			if outs[i] == outInserted && d {
				// A redelivery of a record pruned long ago.
				if err := tb.Delete(append(bytes.Clone(v[:8]), ik...)); err != nil {
					return err
				}
				if err := kb.Delete(ik); err != nil {
					return err
				}
				held--
				res.Duplicates++
				continue
			}
			if err := kb.Put(ik, append(bytes.Clone(v[:8]), stateConfirmed)); err != nil {
				return err
			}
			res.Delivered++
		}
		if held, err = s.trim(tb, kb, held); err != nil {
			return err
		}
		if err := mb.Put(keyHeld, u64(held)); err != nil {
			return err
		}
		if err := addU64(mb, keyDelivered, uint64(res.Delivered)); err != nil {
			return err
		}
		return addU64(mb, keyDuplicates, uint64(res.Duplicates))
	})
	if err != nil {
		return Result{}, fmt.Errorf("telemetry: committing %d records of %q: %w", len(recs), device, err)
	}
	return res, nil
}
