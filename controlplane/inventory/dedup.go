package inventory

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// SeenRecord records outbox record recordID of device id's outbox epoch
// (protocol.Event and protocol.TelemetryBatch carry both) and reports
// whether it was seen before. See SeenRecords.
func (s *Store) SeenRecord(id, epoch string, recordID uint64) (duplicate bool, err error) {
	dup, err := s.SeenRecords(id, epoch, []uint64{recordID})
	if err != nil {
		return false, err
	}
	return dup[0], nil
}

// SeenRecords records a batch of outbox record ids of device id's outbox
// epoch, in one transaction, and reports for each whether it was seen
// before (an id repeated within the batch is a duplicate the second time).
// Records are delivered at least once; a caller counts exactly the ones
// reported as not duplicate. What SeenRecords records is durable when it
// returns, so redeliveries are recognised after a restart too.
//
// Per (device, epoch) the store keeps the highest id below which every id
// was seen, plus the ids seen above it as at most Options.DedupRuns runs
// of consecutive ids. Ids in a gap that stays open while Options.DedupRuns
// later runs arrive (records the agent's outbox dropped when full) are
// given up on: if one arrives after that, it is reported as a duplicate.
// Windows of the Options.DedupEpochs most recently used epochs per device
// are kept.
func (s *Store) SeenRecords(id, epoch string, recordIDs []uint64) (duplicate []bool, err error) {
	if epoch != "" {
		if err := protocol.ValidateDeviceID(epoch); err != nil {
			return nil, fmt.Errorf("%w: device %q: epoch %q: must match [A-Za-z0-9][A-Za-z0-9._-]* (at most %d bytes)",
				ErrInvalid, id, epoch, protocol.MaxDeviceIDLen)
		}
	}
	for i, rid := range recordIDs {
		if rid == 0 {
			return nil, fmt.Errorf("%w: device %q: record id at index %d is 0 (ids start at 1)", ErrInvalid, id, i)
		}
	}
	key := append(dedupPrefix(id), epoch...)
	duplicate = make([]bool, len(recordIDs))
	var skipped uint64
	now := s.now().UnixNano()
	err = s.db.Batch(func(tx *bolt.Tx) error {
		skipped = 0
		if tx.Bucket(bucketDevices).Get([]byte(id)) == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		b := tx.Bucket(bucketDedup)
		var w *window
		if v := b.Get(key); v != nil {
			var err error
			if w, err = unmarshalWindow(v); err != nil {
				return fmt.Errorf("inventory: device %q epoch %q: %w", id, epoch, err)
			}
		} else {
			w = new(window)
			if err := s.evictEpochs(b, id); err != nil {
				return err
			}
		}
		for i, rid := range recordIDs {
			dup, sk := w.seen(rid, s.opts.DedupRuns)
			duplicate[i] = dup
			skipped += sk
		}
		w.touched = now
		return b.Put(key, w.marshal())
	})
	if err != nil {
		return nil, err
	}
	if skipped > 0 {
		s.log.Warn("inventory: dedup window full, gave up on missing record ids",
			"device", id, "epoch", epoch, "ids", skipped)
	}
	return duplicate, nil
}

// evictEpochs makes room for one more dedup window of device id, deleting
// the least recently used ones beyond Options.DedupEpochs-1.
func (s *Store) evictEpochs(b *bolt.Bucket, id string) error {
	prefix := dedupPrefix(id)
	type entry struct {
		key     []byte
		touched int64
	}
	var all []entry
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		e := entry{key: bytes.Clone(k)}
		if w, err := unmarshalWindow(v); err == nil {
			e.touched = w.touched
		}
		all = append(all, e)
	}
	for len(all) >= s.opts.DedupEpochs {
		oldest := 0
		for i := range all {
			if all[i].touched < all[oldest].touched {
				oldest = i
			}
		}
		if err := b.Delete(all[oldest].key); err != nil {
			return err
		}
		s.log.Info("inventory: dedup window of an old outbox epoch evicted",
			"device", id, "epoch", string(all[oldest].key[len(prefix):]))
		all = append(all[:oldest], all[oldest+1:]...)
	}
	return nil
}
