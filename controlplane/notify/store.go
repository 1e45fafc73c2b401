package notify

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// schemaVersion is the layout of the notify bucket this code reads and
// writes.
const schemaVersion = 1

// Layout: one top-level bucket, so that the queue can share a bbolt file
// (and transactions) with the rollout engine.
//
//	notify/
//	  schema        -> uint64 BE
//	  e/  seq(8 BE) -> JSON record (the event and when it was queued)
//	  id/ event id  -> seq(8 BE)
//	  d/  sub/  seq -> JSON api.Delivery
//	  p/  sub/  seq -> "" (pending deliveries)
//	  drift/ device "\x00" bundle -> JSON driftState
var (
	bucketRoot    = []byte("notify")
	bucketEvents  = []byte("e")
	bucketIDs     = []byte("id")
	bucketDeliver = []byte("d")
	bucketPending = []byte("p")
	bucketDrift   = []byte("drift")
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
		for _, b := range [][]byte{bucketEvents, bucketIDs, bucketDeliver, bucketPending, bucketDrift} {
			if _, err := root.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		switch v := root.Get(keySchema); {
		case v == nil:
			return root.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion))
		case len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion:
			return fmt.Errorf("notify store schema %x, this fleetd reads %d", v, schemaVersion)
		}
		return nil
	})
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
	for _, s := range subs {
		if !s.Filter.Match(ev) {
			continue
		}
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
// index.
func putDelivery(tx *bolt.Tx, seq uint64, d api.Delivery) error {
	b, err := subBucket(tx, bucketDeliver, d.Subscription, true)
	if err != nil {
		return err
	}
	v, _ := json.Marshal(d)
	if err := b.Put(seqKey(seq), v); err != nil {
		return err
	}
	if d.State == api.DeliveryPending {
		return nil
	}
	p, err := subBucket(tx, bucketPending, d.Subscription, true)
	if err != nil {
		return err
	}
	return p.Delete(seqKey(seq))
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

// prune deletes, oldest first, events queued before cutoff none of whose
// deliveries is pending, at most max of them; it returns how many.
func prune(tx *bolt.Tx, cutoff time.Time, max int) (int, error) {
	var subs [][]byte
	_ = sub(tx, bucketDeliver).ForEachBucket(func(k []byte) error {
		subs = append(subs, append([]byte(nil), k...))
		return nil
	})
	evs, ids := sub(tx, bucketEvents), sub(tx, bucketIDs)
	n := 0
	var dels [][]byte
	var idDels []string
	c := evs.Cursor()
	for k, v := c.First(); k != nil && n < max; k, v = c.Next() {
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return n, fmt.Errorf("notify: decoding event #%d: %w", binary.BigEndian.Uint64(k), err)
		}
		if !r.Queued.Before(cutoff) {
			break
		}
		busy := false
		for _, s := range subs {
			if p := sub(tx, bucketPending).Bucket(s); p != nil && p.Get(k) != nil {
				busy = true
				break
			}
		}
		if busy {
			continue
		}
		dels = append(dels, append([]byte(nil), k...))
		idDels = append(idDels, r.ID)
		n++
	}
	for i, key := range dels {
		for _, s := range subs {
			if err := sub(tx, bucketDeliver).Bucket(s).Delete(key); err != nil {
				return 0, err
			}
		}
		if err := ids.Delete([]byte(idDels[i])); err != nil {
			return 0, err
		}
		if err := evs.Delete(key); err != nil {
			return 0, err
		}
	}
	return n, nil
}
