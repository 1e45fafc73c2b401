package rollout

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// schemaVersion is the layout of the engine's bucket this code reads and
// writes.
const schemaVersion = 1

// Layout: one top-level bucket, so the engine can share a bbolt file.
//
//	rollouts/
//	  schema        -> uint64 BE
//	  r/    id      -> JSON Rollout
//	  d/    id/     order(4 BE) -> JSON Device   (cohort order)
//	  h/    id/     seq(8 BE)   -> JSON Event
//	  hold/ device  -> id of the active rollout holding it
var (
	bucketRoot     = []byte("rollouts")
	bucketRollouts = []byte("r")
	bucketDevices  = []byte("d")
	bucketHistory  = []byte("h")
	bucketHolds    = []byte("hold")
	keySchema      = []byte("schema")
)

func initDB(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return err
		}
		for _, b := range [][]byte{bucketRollouts, bucketDevices, bucketHistory, bucketHolds} {
			if _, err := root.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		switch v := root.Get(keySchema); {
		case v == nil:
			return root.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion))
		case len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion:
			return fmt.Errorf("rollout store schema %x, this fleetd reads %d", v, schemaVersion)
		}
		return nil
	})
}

func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

func sub(tx *bolt.Tx, name []byte) *bolt.Bucket { return tx.Bucket(bucketRoot).Bucket(name) }

func getRollout(tx *bolt.Tx, id string) (*Rollout, error) {
	b := sub(tx, bucketRollouts).Get([]byte(id))
	if b == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	var r Rollout
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("rollout: decoding %q: %w", id, err)
	}
	return &r, nil
}

func putRollout(tx *bolt.Tx, r *Rollout) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("rollout: encoding %q: %w", r.ID, err)
	}
	return sub(tx, bucketRollouts).Put([]byte(r.ID), b)
}

func orderKey(order int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(order)) }

func putDevice(tx *bolt.Tx, id string, d *Device) error {
	b, err := sub(tx, bucketDevices).CreateBucketIfNotExists([]byte(id))
	if err != nil {
		return err
	}
	v, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("rollout: encoding device %q of %q: %w", d.ID, id, err)
	}
	return b.Put(orderKey(d.Order), v)
}

func loadDevices(tx *bolt.Tx, id string) ([]*Device, error) {
	b := sub(tx, bucketDevices).Bucket([]byte(id))
	if b == nil {
		return nil, nil
	}
	var out []*Device
	err := b.ForEach(func(k, v []byte) error {
		var d Device
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("rollout: decoding a device of %q: %w", id, err)
		}
		if d.Order != len(out) {
			return fmt.Errorf("rollout: %q: device %q has order %d, want %d", id, d.ID, d.Order, len(out))
		}
		out = append(out, &d)
		return nil
	})
	return out, err
}

func appendEvent(tx *bolt.Tx, id string, ev *Event) error {
	b, err := sub(tx, bucketHistory).CreateBucketIfNotExists([]byte(id))
	if err != nil {
		return err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	ev.Seq = seq
	v, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("rollout: encoding an event of %q: %w", id, err)
	}
	return b.Put(binary.BigEndian.AppendUint64(nil, seq), v)
}

func loadEvents(tx *bolt.Tx, id string) ([]Event, error) {
	b := sub(tx, bucketHistory).Bucket([]byte(id))
	if b == nil {
		return nil, nil
	}
	var out []Event
	err := b.ForEach(func(k, v []byte) error {
		var ev Event
		if err := json.Unmarshal(v, &ev); err != nil {
			return fmt.Errorf("rollout: decoding an event of %q: %w", id, err)
		}
		out = append(out, ev)
		return nil
	})
	return out, err
}

// holders returns, for the given device ids, the active rollouts holding
// them (other than self).
func holders(tx *bolt.Tx, ids []string, self string) map[string][]string {
	hb := sub(tx, bucketHolds)
	var out map[string][]string
	for _, id := range ids {
		h := hb.Get([]byte(id))
		if h == nil || string(h) == self {
			continue
		}
		if out == nil {
			out = map[string][]string{}
		}
		out[string(h)] = append(out[string(h)], id)
	}
	return out
}

func hold(tx *bolt.Tx, ids []string, rolloutID string) error {
	hb := sub(tx, bucketHolds)
	for _, id := range ids {
		if err := hb.Put([]byte(id), []byte(rolloutID)); err != nil {
			return err
		}
	}
	return nil
}

func release(tx *bolt.Tx, ids []string, rolloutID string) error {
	hb := sub(tx, bucketHolds)
	for _, id := range ids {
		if string(hb.Get([]byte(id))) == rolloutID {
			if err := hb.Delete([]byte(id)); err != nil {
				return err
			}
		}
	}
	return nil
}
