package outbox

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"time"

	bolt "go.etcd.io/bbolt"
)

// File layout: bucket "records" maps the 8-byte big-endian id to the encoded
// value (record.go); its bucket sequence is the last id handed out. Bucket
// "meta" holds the schema version and the persisted counters.
var (
	recordsBucket = []byte("records")
	metaBucket    = []byte("meta")
	versionKey    = []byte("version")
	countersKey   = []byte("counters")
)

const schemaVersion = 1

// counters are persisted in every commit, in the same transaction as the
// records they describe.
type counters struct {
	appended, acked, dropped, records, bytes uint64
}

const countersLen = 5 * 8

func (c counters) encode() []byte {
	b := make([]byte, 0, countersLen)
	for _, v := range [...]uint64{c.appended, c.acked, c.dropped, c.records, c.bytes} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeCounters(b []byte) (counters, error) {
	if len(b) != countersLen {
		return counters{}, fmt.Errorf("%w: counters are %d bytes, want %d", ErrCorrupt, len(b), countersLen)
	}
	return counters{
		appended: beUint64(b[0:]),
		acked:    beUint64(b[8:]),
		dropped:  beUint64(b[16:]),
		records:  beUint64(b[24:]),
		bytes:    beUint64(b[32:]),
	}, nil
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// load creates the buckets of a new file, or checks an existing one: every
// record is decoded (undecodable ones are deleted and counted as dropped),
// the record count and bytes are recomputed, the counters' invariant
// Appended == Acked + Dropped + Records is restored, and the id sequence is
// made to be past the last stored id. Any repair is logged.
func (o *Outbox) load() error {
	return o.db.Update(func(tx *bolt.Tx) error {
		meta, recs := tx.Bucket(metaBucket), tx.Bucket(recordsBucket)
		if meta == nil && recs == nil {
			return o.create(tx)
		}
		if meta == nil || recs == nil {
			return fmt.Errorf("%w: bucket %q or %q missing", ErrCorrupt, metaBucket, recordsBucket)
		}
		if v := meta.Get(versionKey); len(v) != 1 || v[0] != schemaVersion {
			return fmt.Errorf("%w: schema version %v, want [%d]", ErrCorrupt, v, schemaVersion)
		}
		stored, err := decodeCounters(meta.Get(countersKey))
		if err != nil {
			return err
		}

		var n, size, lastID uint64
		var bad [][]byte
		c := recs.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if _, err := decodeRecord(k, v); err != nil {
				o.log.Error("deleting undecodable record; counted as dropped", "err", err)
				bad = append(bad, append([]byte(nil), k...))
				continue
			}
			n++
			size += uint64(keyLen + len(v))
			lastID = beUint64(k)
		}
		for _, k := range bad {
			if err := recs.Delete(k); err != nil {
				return fmt.Errorf("delete corrupt record: %w", err)
			}
		}

		st := stored
		st.dropped += uint64(len(bad))
		if st.records != n || st.bytes != size {
			o.log.Warn("stored counters disagree with the records; repairing",
				"stored_records", st.records, "records", n, "stored_bytes", st.bytes, "bytes", size)
			st.records, st.bytes = n, size
		}
		switch sum := st.acked + st.dropped + st.records; {
		case st.appended > sum:
			o.log.Warn("records missing from the outbox; counting them as dropped", "missing", st.appended-sum)
			st.dropped += st.appended - sum
		case st.appended < sum:
			o.log.Warn("appended counter behind the records; raising it", "appended", st.appended, "want", sum)
			st.appended = sum
		}
		if seq := recs.Sequence(); lastID > seq {
			o.log.Warn("id sequence behind the last stored id; advancing it", "sequence", seq, "last_id", lastID)
			if err := recs.SetSequence(lastID); err != nil {
				return err
			}
		}
		o.state = st
		o.lastID = max(recs.Sequence(), lastID)
		if st == stored {
			return nil
		}
		return meta.Put(countersKey, st.encode())
	})
}

// create initialises a new file. The id sequence starts at the current time
// in microseconds rather than at zero: ids still increase by one per record,
// but if the file is ever lost and recreated, the new ids start past the old
// ones (unless the device clock went back, or the old file issued more than
// a million records per second of its life), so fleetd's per-device
// deduplication does not mistake new records for old ones.
func (o *Outbox) create(tx *bolt.Tx) error {
	meta, err := tx.CreateBucket(metaBucket)
	if err != nil {
		return err
	}
	recs, err := tx.CreateBucket(recordsBucket)
	if err != nil {
		return err
	}
	if err := meta.Put(versionKey, []byte{schemaVersion}); err != nil {
		return err
	}
	if now := time.Now().UnixMicro(); now > 0 {
		if err := recs.SetSequence(uint64(now)); err != nil {
			return err
		}
	}
	o.state = counters{}
	o.lastID = recs.Sequence()
	return meta.Put(countersKey, o.state.encode())
}

// run is the single writer: it takes whatever is queued whenever it is idle
// (so batches grow by themselves while a commit is in its fsync) and commits
// it in one transaction.
func (o *Outbox) run() {
	defer close(o.done)
	for {
		select {
		case <-o.kick:
		case <-o.quit:
			for o.flush() {
			}
			return
		}
		for o.flush() {
		}
	}
}

// flush commits one batch of queued requests and reports whether there was
// anything queued.
func (o *Outbox) flush() bool {
	// Let the callers just woken by the previous commit (or the one that
	// kicked us) queue their next requests before the batch is cut, yielding
	// while the queue still grows; without this, batches alternate between
	// a few requests and all the rest (about 75k instead of 110k records/s
	// with 64 appenders on two cores). A lone caller pays one Gosched.
	for i, n := 0, -1; i < 8; i++ {
		runtime.Gosched()
		o.mu.Lock()
		m := len(o.queue)
		o.mu.Unlock()
		if m == n || m >= o.maxBatch {
			break
		}
		n = m
	}
	o.mu.Lock()
	n, bytes := 0, int64(0)
	for n < len(o.queue) && n < o.maxBatch {
		if r := o.queue[n]; n == 0 || bytes+r.size <= maxBatchBytes {
			bytes += r.size
			n++
			continue
		}
		break
	}
	if n == 0 {
		o.mu.Unlock()
		return false
	}
	o.batch = append(o.batch[:0], o.queue[:n]...)
	rest := copy(o.queue, o.queue[n:])
	clear(o.queue[rest:])
	o.queue = o.queue[:rest]
	o.mu.Unlock()

	live := o.batch[:0]
	for _, r := range o.batch {
		// An Append whose context ended while queued is skipped: its caller
		// has already been told the record was not stored.
		if r.state.CompareAndSwap(reqPending, reqClaimed) {
			live = append(live, r)
		}
	}
	if len(live) > 0 {
		o.commit(live)
	}
	clear(o.batch)
	return true
}

// testAnswerBeforeWrite is set only by the crash test's broken mode
// (TestCrashDurabilityCatchesLostWrites): commit then answers a batch from
// inside its transaction, before bbolt has written anything, and waits a
// little, so that a kill in between loses records whose Append returned.
// It is the bug the crash test exists to catch.
var testAnswerBeforeWrite time.Duration

// commit runs one transaction for a batch, then answers its requests.
func (o *Outbox) commit(batch []*request) {
	next, nextLast := o.state, o.lastID
	var appends int
	for _, r := range batch {
		if !r.isAck {
			appends++
		}
	}
	var dropped uint64
	err := o.db.Update(func(tx *bolt.Tx) error {
		recs := tx.Bucket(recordsBucket)
		recs.FillPercent = fillPercent
		// Acks first: the space they free may spare a drop.
		for _, r := range batch {
			if !r.isAck {
				continue
			}
			for _, id := range r.ack {
				k := idKey(id)
				v := recs.Get(k)
				if v == nil {
					continue // unknown or already acked
				}
				next.records--
				next.bytes -= uint64(keyLen + len(v))
				next.acked++
				if err := recs.Delete(k); err != nil {
					return fmt.Errorf("delete %d: %w", id, err)
				}
			}
		}
		// bbolt keeps key slices until the commit, so one buffer serves all.
		keys := make([]byte, 0, keyLen*appends)
		for _, r := range batch {
			if r.isAck {
				continue
			}
			id, err := recs.NextSequence()
			if err != nil {
				return err
			}
			keys = binary.BigEndian.AppendUint64(keys, id)
			if err := recs.Put(keys[len(keys)-keyLen:], r.value); err != nil {
				return fmt.Errorf("put %d: %w", id, err)
			}
			r.id, nextLast = id, id
			next.records++
			next.bytes += uint64(r.size)
			next.appended++
		}
		if next.bytes > uint64(o.maxBytes) {
			n, err := o.evict(recs, &next)
			if err != nil {
				return err
			}
			dropped = n
		}
		if err := tx.Bucket(metaBucket).Put(countersKey, next.encode()); err != nil {
			return err
		}
		if testAnswerBeforeWrite > 0 {
			o.state, o.lastID = next, nextLast
			o.publish()
			select {
			case o.notify <- struct{}{}:
			default:
			}
			for _, r := range batch {
				close(r.done)
			}
			time.Sleep(testAnswerBeforeWrite)
		}
		return nil
	})
	if testAnswerBeforeWrite > 0 {
		if err != nil {
			panic(err) // the requests were answered already
		}
		return
	}
	if err != nil {
		err = fmt.Errorf("outbox: commit: %w", err)
		o.log.Error("commit failed", "err", err, "requests", len(batch))
		for _, r := range batch {
			r.id, r.err = 0, err
			close(r.done)
		}
		return
	}
	o.state, o.lastID = next, nextLast
	o.publish()
	if dropped > 0 {
		o.logDrops(dropped)
	}
	// Signal before answering, so that a caller whose Append returned can
	// rely on Wait's channel holding a value.
	if appends > 0 {
		select {
		case o.notify <- struct{}{}:
		default:
		}
	}
	for _, r := range batch {
		close(r.done)
	}
}

// evict deletes the oldest records until next is within MaxBytes. Records
// appended earlier in the same transaction may go too; they still count as
// appended and then dropped.
func (o *Outbox) evict(recs *bolt.Bucket, next *counters) (uint64, error) {
	var victims [][]byte
	c := recs.Cursor()
	for k, v := c.First(); k != nil && next.bytes > uint64(o.maxBytes); k, v = c.Next() {
		victims = append(victims, append([]byte(nil), k...))
		next.records--
		next.bytes -= uint64(keyLen + len(v))
		next.dropped++
	}
	for _, k := range victims {
		if err := recs.Delete(k); err != nil {
			return 0, fmt.Errorf("drop %d: %w", beUint64(k), err)
		}
	}
	return uint64(len(victims)), nil
}

// logDrops warns on the first drop after Open and then at most once per
// dropLogEvery drops; Stats.Dropped has the exact count.
func (o *Outbox) logDrops(n uint64) {
	before := o.sessionDropped
	o.sessionDropped += n
	if before == 0 || before/dropLogEvery != o.sessionDropped/dropLogEvery {
		o.log.Warn("outbox full: dropped oldest records",
			"dropped", n, "dropped_since_open", o.sessionDropped,
			"dropped_total", o.state.dropped, "max_bytes", o.maxBytes)
	}
}
