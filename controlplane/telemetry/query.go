package telemetry

// Reading a device's records (Query, in time order either way) and its
// counters (Stats).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Query selects records of one device.
type Query struct {
	// Kind, if set, selects records of this kind only.
	Kind string
	// Since and Until, if set, bound Time: Since <= Time < Until.
	Since, Until time.Time
	// Limit caps the result (DefaultQueryLimit when zero, at most
	// MaxQueryLimit): the oldest matching records are kept, or the newest
	// with NewestFirst.
	Limit int
	// NewestFirst returns the records newest first (by Time), so that
	// Limit keeps the newest; otherwise they come oldest first.
	NewestFirst bool
}

// Query returns device's records matching q, oldest first (newest first
// with q.NewestFirst). An unknown device has none.
func (s *Store) Query(device string, q Query) ([]Record, error) {
	if err := checkIDs(device, ""); err != nil {
		return nil, err
	}
	if q.Kind != "" && !validKind(q.Kind) {
		return nil, fmt.Errorf("%w: kind %q is not a token", ErrInvalid, q.Kind)
	}
	switch {
	case q.Limit < 0 || q.Limit > MaxQueryLimit:
		return nil, fmt.Errorf("%w: limit %d: must be 1 to %d", ErrInvalid, q.Limit, MaxQueryLimit)
	case q.Limit == 0:
		q.Limit = DefaultQueryLimit
	}
	var since, until []byte
	if !q.Since.IsZero() {
		since = timeKey(q.Since)
	}
	if !q.Until.IsZero() {
		until = timeKey(q.Until)
	}
	out := []Record{}
	err := s.db.View(func(tx *bolt.Tx) error {
		db, err := deviceBucket(tx, device, false)
		if db == nil || err != nil {
			return err
		}
		c := db.Bucket(bucketTime).Cursor()
		// first, next and done walk the keys in Since <= Time < Until
		// in the order asked for.
		first := func() (k, v []byte) {
			if since == nil {
				return c.First()
			}
			return c.Seek(since)
		}
		next := c.Next
		done := func(k []byte) bool { return until != nil && bytes.Compare(k[:8], until) >= 0 }
		if q.NewestFirst {
			first = func() (k, v []byte) {
				if until == nil {
					return c.Last()
				}
				if k, _ := c.Seek(until); k == nil {
					return c.Last()
				}
				return c.Prev()
			}
			next = c.Prev
			done = func(k []byte) bool { return since != nil && bytes.Compare(k[:8], since) < 0 }
		}
		for k, v := first(); k != nil && len(out) < q.Limit; k, v = next() {
			if done(k) {
				break
			}
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("telemetry: decoding record %x of %q: %w", k, device, err)
			}
			if q.Kind != "" && r.Kind != q.Kind {
				continue
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Stats are a device's counters.
type Stats struct {
	// Delivered counts the distinct records the device delivered, ever
	// (pruned ones included).
	Delivered uint64 `json:"delivered"`
	// Duplicates counts redeliveries of records delivered before.
	Duplicates uint64 `json:"duplicates"`
	// Held is the number of records stored now.
	Held uint64 `json:"held"`
}

// Stats returns device's counters (zero for an unknown device).
func (s *Store) Stats(device string) (Stats, error) {
	if err := checkIDs(device, ""); err != nil {
		return Stats{}, err
	}
	var st Stats
	err := s.db.View(func(tx *bolt.Tx) error {
		db, err := deviceBucket(tx, device, false)
		if db == nil || err != nil {
			return err
		}
		mb := db.Bucket(bucketCounts)
		st = Stats{Delivered: getU64(mb, keyDelivered), Duplicates: getU64(mb, keyDuplicates), Held: getU64(mb, keyHeld)}
		return nil
	})
	return st, err
}

// Pager reads a device's records oldest first beyond what one Query
// returns (MaxQueryLimit), a page at a time: each page starts at the time
// of the previous page's last record, and the records at exactly that
// time, read again, are not fresh.
type Pager struct {
	since time.Time
	seen  map[pagerKey]bool // the previous page's records at since
}

type pagerKey struct {
	epoch string
	id    uint64
}

// NewPager starts at since (Query.Since of the first page).
func NewPager(since time.Time) *Pager {
	return &Pager{since: since, seen: map[pagerKey]bool{}}
}

// Since is where the next page starts: its Query.Since.
func (p *Pager) Since() time.Time { return p.since }

// Fresh reports whether r, of the page just read, was not on the previous
// page.
func (p *Pager) Fresh(r Record) bool { return !p.seen[pagerKey{r.Epoch, r.ID}] }

// Next moves past page, the records the last Query returned (oldest
// first, not empty).
func (p *Pager) Next(page []Record) {
	last := page[len(page)-1].Time
	if !last.Equal(p.since) {
		clear(p.seen)
	}
	p.since = last
	for _, r := range page {
		if r.Time.Equal(last) {
			p.seen[pagerKey{r.Epoch, r.ID}] = true
		}
	}
}
