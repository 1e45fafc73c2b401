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
// are serialized. Steps 2 and 3 are controlplane/dedup's: Stage runs step
// 1 alone, for a delivery whose records go to several stores (fleetd's
// sample lake takes a batch's samples), so that one oracle call covers
// the whole delivery.
//
// # Layout
//
// One bbolt file. Bucket "dev" holds a bucket per device id with:
//
//	t  timeKey(8) epoch 0x00 id(8)  -> JSON Record   (time order)
//	k  epoch 0x00 id(8)             -> timeKey(8) state(1)  (0 confirmed, 1 pending)
//	m  "delivered" "duplicates" "held" -> uint64
package telemetry

// The Store: its Options and defaults, the sentinel errors, Record, Open
// and Close, and its transactions. Ingest is in ingest.go, Query and
// Stats in query.go, retention in retention.go, the file's layout in
// layout.go.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/groupcommit"
	"github.com/edgefleet/edgefleet/controlplane/keylock"
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
	db   *groupcommit.DB // batch writes commit together (group commit)
	opts Options
	log  *slog.Logger
	now  func() time.Time

	// locks serialize Ingest per device.
	locks keylock.Set
}

// maxBatch bounds the writes that share one transaction (see
// groupcommit.DB.Batch).
const maxBatch = 512

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
	s := &Store{opts: opts, log: opts.Logger, now: opts.Now}
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
	s.db = groupcommit.Wrap(db, maxBatch, ErrClosed)
	return s, nil
}

// Close closes the file. It is idempotent.
func (s *Store) Close() error { return s.db.Close() }
