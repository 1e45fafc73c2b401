package telemetry

// Ingest: storing a device's batch exactly once, in the three durable
// steps the package documentation describes, serialized per device.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/dedup"
)

// Result says what Ingest did with a batch.
type Result struct {
	// Delivered counts the records delivered for the first time (now
	// stored and counted).
	Delivered int
	// Duplicates counts the records delivered before.
	Duplicates int
}

// Ingest stores recs, delivered by device from outbox epoch, and counts
// exactly the records not delivered before (see the package
// documentation and controlplane/dedup). Every record's Device and Epoch
// must be device and epoch; Received is set to now. What Ingest stored is
// durable when it returns without error; after an error the caller
// refuses the delivery and the device delivers again.
func (s *Store) Ingest(device, epoch string, recs []Record, seen dedup.Oracle) (Result, error) {
	var res Result
	st, err := s.Stage(device, epoch, recs, &res)
	if err != nil {
		return Result{}, err
	}
	if err := dedup.Settle(seen, st); err != nil {
		return Result{}, fmt.Errorf("telemetry: device %q: %w", device, err)
	}
	return res, nil
}

// Stage is Ingest's first step, for a delivery whose records go to
// several stores: it stages recs and returns the stage for dedup.Settle,
// whose commit fills *res. The stage holds device's lock until it is
// settled or released.
func (s *Store) Stage(device, epoch string, recs []Record, res *Result) (*dedup.Stage, error) {
	if err := checkIDs(device, epoch); err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return &dedup.Stage{Commit: func([]bool) error { return nil }}, nil
	}
	now := s.now()
	vals := make([][]byte, len(recs))
	for i := range recs {
		r := &recs[i]
		if r.Device != device || r.Epoch != epoch {
			return nil, fmt.Errorf("%w: record %d is of device %q epoch %q, not %q %q", ErrInvalid, i, r.Device, r.Epoch, device, epoch)
		}
		if r.ID == 0 {
			return nil, fmt.Errorf("%w: device %q: record at index %d has id 0", ErrInvalid, device, i)
		}
		if !validKind(r.Kind) {
			return nil, fmt.Errorf("%w: device %q: record %d: kind %q is not a token", ErrInvalid, device, r.ID, r.Kind)
		}
		if len(r.Payload) == 0 {
			return nil, fmt.Errorf("%w: device %q: record %d has no payload", ErrInvalid, device, r.ID)
		}
		r.Received = now
		v, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("telemetry: encoding record %d of %q: %w", r.ID, device, err)
		}
		vals[i] = v
	}

	unlock := s.locks.Lock(device)
	var once sync.Once
	release := func() { once.Do(unlock) }

	// 1. Stage.
	ids := make([]uint64, len(recs))
	outs := make([]dedup.Outcome, len(recs))
	err := s.db.Batch(func(tx *bolt.Tx) error {
		db, err := deviceBucket(tx, device, true)
		if err != nil {
			return err
		}
		tb, kb, mb := db.Bucket(bucketTime), db.Bucket(bucketKeys), db.Bucket(bucketCounts)
		held := getU64(mb, keyHeld)
		inBatch := make(map[uint64]bool, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
			ik := idxKey(epoch, r.ID)
			switch v := kb.Get(ik); {
			case inBatch[r.ID]:
				outs[i] = dedup.Present
			case v == nil:
				tk := append(timeKey(r.Time), ik...)
				if err := tb.Put(tk, vals[i]); err != nil {
					return err
				}
				if err := kb.Put(ik, append(tk[:8:8], statePending)); err != nil {
					return err
				}
				held++
				outs[i] = dedup.Inserted
			case len(v) == 9 && v[8] == statePending:
				outs[i] = dedup.Recovering
			default:
				outs[i] = dedup.Present
			}
			inBatch[r.ID] = true
		}
		return mb.Put(keyHeld, u64(held))
	})
	if err != nil {
		release()
		return nil, fmt.Errorf("telemetry: staging %d records of %q: %w", len(recs), device, err)
	}
	return &dedup.Stage{IDs: ids, Outs: outs, Release: release,
		Commit: func(dup []bool) error { return s.commit(device, epoch, recs, outs, dup, res) }}, nil
}

// commit is the third step of Ingest.
func (s *Store) commit(device, epoch string, recs []Record, outs []dedup.Outcome, dup []bool, res *Result) error {
	err := s.db.Batch(func(tx *bolt.Tx) error {
		*res = Result{}
		db, err := deviceBucket(tx, device, true)
		if err != nil {
			return err
		}
		tb, kb, mb := db.Bucket(bucketTime), db.Bucket(bucketKeys), db.Bucket(bucketCounts)
		held := getU64(mb, keyHeld)
		for i, r := range recs {
			if outs[i] == dedup.Present {
				res.Duplicates++
				continue
			}
			d := dup[i]
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
			if outs[i] == dedup.Inserted && d {
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
		return fmt.Errorf("telemetry: committing %d records of %q: %w", len(recs), device, err)
	}
	return nil
}
