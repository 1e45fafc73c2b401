package outbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// Defaults for the zero values of Options.
const (
	DefaultMaxBytes       = 64 << 20
	DefaultMaxBatch       = 1024
	DefaultMaxRecordBytes = 1 << 20
)

const (
	// lockTimeout bounds the wait for the file lock held by another process
	// (typically the previous agent still shutting down).
	lockTimeout = 2 * time.Second
	// maxBatchBytes caps the record bytes written by one transaction so that
	// a burst of large records does not build a huge dirty set in memory.
	// A batch always takes at least one request.
	maxBatchBytes = 8 << 20
	// dropLogEvery: drops are logged on the first one after Open and then at
	// most once per this many.
	dropLogEvery = 1000
	// fillPercent for the records bucket: keys only ever grow at the end, so
	// split pages are packed full (fewer pages to write per commit).
	fillPercent = 1.0
)

// Errors returned by the outbox; test with errors.Is.
var (
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("outbox: closed")
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("outbox locked by another process")
	// ErrTooLarge is returned by Append for a record over the per-record
	// limit or larger than the whole outbox bound.
	ErrTooLarge = errors.New("outbox: record too large")
	// ErrInvalid is returned for a bad argument or option.
	ErrInvalid = errors.New("outbox: invalid argument")
	// ErrCorrupt is returned when stored data cannot be decoded.
	ErrCorrupt = errors.New("outbox: corrupt data")
)

// Options configures Open. The zero value gives the defaults.
type Options struct {
	// MaxBytes bounds the stored records (8-byte key plus encoded value
	// each); when an append would go over it, the oldest records are
	// deleted and counted in Stats.Dropped. 0 means DefaultMaxBytes. The
	// file itself is larger by bbolt's page overhead and free pages.
	MaxBytes int64
	// MaxBatch is the most requests committed in one transaction (one
	// fsync). 0 means DefaultMaxBatch.
	MaxBatch int
	// Logger receives drop warnings and open-time repairs; nil discards.
	Logger *slog.Logger
	// MaxRecordBytes is the largest payload Append accepts. 0 means
	// DefaultMaxRecordBytes. (An extension of the agreed API; optional.)
	MaxRecordBytes int
}

// Stats are the outbox's counters. Appended, Acked and Dropped are persisted
// and survive restarts; Appended == Acked + Dropped + Records always holds.
type Stats struct {
	Records  int    // records stored now
	Bytes    int64  // their size as counted against MaxBytes
	Appended uint64 // records ever appended
	Acked    uint64 // records deleted by Ack (unknown ids are not counted)
	Dropped  uint64 // records deleted to stay under MaxBytes, or found corrupt on Open
	// LastID is the last id handed out (on a new file, the one before
	// the first): records with a larger id were appended after this
	// snapshot. The uplink uses it to tell a backlog from live records.
	LastID uint64
}

// Outbox is a durable, bounded FIFO of records backed by one bbolt file.
// All methods are safe for concurrent use.
type Outbox struct {
	db        *bolt.DB
	path      string
	log       *slog.Logger
	maxBytes  int64
	maxBatch  int
	maxRecord int

	mu     sync.Mutex // guards queue and closed
	queue  []*request
	closed bool

	kick   chan struct{} // wakes the writer; capacity 1, coalescing
	quit   chan struct{} // closed by Close: drain the queue and exit
	done   chan struct{} // closed by the writer when it has exited
	notify chan struct{} // returned by Wait; capacity 1, coalescing

	statsMu sync.Mutex
	stats   Stats

	closeOnce sync.Once
	closeErr  error

	// Owned by the writer goroutine (and by Open before it starts).
	state          counters
	lastID         uint64 // the records bucket's sequence: the last id handed out
	batch          []*request
	sessionDropped uint64
}

// Request states, so that a canceled Append and the writer agree on whether
// the record goes into a transaction.
const (
	reqPending   int32 = iota // queued, not yet taken
	reqClaimed                // taken into a transaction; the caller waits for it
	reqAbandoned              // the caller gave up; the writer skips it
)

type request struct {
	state atomic.Int32

	// Append: the encoded value and its accounted size.
	value []byte
	size  int64
	// Ack: the ids to delete.
	ack   []uint64
	isAck bool

	id   uint64 // result of an append
	err  error
	done chan struct{} // closed when id/err are set
}

// Open opens (creating if needed, mode 0600) the outbox file at path. The
// directory must exist. Another process holding the file makes Open fail
// with ErrLocked after a short wait. On open the stored counters are checked
// against the records and repaired (with a log line) if they disagree.
func Open(path string, opts Options) (*Outbox, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	o := &Outbox{
		path:      path,
		log:       opts.Logger,
		maxBytes:  opts.MaxBytes,
		maxBatch:  opts.MaxBatch,
		maxRecord: opts.MaxRecordBytes,
		kick:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		notify:    make(chan struct{}, 1),
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.maxBytes == 0 {
		o.maxBytes = DefaultMaxBytes
	}
	if o.maxBatch == 0 {
		o.maxBatch = DefaultMaxBatch
	}
	if o.maxRecord == 0 {
		o.maxRecord = DefaultMaxRecordBytes
	}
	o.log = o.log.With("outbox", path)

	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The map freelist is O(1) for the allocate/free churn of a queue.
		FreelistType: bolt.FreelistMapType,
		// Not writing the freelist saves pages per commit; bbolt rebuilds it
		// by scanning the file on Open, which for a bounded outbox is cheap.
		NoFreelistSync: true,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %s for the file lock)", ErrLocked, path, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: open %s: %w", path, err)
	}
	o.db = db
	if err := o.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("outbox: open %s: %w", path, err)
	}
	if created {
		// bbolt fsyncs the file, not the directory entry of a new file.
		if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
			db.Close()
			return nil, fmt.Errorf("outbox: open %s: %w", path, err)
		}
	}
	o.publish()
	go o.run()
	return o, nil
}

func (opts Options) check() error {
	switch {
	case opts.MaxBytes < 0:
		return fmt.Errorf("%w: MaxBytes %d is negative", ErrInvalid, opts.MaxBytes)
	case opts.MaxBatch < 0:
		return fmt.Errorf("%w: MaxBatch %d is negative", ErrInvalid, opts.MaxBatch)
	case opts.MaxRecordBytes < 0:
		return fmt.Errorf("%w: MaxRecordBytes %d is negative", ErrInvalid, opts.MaxRecordBytes)
	}
	return nil
}

// Append stores a record and returns its id once the transaction holding it
// has been committed and fsynced. Concurrent calls share one commit.
//
// If ctx is done before the record has been taken into a commit, Append
// returns an error wrapping ctx.Err() and the record is not stored. Once it
// has been taken, Append waits for that commit's outcome (one fsync) even if
// ctx ends meanwhile, so a nil error always means stored and an error means
// not stored (except an I/O error from the commit itself, whose outcome on
// disk is unknown, as with any fsync failure).
func (o *Outbox) Append(ctx context.Context, kind string, payload []byte) (uint64, error) {
	if err := checkKind(kind); err != nil {
		return 0, err
	}
	if len(payload) > o.maxRecord {
		return 0, fmt.Errorf("%w: %s payload is %d bytes, limit is %d", ErrTooLarge, kind, len(payload), o.maxRecord)
	}
	value := encodeValue(kind, time.Now(), payload)
	size := int64(keyLen + len(value))
	if size > o.maxBytes {
		return 0, fmt.Errorf("%w: %s record is %d bytes, larger than the whole outbox (MaxBytes %d)", ErrTooLarge, kind, size, o.maxBytes)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("outbox: append not stored: %w", err)
	}
	r := &request{value: value, size: size, done: make(chan struct{})}
	if err := o.enqueue(r); err != nil {
		return 0, err
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqPending, reqAbandoned) {
			return 0, fmt.Errorf("outbox: append not stored: %w", ctx.Err())
		}
		<-r.done // already in a commit: report its outcome
	}
	return r.id, r.err
}

// Ack deletes the records with these ids, typically after the broker
// acknowledged their delivery. Unknown or already deleted ids are ignored,
// so acking twice is harmless. The deletion is durable when Ack returns.
func (o *Outbox) Ack(ids ...uint64) error {
	if len(ids) == 0 {
		return nil
	}
	r := &request{ack: ids, isAck: true, done: make(chan struct{})}
	if err := o.enqueue(r); err != nil {
		return err
	}
	<-r.done
	return r.err
}

// Peek returns up to max records, oldest first, without removing them.
func (o *Outbox) Peek(max int) ([]Record, error) {
	return o.PeekAfter(0, max)
}

// PeekAfter is Peek for the records whose id is greater than after: the
// oldest of those appended since a Stats snapshot whose LastID was after.
func (o *Outbox) PeekAfter(after uint64, max int) ([]Record, error) {
	if max <= 0 {
		return nil, fmt.Errorf("%w: Peek max %d, want > 0", ErrInvalid, max)
	}
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	out := make([]Record, 0, min(max, o.Stats().Records))
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(recordsBucket).Cursor()
		var k, v []byte
		if after == 0 {
			k, v = c.First()
		} else if after < math.MaxUint64 {
			k, v = c.Seek(idKey(after + 1))
		}
		for ; k != nil && len(out) < max; k, v = c.Next() {
			rec, err := decodeRecord(k, v)
			if err != nil {
				return err
			}
			rec.Payload = append([]byte(nil), rec.Payload...) // v is only valid inside the tx
			out = append(out, rec)
		}
		return nil
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return nil, ErrClosed
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: peek: %w", err)
	}
	return out, nil
}

// Stats returns the current counters (as of the last commit).
func (o *Outbox) Stats() Stats {
	o.statsMu.Lock()
	defer o.statsMu.Unlock()
	return o.stats
}

// Wait returns a channel that receives a value after a commit that appended
// records. Signals coalesce (capacity one) and are meant for one drainer:
//
//	for {
//		recs, err := ob.Peek(n) // drain what is there first, also after Open
//		...
//		if len(recs) == 0 {
//			<-ob.Wait()
//		}
//	}
//
// The channel is closed by Close, which wakes a waiting drainer; its next
// Peek then returns ErrClosed.
func (o *Outbox) Wait() <-chan struct{} {
	return o.notify
}

// Close commits every Append and Ack already queued, then closes the file.
// Later calls return ErrClosed. Close is idempotent and returns the same
// result each time.
func (o *Outbox) Close() error {
	o.closeOnce.Do(func() {
		o.mu.Lock()
		o.closed = true
		o.mu.Unlock()
		close(o.quit)
		<-o.done
		close(o.notify)
		if err := o.db.Close(); err != nil {
			o.closeErr = fmt.Errorf("outbox: close %s: %w", o.path, err)
		}
	})
	return o.closeErr
}

// decodeRecord decodes a stored key/value pair; the payload aliases v.
func decodeRecord(k, v []byte) (Record, error) {
	if len(k) != keyLen {
		return Record{}, fmt.Errorf("%w: key of %d bytes, want %d", ErrCorrupt, len(k), keyLen)
	}
	id := beUint64(k)
	kind, t, payload, err := decodeValue(v)
	if err != nil {
		return Record{}, fmt.Errorf("record %d: %w", id, err)
	}
	return Record{ID: id, Kind: kind, Time: t, Payload: payload}, nil
}

func (o *Outbox) enqueue(r *request) error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return ErrClosed
	}
	o.queue = append(o.queue, r)
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
	return nil
}

// publish copies the writer's counters into the snapshot Stats returns.
func (o *Outbox) publish() {
	s := Stats{
		Records:  int(o.state.records),
		Bytes:    int64(o.state.bytes),
		Appended: o.state.appended,
		Acked:    o.state.acked,
		Dropped:  o.state.dropped,
		LastID:   o.lastID,
	}
	o.statsMu.Lock()
	o.stats = s
	o.statsMu.Unlock()
}
