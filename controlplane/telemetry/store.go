// Package telemetry is fleetd's durable store of the records devices
// deliver: the telemetry records of TelemetryBatch messages and the events
// (shared/protocol), kept per device in time order with bounded retention
// (a count per device and an age), so that rollout gates and drift reports
// can query what devices said, and counted exactly once per device although
// devices deliver at least once.
//
// # Exactly once
//
// A record is identified by (device, outbox epoch, record id). Ingest
// stores a batch in three steps, each durable before the next:
//
//  1. stage: every record not held yet is written, marked pending;
//  2. seen: the caller's dedup oracle (fleetd passes the inventory's
//     SeenRecords, which remembers ids long after the records themselves
//     were pruned) says which of the staged ids were delivered before;
//  3. commit: pending records the oracle had seen are removed again (a
//     redelivery of a pruned record), the others confirmed and counted.
//
// A record held and confirmed is a duplicate without asking the oracle. A
// record found still pending (fleetd stopped between steps 1 and 3) is
// confirmed and counted: the oracle may have recorded it in the
// interrupted attempt, but it was never counted. So a record is stored
// before its delivery is acknowledged, is counted once, and a crash at any
// point neither loses nor double-counts it. Ingest calls for one device
// are serialized.
//
// # Layout
//
// One bbolt file. Bucket "dev" holds a bucket per device id with:
//
//	t  timeKey(8) epoch 0x00 id(8)  -> JSON Record   (time order)
//	k  epoch 0x00 id(8)             -> timeKey(8) state(1)  (0 confirmed, 1 pending)
//	m  "delivered" "duplicates" "held" -> uint64
package telemetry

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgefleet/edgefleet/controlplane/groupcommit"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Defaults of Options.
const (
	DefaultMaxPerDevice = 10_000
	DefaultMaxAge       = 7 * 24 * time.Hour
	DefaultLockTimeout  = 2 * time.Second
	// DefaultQueryLimit and MaxQueryLimit bound Query results.
	DefaultQueryLimit = 1000
	MaxQueryLimit     = 10_000
)

// Sentinel errors.
var (
	// ErrInvalid: a device id, epoch, record or query is not valid; the
	// message names it.
	ErrInvalid = errors.New("telemetry: invalid argument")
	// ErrClosed: the Store was used after Close.
	ErrClosed = errors.New("telemetry: closed")
)

// schemaVersion is the layout of the file this code reads and writes.
const schemaVersion = 1

var (
	bucketMeta    = []byte("meta")
	bucketDevices = []byte("dev")
	bucketTime    = []byte("t")
	bucketKeys    = []byte("k")
	bucketCounts  = []byte("m")
	keySchema     = []byte("schema")
	keyDelivered  = []byte("delivered")
	keyDuplicates = []byte("duplicates")
	keyHeld       = []byte("held")
)

// Record states in bucket k.
const (
	stateConfirmed = 0
	statePending   = 1
)

// Record is one stored record.
type Record struct {
	// Device is the device that delivered it.
	Device string `json:"device"`
	// Epoch and ID identify it within the device's outbox.
	Epoch string `json:"epoch,omitempty"`
	ID    uint64 `json:"id"`
	// Kind is the record kind (protocol.Record* constants, or "event"
	// for events).
	Kind string `json:"kind"`
	// Time is when the device recorded it (the device's clock); records
	// are ordered and retained by it.
	Time time.Time `json:"time"`
	// Received is when fleetd stored it (fleetd's clock).
	Received time.Time `json:"received"`
	// Payload is the record as the device sent it.
	Payload json.RawMessage `json:"payload"`
}

// Options configures a Store.
type Options struct {
	// MaxPerDevice is how many records a device keeps; beyond it the
	// oldest (by Time) are dropped. Zero means DefaultMaxPerDevice.
	MaxPerDevice int
	// MaxAge is how long records are kept (by Time), enforced by Prune.
	// Zero means DefaultMaxAge.
	MaxAge time.Duration
	// LockTimeout is how long Open waits for another process holding the
	// file. Zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
}

// Store is the bbolt-backed record store. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options
	log  *slog.Logger
	now  func() time.Time

	// locks serialize Ingest per device.
	locksMu sync.Mutex
	locks   map[string]*deviceLock

	// group commits writes together (see batch).
	group *groupcommit.Committer

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the record store at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxPerDevice < 0 || opts.MaxAge < 0 {
		return nil, fmt.Errorf("%w: MaxPerDevice and MaxAge must not be negative", ErrInvalid)
	}
	if opts.MaxPerDevice == 0 {
		opts.MaxPerDevice = DefaultMaxPerDevice
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	s := &Store{opts: opts, log: opts.Logger, now: opts.Now, locks: map[string]*deviceLock{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("telemetry: opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion {
				return fmt.Errorf("telemetry: %s: unsupported schema %x (this fleetd reads %d)", path, v, schemaVersion)
			}
		} else if err := meta.Put(keySchema, u64(schemaVersion)); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketDevices)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("telemetry: initialising %s: %w", path, err)
	}
	s.db = db
	s.group = groupcommit.New(s.update, maxBatch)
	return s, nil
}

// Close closes the file. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.group.Close()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

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

	defer s.lockDevice(device)()

	// 1. Stage.
	outs := make([]int, len(recs))
	err := s.batch(func(tx *bolt.Tx) error {
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
	err = s.batch(func(tx *bolt.Tx) error {
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

// deviceLock is a device's Ingest lock, dropped when nobody holds or
// waits for it.
type deviceLock struct {
	mu   sync.Mutex
	refs int
}

// lockDevice locks device's Ingest lock and returns its unlock.
func (s *Store) lockDevice(device string) (unlock func()) {
	s.locksMu.Lock()
	l := s.locks[device]
	if l == nil {
		l = &deviceLock{}
		s.locks[device] = l
	}
	l.refs++
	s.locksMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.locksMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, device)
		}
		s.locksMu.Unlock()
	}
}

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
	err := s.view(func(tx *bolt.Tx) error {
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
	err := s.view(func(tx *bolt.Tx) error {
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

// DeleteDevice removes every record and counter of device.
func (s *Store) DeleteDevice(device string) error {
	if err := checkIDs(device, ""); err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
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
	err := s.view(func(tx *bolt.Tx) error {
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
			err := s.update(func(tx *bolt.Tx) error {
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

// deviceBucket returns the bucket of device, creating it (and its
// sub-buckets) if create is set; nil without error if absent.
func deviceBucket(tx *bolt.Tx, device string, create bool) (*bolt.Bucket, error) {
	root := tx.Bucket(bucketDevices)
	if b := root.Bucket([]byte(device)); b != nil || !create {
		return b, nil
	}
	b, err := root.CreateBucket([]byte(device))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketTime, bucketKeys, bucketCounts} {
		if _, err := b.CreateBucket(name); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func checkIDs(device, epoch string) error {
	if err := protocol.ValidateDeviceID(device); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if epoch != "" {
		if err := protocol.ValidateDeviceID(epoch); err != nil {
			return fmt.Errorf("%w: device %q: epoch %q: must be 1 to %d of [A-Za-z0-9._-]", ErrInvalid, device, epoch, protocol.MaxDeviceIDLen)
		}
	}
	return nil
}

// validKind: [a-z0-9][a-z0-9._-]*, at most 64 bytes, as the protocol's
// tokens.
func validKind(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// timeKey orders times bytewise: unix nanoseconds with the sign bit
// flipped, big endian.
func timeKey(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8+protocol.MaxDeviceIDLen+9), uint64(t.UnixNano())^(1<<63))
}

func idxKey(epoch string, id uint64) []byte {
	k := make([]byte, 0, len(epoch)+9)
	k = append(k, epoch...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, id)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func addU64(b *bolt.Bucket, k []byte, n uint64) error {
	if n == 0 {
		return nil
	}
	return b.Put(k, u64(getU64(b, k)+n))
}

func (s *Store) view(fn func(*bolt.Tx) error) error   { return closedErr(s.db.View(fn)) }
func (s *Store) update(fn func(*bolt.Tx) error) error { return closedErr(s.db.Update(fn)) }

func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}
