// Package lake is fleetd's sample lake: the "sample" records devices send
// under their bundles' sampling policies (protocol.SampleRecord), written
// as Parquet files, Hive-partitioned, to the registry's storage (a
// directory or an S3 bucket), for Feast, DuckDB or pandas to read as
// they are. See docs/integrations.md.
//
// # Nothing accepted is lost, nothing written twice
//
// Ingest stages the records in a bbolt file of fleetd's data directory
// before the device's delivery is acknowledged, deduplicated by (device,
// outbox epoch, record id) in the three durable steps of
// controlplane/telemetry (stage; ask the dedup oracle, the inventory's
// SeenRecords; commit). The flusher then moves a partition's rows into a
// flush of their own, which names its file, writes the file (a temporary
// file renamed into place, or one S3 PutObject) and only then deletes the
// flush. A flush interrupted by a crash is written again under the same
// name at the next start, replacing whatever part of it may have landed.
// So every accepted record ends up in exactly one file.
//
// # Layout of the staging file
//
//	meta   "token" -> random id of this staging file (part of file names)
//	idx    device 0 epoch 0 id(8) -> state(1) [row key]   0 confirmed, 1 pending
//	pend   device 0 epoch 0 id(8) -> row (JSON), staged, not confirmed yet
//	rows   partition 0 seq(8)     -> row (JSON), confirmed, in staging order
//	parts  partition              -> rows(8) bytes(8)
//	flush  seq(8) -> bucket: "meta" -> {partition, key}; row key -> row
package lake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/keylock"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Defaults of Options.
const (
	DefaultFlushRows      = 100_000
	DefaultFlushBytes     = 64 << 20
	DefaultFlushAge       = 5 * time.Minute
	DefaultRowGroupRows   = 50_000
	DefaultMaxStagedBytes = 1 << 30
)

// ErrInvalid: a device id, epoch or option is not valid.
var ErrInvalid = errors.New("lake: invalid argument")

// Store is where the Parquet files go: registry.ObjectStore (a directory
// or a prefix of an S3 bucket).
type Store interface {
	// PutObject stores data under key, atomically.
	PutObject(ctx context.Context, key string, data []byte) error
	// Location is where key is, for logs.
	Location(key string) string
}

// Options configures a Lake.
type Options struct {
	// Store receives the files. Required.
	Store Store
	// FlushRows and FlushBytes (of staged records) make a partition's
	// file: when one holds that many, it is written; a file holds at most
	// FlushRows rows. FlushAge writes a partition whose oldest record was
	// staged that long ago. Zero means the default.
	FlushRows  int
	FlushBytes int64
	FlushAge   time.Duration
	// RowGroupRows bounds the rows of one Parquet row group.
	RowGroupRows int
	// MaxStagedBytes bounds the records staged and not yet written;
	// records beyond it are dropped (and counted) at Ingest.
	MaxStagedBytes int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the lake's logs; nil discards them.
	Logger *slog.Logger
}

// Record is one "sample" record a device delivered.
type Record struct {
	// ID is the outbox record id.
	ID uint64
	// Payload is the record's payload (a protocol.SampleRecord).
	Payload []byte
}

// SeenFunc is the dedup oracle, as in controlplane/telemetry: it records
// ids of one device and epoch as seen, durably, and reports for each
// whether it was seen before (inventory.Store.SeenRecords).
type SeenFunc func(ids []uint64) (duplicate []bool, err error)

// Result says what Ingest did with the records.
type Result struct {
	// Accepted counts the records staged for the first time.
	Accepted int
	// Duplicates counts those delivered before.
	Duplicates int
	// Invalid counts those that were not valid sample records; Dropped
	// those refused because the staging area was full. Both are gone.
	Invalid, Dropped int
}

// Stats are the lake's counters since it was opened, and what is staged.
type Stats struct {
	Accepted, Duplicates, Invalid, Dropped uint64
	// Files and Rows count what was written; FlushErrors the failed
	// writes (retried).
	Files, Rows, FlushErrors uint64
	// StagedBytes is what is staged and not written yet.
	StagedBytes int64
}

// Lake stages sample records and writes them as Parquet files. It is
// safe for concurrent use.
type Lake struct {
	db    *bolt.DB
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	token string

	kick    chan struct{} // a partition reached a size threshold
	flushMu sync.Mutex    // one flush cycle at a time

	locks keylock.Set // serialize Ingest per device

	staged                                 atomic.Int64
	accepted, duplicates, invalid, dropped atomic.Uint64
	files, rows, flushErrors               atomic.Uint64
}

var (
	bucketMeta  = []byte("meta")
	bucketIdx   = []byte("idx")
	bucketPend  = []byte("pend")
	bucketRows  = []byte("rows")
	bucketParts = []byte("parts")
	bucketFlush = []byte("flush")
	keyToken    = []byte("token")
	keyFlush    = []byte("meta") // inside a flush bucket
)

const (
	stateConfirmed = 0
	statePending   = 1
)

// row is a staged record.
type row struct {
	Device   string          `json:"d"`
	Epoch    string          `json:"e,omitempty"`
	ID       uint64          `json:"i"`
	Received time.Time       `json:"r"`
	Sample   json.RawMessage `json:"s"`
}

// flushMeta is what a flush writes.
type flushMeta struct {
	Partition string `json:"partition"`
	Key       string `json:"key"`
}

// Open opens (creating if needed) the staging file at path.
func Open(path string, opts Options) (*Lake, error) {
	if opts.Store == nil {
		return nil, fmt.Errorf("%w: Options.Store is required", ErrInvalid)
	}
	if opts.FlushRows < 0 || opts.FlushBytes < 0 || opts.FlushAge < 0 || opts.RowGroupRows < 0 || opts.MaxStagedBytes < 0 {
		return nil, fmt.Errorf("%w: negative option", ErrInvalid)
	}
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	if opts.FlushRows == 0 {
		opts.FlushRows = DefaultFlushRows
	}
	if opts.RowGroupRows == 0 {
		opts.RowGroupRows = DefaultRowGroupRows
	}
	if opts.FlushAge == 0 {
		opts.FlushAge = DefaultFlushAge
	}
	def(&opts.FlushBytes, DefaultFlushBytes)
	def(&opts.MaxStagedBytes, DefaultMaxStagedBytes)
	l := &Lake{opts: opts, log: opts.Logger, now: opts.Now, kick: make(chan struct{}, 1)}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("lake: opening %s: %w", path, err)
	}
	var staged int64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketIdx, bucketPend, bucketRows, bucketParts, bucketFlush} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if t := meta.Get(keyToken); t != nil {
			l.token = string(t)
		} else {
			b := make([]byte, 4)
			rand.Read(b)
			l.token = hex.EncodeToString(b)
			if err := meta.Put(keyToken, []byte(l.token)); err != nil {
				return err
			}
		}
		// What is staged: confirmed rows, pending ones, unfinished flushes.
		if err := tx.Bucket(bucketParts).ForEach(func(_, v []byte) error {
			_, n := partStats(v)
			staged += int64(n)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPend).ForEach(func(_, v []byte) error {
			staged += int64(len(v))
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketFlush).ForEachBucket(func(k []byte) error {
			return tx.Bucket(bucketFlush).Bucket(k).ForEach(func(rk, v []byte) error {
				if !bytes.Equal(rk, keyFlush) {
					staged += int64(len(v))
				}
				return nil
			})
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("lake: initialising %s: %w", path, err)
	}
	l.db = db
	l.staged.Store(staged)
	return l, nil
}

// Stats returns the lake's counters.
func (l *Lake) Stats() Stats {
	return Stats{
		Accepted: l.accepted.Load(), Duplicates: l.duplicates.Load(), Invalid: l.invalid.Load(), Dropped: l.dropped.Load(),
		Files: l.files.Load(), Rows: l.rows.Load(), FlushErrors: l.flushErrors.Load(), StagedBytes: l.staged.Load(),
	}
}

func devKey(device, epoch string, id uint64) []byte {
	k := make([]byte, 0, len(device)+len(epoch)+10)
	k = append(k, device...)
	k = append(k, 0)
	k = append(k, epoch...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, id)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func partStats(v []byte) (rows, bytes uint64) {
	if len(v) != 16 {
		return 0, 0
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
}

func addPart(b *bolt.Bucket, part []byte, rows, n int64) error {
	r, by := partStats(b.Get(part))
	r, by = uint64(int64(r)+rows), uint64(int64(by)+n)
	if r == 0 {
		return b.Delete(part)
	}
	return b.Put(part, binary.BigEndian.AppendUint64(u64(r), by))
}

// Partition is the Hive partition of a sample: the bundle's name and
// version and the UTC date of the request,
// "bundle=NAME/version=VERSION/date=YYYY-MM-DD".
func Partition(s *protocol.SampleRecord) string {
	name, version, _ := strings.Cut(s.Model, "@")
	return "bundle=" + name + "/version=" + version + "/date=" + s.Time.UTC().Format(time.DateOnly)
}

// per-record outcome of the stage step.
const (
	outInserted = iota
	outRecovering
	outPresent
	outGone // invalid or dropped: only shown to the oracle
)

// Ingest stages recs, "sample" records device delivered from outbox
// epoch, counting exactly those not delivered before. What it staged is
// durable when it returns without error; after an error the caller
// refuses the delivery and the device delivers again. Records that are
// not valid sample records, or that do not fit MaxStagedBytes, are
// dropped and counted (their ids still go to the oracle).
func (l *Lake) Ingest(device, epoch string, recs []Record, seen SeenFunc) (Result, error) {
	if err := protocol.ValidateDeviceID(device); err != nil {
		return Result{}, fmt.Errorf("%w: device %q: %w", ErrInvalid, device, err)
	}
	if epoch != "" {
		if err := protocol.ValidateDeviceID(epoch); err != nil {
			return Result{}, fmt.Errorf("%w: epoch %q: %w", ErrInvalid, epoch, err)
		}
	}
	if len(recs) == 0 {
		return Result{}, nil
	}
	now := l.now().UTC()
	var res Result
	outs := make([]int, len(recs))
	vals := make([][]byte, len(recs))
	parts := make([][]byte, len(recs))
	var adding int64
	for i, r := range recs {
		s, err := protocol.DecodeSampleRecord(r.Payload)
		if err != nil || r.ID == 0 {
			if err == nil {
				err = errors.New("record id 0")
			}
			l.log.Warn("lake: sample record refused", "device", device, "record", r.ID, "err", err)
			res.Invalid++
			outs[i] = outGone
			continue
		}
		v, err := json.Marshal(row{Device: device, Epoch: epoch, ID: r.ID, Received: now, Sample: r.Payload})
		if err != nil {
			return Result{}, fmt.Errorf("lake: encoding record %d of %q: %w", r.ID, device, err)
		}
		vals[i], parts[i] = v, []byte(Partition(s))
	}

	defer l.locks.Lock(device)()

	// 1. Stage.
	err := l.db.Batch(func(tx *bolt.Tx) error {
		adding = 0
		idx, pend := tx.Bucket(bucketIdx), tx.Bucket(bucketPend)
		staged := l.staged.Load()
		inBatch := map[uint64]bool{}
		for i, r := range recs {
			if vals[i] == nil {
				outs[i] = outGone
				continue
			}
			k := devKey(device, epoch, r.ID)
			switch v := idx.Get(k); {
			case inBatch[r.ID]:
				outs[i] = outPresent
			case v == nil:
				if staged+adding+int64(len(vals[i])) > l.opts.MaxStagedBytes {
					outs[i] = outGone
					continue
				}
				if err := pend.Put(k, vals[i]); err != nil {
					return err
				}
				if err := idx.Put(k, []byte{statePending}); err != nil {
					return err
				}
				adding += int64(len(vals[i]))
				outs[i] = outInserted
			case v[0] == statePending:
				outs[i] = outRecovering
			default:
				outs[i] = outPresent
			}
			inBatch[r.ID] = true
		}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("lake: staging %d records of %q: %w", len(recs), device, err)
	}
	l.staged.Add(adding)
	for i := range recs {
		if outs[i] == outGone && vals[i] != nil {
			res.Dropped++
		}
	}
	if res.Dropped > 0 {
		l.log.Warn("lake: staging area full (samples.maxStagedBytes): sample records dropped", "device", device, "records", res.Dropped)
	}

	// 2. Ask the oracle about everything not held yet.
	var ask []uint64
	for i, o := range outs {
		if o != outPresent {
			ask = append(ask, recs[i].ID)
		}
	}
	var dup []bool
	if len(ask) > 0 {
		if dup, err = seen(ask); err != nil {
			return Result{}, fmt.Errorf("lake: dedup of %d records of %q: %w", len(ask), device, err)
		}
		if len(dup) != len(ask) {
			return Result{}, fmt.Errorf("lake: dedup of %q answered %d results for %d ids", device, len(dup), len(ask))
		}
	}

	// 3. Commit.
	var removed int64
	kick := false
	err = l.db.Batch(func(tx *bolt.Tx) error {
		res.Accepted, res.Duplicates, removed, kick = 0, 0, 0, false
		idx, pend, rows, pb := tx.Bucket(bucketIdx), tx.Bucket(bucketPend), tx.Bucket(bucketRows), tx.Bucket(bucketParts)
		j := 0
		for i, r := range recs {
			switch outs[i] {
			case outPresent:
				res.Duplicates++
				continue
			case outGone:
				j++
				continue
			}
			d := dup[j]
			j++
			k := devKey(device, epoch, r.ID)
			v := pend.Get(k)
			if v == nil {
				// Confirmed in between by a concurrent redelivery.
				res.Duplicates++
				continue
			}
			if outs[i] == outInserted && d {
				// A redelivery of a record written long ago.
				removed += int64(len(v))
				if err := pend.Delete(k); err != nil {
					return err
				}
				if err := idx.Delete(k); err != nil {
					return err
				}
				res.Duplicates++
				continue
			}
			seq, err := rows.NextSequence()
			if err != nil {
				return err
			}
			part := parts[i]
			if part == nil { // recovering: the partition is in the row
				part = partOfRow(v)
			}
			rk := binary.BigEndian.AppendUint64(append(append([]byte{}, part...), 0), seq)
			if err := rows.Put(rk, bytes.Clone(v)); err != nil {
				return err
			}
			if err := pend.Delete(k); err != nil {
				return err
			}
			if err := idx.Put(k, append([]byte{stateConfirmed}, rk...)); err != nil {
				return err
			}
			if err := addPart(pb, part, 1, int64(len(v))); err != nil {
				return err
			}
			if n, b := partStats(pb.Get(part)); n >= uint64(l.opts.FlushRows) || int64(b) >= l.opts.FlushBytes {
				kick = true
			}
			res.Accepted++
		}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("lake: committing %d records of %q: %w", len(recs), device, err)
	}
	l.staged.Add(-removed)
	l.accepted.Add(uint64(res.Accepted))
	l.duplicates.Add(uint64(res.Duplicates))
	l.invalid.Add(uint64(res.Invalid))
	l.dropped.Add(uint64(res.Dropped))
	if kick {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return res, nil
}

// partOfRow is the partition of a staged row (its sample was validated
// when it was staged).
func partOfRow(v []byte) []byte {
	var r row
	if json.Unmarshal(v, &r) != nil {
		return []byte("bundle=unknown/version=unknown/date=unknown")
	}
	var s protocol.SampleRecord
	if json.Unmarshal(r.Sample, &s) != nil {
		return []byte("bundle=unknown/version=unknown/date=unknown")
	}
	return []byte(Partition(&s))
}
