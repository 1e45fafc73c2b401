package telemetry

// Retention: the records a device keeps beyond MaxPerDevice are trimmed
// at Ingest, those older than MaxAge pruned by Prune, and DeleteDevice
// drops a device altogether.

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// trim drops the oldest records of a device beyond MaxPerDevice.
func (s *Store) trim(tb, kb *bolt.Bucket, held uint64) (uint64, error) {
	max := uint64(s.opts.MaxPerDevice)
	if held <= max {
		return held, nil
	}
	var drop [][]byte
	c := tb.Cursor()
	for k, _ := c.First(); k != nil && held-uint64(len(drop)) > max; k, _ = c.Next() {
		drop = append(drop, bytes.Clone(k))
	}
	for _, k := range drop {
		if err := tb.Delete(k); err != nil {
			return 0, err
		}
		if err := kb.Delete(k[8:]); err != nil {
			return 0, err
		}
	}
	return held - uint64(len(drop)), nil
}

// DeleteDevice removes every record and counter of device.
func (s *Store) DeleteDevice(device string) error {
	if err := checkIDs(device, ""); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketDevices).DeleteBucket([]byte(device))
		if errors.Is(err, berrors.ErrBucketNotFound) {
			return nil
		}
		return err
	})
}

// pruneChunk bounds the deletions of one Prune transaction.
const pruneChunk = 10_000

// Prune deletes the records older than MaxAge (by Time) and returns how
// many it deleted. fleetd runs it periodically.
func (s *Store) Prune() (int, error) {
	cutoff := timeKey(s.now().Add(-s.opts.MaxAge))
	var devices [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).ForEachBucket(func(k []byte) error {
			devices = append(devices, bytes.Clone(k))
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for _, dev := range devices {
		for {
			n := 0
			err := s.db.Update(func(tx *bolt.Tx) error {
				n = 0
				db := tx.Bucket(bucketDevices).Bucket(dev)
				if db == nil {
					return nil
				}
				tb, kb, mb := db.Bucket(bucketTime), db.Bucket(bucketKeys), db.Bucket(bucketCounts)
				var drop [][]byte
				c := tb.Cursor()
				for k, _ := c.First(); k != nil && len(drop) < pruneChunk && bytes.Compare(k[:8], cutoff) < 0; k, _ = c.Next() {
					drop = append(drop, bytes.Clone(k))
				}
				for _, k := range drop {
					if err := tb.Delete(k); err != nil {
						return err
					}
					if err := kb.Delete(k[8:]); err != nil {
						return err
					}
				}
				n = len(drop)
				held := getU64(mb, keyHeld)
				if uint64(n) > held {
					held = uint64(n)
				}
				return mb.Put(keyHeld, u64(held-uint64(n)))
			})
			if err != nil {
				return total, fmt.Errorf("telemetry: pruning %q: %w", dev, err)
			}
			total += n
			if n < pruneChunk {
				break
			}
		}
	}
	if total > 0 {
		s.log.Debug("telemetry: pruned old records", "records", total, "max_age", s.opts.MaxAge)
	}
	return total, nil
}
