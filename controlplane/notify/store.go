package notify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// schemaVersion is the layout of the notify bucket this code reads and
// writes. Version 1 had no done index (bucket "done"); a store of version
// 1 is upgraded when opened (migrateV1).
const schemaVersion = 2

// Layout: one top-level bucket, so that the queue can share a bbolt file
// (and transactions) with the rollout engine.
//
//	notify/
//	  schema        -> uint64 BE
//	  e/  seq(8 BE) -> JSON record (the event and when it was queued)
//	  id/ event id  -> seq(8 BE)
//	  d/  sub/  seq -> JSON api.Delivery
//	  p/  sub/  seq -> "" (pending deliveries)
//	  done/ time(8 BE, Unix ns) seq(8 BE) -> "" (the done index)
//	  drift/ device "\x00" bundle -> JSON driftState
//
// The done index holds the events none of whose deliveries is pending,
// by when they were done: the latest Done of their deliveries (when the
// last one was delivered or failed), or, for an event no subscription
// selected, when it was queued. Pruning walks it oldest first, so that
// an event is kept the retention after it was done, however long it was
// pending before.
var (
	bucketRoot    = []byte("notify")
	bucketEvents  = []byte("e")
	bucketIDs     = []byte("id")
	bucketDeliver = []byte("d")
	bucketPending = []byte("p")
	bucketDrift   = []byte("drift")
	bucketDone    = []byte("done")
	keySchema     = []byte("schema")
)

// record is an event as stored.
type record struct {
	Event
	Queued time.Time `json:"queued"`
}

func initDB(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return err
		}
		for _, b := range [][]byte{bucketEvents, bucketIDs, bucketDeliver, bucketPending, bucketDrift, bucketDone} {
			if _, err := root.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		switch v := root.Get(keySchema); {
		case v == nil:
			return root.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion))
		case len(v) == 8 && binary.BigEndian.Uint64(v) == 1:
			if err := migrateV1(tx); err != nil {
				return fmt.Errorf("upgrading the notify store from schema 1: %w", err)
			}
			return root.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion))
		case len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion:
			return fmt.Errorf("notify store schema %x, this fleetd reads %d", v, schemaVersion)
		}
		return nil
	})
}

// migrateV1 fills in the done index of a store of schema 1: an event
// none of whose deliveries is pending is done at the latest Done of its
// deliveries, or, with none recorded (no subscription selected it), at
// when it was queued. The pending ones enter the index when their last
// delivery is done, as with this version.
func migrateV1(tx *bolt.Tx) error {
	type entry struct {
		k      []byte
		queued time.Time
	}
	var es []entry
	err := sub(tx, bucketEvents).ForEach(func(k, v []byte) error {
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("notify: decoding event #%d: %w", binary.BigEndian.Uint64(k), err)
		}
		es = append(es, entry{append([]byte(nil), k...), r.Queued})
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range es {
		if busy(tx, e.k) {
			continue
		}
		t, err := doneAt(tx, e.k, e.queued)
		if err != nil {
			return err
		}
		if err := sub(tx, bucketDone).Put(doneKey(t, e.k), nil); err != nil {
			return err
		}
	}
	return nil
}

// doneKey is the done index's key of event k (seq) done at t.
func doneKey(t time.Time, k []byte) []byte {
	var ns uint64
	if t.After(time.Unix(0, 0)) {
		ns = uint64(t.UnixNano())
	}
	return append(binary.BigEndian.AppendUint64(nil, ns), k...)
}

// busy reports whether a delivery of event k (seq) is pending.
func busy(tx *bolt.Tx, k []byte) bool {
	found := false
	p := sub(tx, bucketPending)
	_ = p.ForEachBucket(func(name []byte) error {
		if b := p.Bucket(name); b != nil && b.Get(k) != nil {
			found = true
		}
		return nil
	})
	return found
}

// doneAt is when event k (seq) was done: the latest Done of its
// deliveries, or queued if none has one.
func doneAt(tx *bolt.Tx, k []byte, queued time.Time) (time.Time, error) {
	var t time.Time
	d := sub(tx, bucketDeliver)
	err := d.ForEachBucket(func(name []byte) error {
		v := d.Bucket(name).Get(k)
		if v == nil {
			return nil
		}
		var dv api.Delivery
		if err := json.Unmarshal(v, &dv); err != nil {
			return fmt.Errorf("notify: decoding delivery #%d to %s: %w", binary.BigEndian.Uint64(k), name, err)
		}
		if dv.Done.After(t) {
			t = dv.Done
		}
		return nil
	})
	if t.IsZero() {
		t = queued
	}
	return t, err
}

func sub(tx *bolt.Tx, name []byte) *bolt.Bucket { return tx.Bucket(bucketRoot).Bucket(name) }

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// subBucket is the bucket of subscription name under parent; nil if it
// does not exist and create is false.
func subBucket(tx *bolt.Tx, parent []byte, name string, create bool) (*bolt.Bucket, error) {
	p := sub(tx, parent)
	if !create {
		return p.Bucket([]byte(name)), nil
	}
	return p.CreateBucketIfNotExists([]byte(name))
}

// add queues ev in tx for the subscriptions whose filter selects it; an
// id already stored is left as it is (added false).
func add(tx *bolt.Tx, ev *Event, subs []*Subscription, now time.Time) (added bool, err error) {
	ids := sub(tx, bucketIDs)
	if ids.Get([]byte(ev.ID)) != nil {
		return false, nil
	}
	evs := sub(tx, bucketEvents)
	seq, err := evs.NextSequence()
	if err != nil {
		return false, err
	}
	b, err := json.Marshal(record{Event: *ev, Queued: now})
	if err != nil {
		return false, fmt.Errorf("notify: encoding event %s: %w", ev.ID, err)
	}
	k := seqKey(seq)
	if err := evs.Put(k, b); err != nil {
		return false, err
	}
	if err := ids.Put([]byte(ev.ID), k); err != nil {
		return false, err
	}
	selected := false
	for _, s := range subs {
		if !s.Filter.Match(ev) {
			continue
		}
		selected = true
		d, _ := json.Marshal(api.Delivery{Subscription: s.Name, State: api.DeliveryPending})
		db, err := subBucket(tx, bucketDeliver, s.Name, true)
		if err != nil {
			return false, err
		}
		if err := db.Put(k, d); err != nil {
			return false, err
		}
		pb, err := subBucket(tx, bucketPending, s.Name, true)
		if err != nil {
			return false, err
		}
		if err := pb.Put(k, nil); err != nil {
			return false, err
		}
	}
	if !selected {
		// Nothing to deliver: done as queued.
		if err := sub(tx, bucketDone).Put(doneKey(now, k), nil); err != nil {
			return false, err
		}
	}
	return true, nil
}

func getRecord(tx *bolt.Tx, seq uint64) (*record, error) {
	b := sub(tx, bucketEvents).Get(seqKey(seq))
	if b == nil {
		return nil, fmt.Errorf("notify: event #%d not found", seq)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("notify: decoding event #%d: %w", seq, err)
	}
	return &r, nil
}

func getDelivery(tx *bolt.Tx, name string, seq uint64) (api.Delivery, error) {
	d := api.Delivery{Subscription: name, State: api.DeliveryPending}
	b, _ := subBucket(tx, bucketDeliver, name, false)
	if b == nil {
		return d, nil
	}
	v := b.Get(seqKey(seq))
	if v == nil {
		return d, nil
	}
	if err := json.Unmarshal(v, &d); err != nil {
		return d, fmt.Errorf("notify: decoding delivery #%d to %s: %w", seq, name, err)
	}
	return d, nil
}

// putDelivery records d; a delivery no longer pending leaves the pending
// index, and when it was the event's last pending one the event enters
// the done index.
func putDelivery(tx *bolt.Tx, seq uint64, d api.Delivery) error {
	k := seqKey(seq)
	b, err := subBucket(tx, bucketDeliver, d.Subscription, true)
	if err != nil {
		return err
	}
	v, _ := json.Marshal(d)
	if err := b.Put(k, v); err != nil {
		return err
	}
	if d.State == api.DeliveryPending {
		return nil
	}
	p, err := subBucket(tx, bucketPending, d.Subscription, true)
	if err != nil {
		return err
	}
	if p.Get(k) == nil {
		return nil // not pending before: indexed already, if done
	}
	if err := p.Delete(k); err != nil {
		return err
	}
	if busy(tx, k) {
		return nil
	}
	r, err := getRecord(tx, seq)
	if err != nil {
		return err
	}
	t, err := doneAt(tx, k, r.Queued)
	if err != nil {
		return err
	}
	return sub(tx, bucketDone).Put(doneKey(t, k), nil)
}

// dropRemoved fails the pending deliveries of subscriptions no longer
// configured (not in names), so that their events can be pruned.
func dropRemoved(tx *bolt.Tx, names map[string]bool, now time.Time) error {
	var gone []string
	_ = sub(tx, bucketPending).ForEachBucket(func(k []byte) error {
		if !names[string(k)] {
			gone = append(gone, string(k))
		}
		return nil
	})
	for _, name := range gone {
		var seqs []uint64
		_ = sub(tx, bucketPending).Bucket([]byte(name)).ForEach(func(k, _ []byte) error {
			seqs = append(seqs, binary.BigEndian.Uint64(k))
			return nil
		})
		for _, seq := range seqs {
			d, err := getDelivery(tx, name, seq)
			if err != nil {
				return err
			}
			d.State, d.Done, d.LastError = api.DeliveryFailed, now, "the subscription was removed from the configuration"
			if err := putDelivery(tx, seq, d); err != nil {
				return err
			}
		}
		if err := sub(tx, bucketPending).DeleteBucket([]byte(name)); err != nil {
			return err
		}
	}
	return nil
}

// pending returns up to limit pending deliveries of subscription name,
// oldest first.
func pending(tx *bolt.Tx, name string, limit int) []uint64 {
	b, _ := subBucket(tx, bucketPending, name, false)
	if b == nil {
		return nil
	}
	var out []uint64
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
		out = append(out, binary.BigEndian.Uint64(k))
	}
	return out
}

// Query selects events to list.
type Query struct {
	// Limit is the most events returned (newest first).
	Limit int
	// Type, Subscription and State, if set, keep only events of that
	// type, queued for that subscription, with a delivery in that state.
	Type, Subscription, State string
}

// list returns the newest events q selects, with their deliveries to
// the subscriptions named (in that order) and to any other they were
// queued for.
func list(tx *bolt.Tx, q Query, names []string) ([]api.Event, error) {
	var all []string
	all = append(all, names...)
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	_ = sub(tx, bucketDeliver).ForEachBucket(func(k []byte) error {
		if !seen[string(k)] {
			all = append(all, string(k))
		}
		return nil
	})
	out := []api.Event{}
	c := sub(tx, bucketEvents).Cursor()
	for k, v := c.Last(); k != nil && len(out) < q.Limit; k, v = c.Prev() {
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("notify: decoding event #%d: %w", binary.BigEndian.Uint64(k), err)
		}
		if q.Type != "" && r.Type != q.Type {
			continue
		}
		ev := api.Event{ID: r.ID, Type: r.Type, Source: r.Source, Subject: r.Subject, Time: r.Time, Queued: r.Queued,
			Bundles: r.Bundles, Labels: r.Labels, Data: r.Data, Deliveries: []api.Delivery{}}
		keep := q.Subscription == "" && q.State == ""
		for _, n := range all {
			b, _ := subBucket(tx, bucketDeliver, n, false)
			if b == nil {
				continue
			}
			dv := b.Get(k)
			if dv == nil {
				continue
			}
			var d api.Delivery
			if err := json.Unmarshal(dv, &d); err != nil {
				return nil, fmt.Errorf("notify: decoding a delivery of %s: %w", r.ID, err)
			}
			ev.Deliveries = append(ev.Deliveries, d)
			if (q.Subscription == "" || q.Subscription == n) && (q.State == "" || q.State == d.State) {
				keep = true
			}
		}
		if keep {
			out = append(out, ev)
		}
	}
	return out, nil
}

// prune deletes, oldest done first, events done (every delivery of
// theirs delivered or failed) before cutoff: it goes through at most max
// entries of the done index and returns how many events it deleted, and
// whether entries before cutoff may be left (it stopped at max).
func prune(tx *bolt.Tx, cutoff time.Time, max int) (deleted int, more bool, err error) {
	var subs [][]byte
	_ = sub(tx, bucketDeliver).ForEachBucket(func(k []byte) error {
		subs = append(subs, append([]byte(nil), k...))
		return nil
	})
	evs, ids, idx := sub(tx, bucketEvents), sub(tx, bucketIDs), sub(tx, bucketDone)
	end := doneKey(cutoff, seqKey(0))
	var keys [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, end) < 0; k, _ = c.Next() {
		if len(keys) == max {
			more = true
			break
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, ik := range keys {
		if err := idx.Delete(ik); err != nil {
			return deleted, more, err
		}
		k := ik[8:]
		v := evs.Get(k)
		if v == nil || busy(tx, k) {
			// Stale: the event is gone, or a delivery of it is pending
			// (it is indexed again when that one is done).
			continue
		}
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return deleted, more, fmt.Errorf("notify: decoding event #%d: %w", binary.BigEndian.Uint64(k), err)
		}
		for _, s := range subs {
			if err := sub(tx, bucketDeliver).Bucket(s).Delete(k); err != nil {
				return deleted, more, err
			}
		}
		if err := ids.Delete([]byte(r.ID)); err != nil {
			return deleted, more, err
		}
		if err := evs.Delete(k); err != nil {
			return deleted, more, err
		}
		deleted++
	}
	return deleted, more, nil
}
