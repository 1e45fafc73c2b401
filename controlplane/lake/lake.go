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
// controlplane/dedup (stage; ask the dedup oracle, the inventory's
// SeenRecords; commit). A delivery that does not fit the staging area is
// refused whole (ErrFull) and delivered again later, so a sample is never
// acknowledged without being staged. The flusher then moves a partition's rows into a
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
//	budget device 0 bundle@version 0 YYYY-MM-DD -> bytes(8) staged that day
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

	"github.com/edgefleet/edgefleet/controlplane/dedup"
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

// ErrFull: the staging area (Options.MaxStagedBytes) cannot take a
// delivery until files are written; the device delivers it again.
var ErrFull = errors.New("lake: staging area full")

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
	// MaxStagedBytes bounds the records staged and not yet written: a
	// delivery whose new records would pass it is refused (ErrFull), to
	// be delivered again once files are written.
	MaxStagedBytes int64
	// Policy, if set, returns the daily budget (sampling.maxBytesPerDay)
	// of a bundle version "name@version", 0 if it has no sampling policy:
	// samples of such a version, or beyond a device's budget for the
	// version and the sample's UTC day, are dropped and counted. An error
	// refuses the delivery (it is delivered again).
	Policy func(model string) (maxBytesPerDay int64, err error)
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

// Result says what Ingest did with the records.
type Result struct {
	// Accepted counts the records staged for the first time.
	Accepted int
	// Duplicates counts those delivered before.
	Duplicates int
	// Invalid counts those that were not valid sample records or were of
	// a bundle version without a sampling policy; Dropped those beyond
	// the device's daily budget. Both are gone.
	Invalid, Dropped int
}

// Stats are the lake's counters since it was opened, and what is staged.
type Stats struct {
	Accepted, Duplicates, Invalid, Dropped uint64
	// Full counts the deliveries refused (to be delivered again) because
	// the staging area was full.
	Full uint64
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
	full                                   atomic.Uint64
	files, rows, flushErrors               atomic.Uint64
}

var (
	bucketMeta   = []byte("meta")
	bucketIdx    = []byte("idx")
	bucketPend   = []byte("pend")
	bucketRows   = []byte("rows")
	bucketParts  = []byte("parts")
	bucketFlush  = []byte("flush")
	bucketBudget = []byte("budget")
	keyToken     = []byte("token")
	keyFlush     = []byte("meta") // inside a flush bucket
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
		for _, name := range [][]byte{bucketMeta, bucketIdx, bucketPend, bucketRows, bucketParts, bucketFlush, bucketBudget} {
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
		Accepted: l.accepted.Load(), Duplicates: l.duplicates.Load(), Invalid: l.invalid.Load(), Dropped: l.dropped.Load(), Full: l.full.Load(),
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

// Ingest stages recs, "sample" records device delivered from outbox
// epoch, counting exactly those not delivered before: Stage, then
// dedup.Settle with seen. What it staged is durable when it returns
// without error; after an error (ErrFull included) the caller refuses
// the delivery and the device delivers it again.
func (l *Lake) Ingest(device, epoch string, recs []Record, seen dedup.Oracle) (Result, error) {
	var res Result
	st, err := l.Stage(device, epoch, recs, &res)
	if err != nil {
		return Result{}, err
	}
	if err := dedup.Settle(seen, st); err != nil {
		return Result{}, fmt.Errorf("lake: device %q: %w", device, err)
	}
	return res, nil
}

// Stage is Ingest's first step, for a delivery whose records go to
// several stores (fleetd stages a telemetry batch's other records in
// controlplane/telemetry): it stages recs and returns the stage for
// dedup.Settle, whose commit fills *res and the lake's counters. The
// stage holds device's lock until it is settled or released.
//
// Records that are not valid sample records, are of a bundle version
// without a sampling policy (Options.Policy), or are beyond the device's
// budget for the bundle version and day, are not staged, and counted;
// their ids still go to the oracle. When the delivery's new records do
// not fit Options.MaxStagedBytes, Stage stages none of them and returns
// ErrFull.
func (l *Lake) Stage(device, epoch string, recs []Record, res *Result) (*dedup.Stage, error) {
	if err := protocol.ValidateDeviceID(device); err != nil {
		return nil, fmt.Errorf("%w: device %q: %w", ErrInvalid, device, err)
	}
	if epoch != "" {
		if err := protocol.ValidateDeviceID(epoch); err != nil {
			return nil, fmt.Errorf("%w: epoch %q: %w", ErrInvalid, epoch, err)
		}
	}
	if len(recs) == 0 {
		return &dedup.Stage{Commit: func([]bool) error { return nil }}, nil
	}
	now := l.now().UTC()
	ids := make([]uint64, len(recs))
	outs := make([]dedup.Outcome, len(recs))
	vals := make([][]byte, len(recs))
	parts := make([][]byte, len(recs))
	budgets := make([][]byte, len(recs)) // budget keys
	caps := make([]int64, len(recs))     // the budgets' bytes a day; 0 none
	limits := map[string]int64{}         // by model
	var invalid int
	for i, r := range recs {
		ids[i] = r.ID
		s, err := l.decode(device, now, r, limits)
		if errors.Is(err, errNoRecord) {
			invalid++
			outs[i] = dedup.Gone
			continue
		}
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(row{Device: device, Epoch: epoch, ID: r.ID, Received: now, Sample: r.Payload})
		if err != nil {
			return nil, fmt.Errorf("lake: encoding record %d of %q: %w", r.ID, device, err)
		}
		vals[i], parts[i] = v, []byte(Partition(s))
		budgets[i], caps[i] = budgetKey(device, s.Model, s.Time), limits[s.Model]
	}

	unlock := l.locks.Lock(device)
	var once sync.Once
	release := func() { once.Do(unlock) }

	// 1. Stage.
	var adding int64
	err := l.db.Batch(func(tx *bolt.Tx) error {
		adding = 0
		idx, pend := tx.Bucket(bucketIdx), tx.Bucket(bucketPend)
		inBatch := map[uint64]bool{}
		for i, r := range recs {
			if vals[i] == nil {
				continue // Gone
			}
			k := devKey(device, epoch, r.ID)
			switch v := idx.Get(k); {
			case inBatch[r.ID]:
				outs[i] = dedup.Present
			case v == nil:
				if err := pend.Put(k, vals[i]); err != nil {
					return err
				}
				if err := idx.Put(k, []byte{statePending}); err != nil {
					return err
				}
				adding += int64(len(vals[i]))
				outs[i] = dedup.Inserted
			case v[0] == statePending:
				outs[i] = dedup.Recovering
			default:
				outs[i] = dedup.Present
			}
			inBatch[r.ID] = true
		}
		if staged := l.staged.Load(); adding > 0 && staged+adding > l.opts.MaxStagedBytes {
			return fmt.Errorf("%w: %d bytes staged, %d more would pass the limit of %d (samples.maxStagedBytes): the delivery of device %q waits for the files to be written",
				ErrFull, staged, adding, l.opts.MaxStagedBytes, device)
		}
		return nil
	})
	if err != nil {
		release()
		if errors.Is(err, ErrFull) {
			l.full.Add(1)
			l.log.Warn("lake: staging area full: delivery refused until files are written", "device", device, "err", err)
			return nil, err
		}
		return nil, fmt.Errorf("lake: staging %d records of %q: %w", len(recs), device, err)
	}
	l.staged.Add(adding)
	return &dedup.Stage{IDs: ids, Outs: outs, Release: release, Commit: func(dup []bool) error {
		if err := l.commit(device, epoch, recs, outs, dup, parts, budgets, caps, res); err != nil {
			return err
		}
		res.Invalid = invalid
		l.invalid.Add(uint64(invalid))
		return nil
	}}, nil
}

// errNoRecord: a record that is not a valid sample record (decode logged
// why).
var errNoRecord = errors.New("not a sample record")

// decode decodes a delivered sample record and checks it against its
// bundle version's policy, filling limits; errNoRecord refuses the
// record, other errors the delivery.
func (l *Lake) decode(device string, now time.Time, r Record, limits map[string]int64) (*protocol.SampleRecord, error) {
	refuse := func(err error) (*protocol.SampleRecord, error) {
		l.log.Warn("lake: sample record refused", "device", device, "record", r.ID, "err", err)
		return nil, errNoRecord
	}
	s, err := protocol.DecodeSampleRecord(r.Payload)
	if err != nil {
		return refuse(err)
	}
	if r.ID == 0 {
		return refuse(errors.New("record id 0"))
	}
	if s.Time.After(now.Add(maxAhead)) {
		return refuse(fmt.Errorf("time %s is more than %s ahead of fleetd's clock", s.Time.Format(time.RFC3339), maxAhead))
	}
	limit, ok := limits[s.Model]
	if !ok && l.opts.Policy != nil {
		if limit, err = l.opts.Policy(s.Model); err != nil {
			return nil, fmt.Errorf("lake: the sampling policy of %s: %w", s.Model, err)
		}
		limits[s.Model] = limit
	}
	if l.opts.Policy != nil && limit == 0 {
		return refuse(fmt.Errorf("bundle %s has no sampling policy", s.Model))
	}
	return s, nil
}

// maxAhead is how far ahead of fleetd's clock a sample's time may be.
const maxAhead = 24 * time.Hour

// commit is the third step of Ingest.
func (l *Lake) commit(device, epoch string, recs []Record, outs []dedup.Outcome, dup []bool, parts, budgets [][]byte, caps []int64, res *Result) error {
	var removed int64
	kick := false
	err := l.db.Batch(func(tx *bolt.Tx) error {
		res.Accepted, res.Duplicates, res.Dropped, removed, kick = 0, 0, 0, 0, false
		idx, pend, rows, pb, bud := tx.Bucket(bucketIdx), tx.Bucket(bucketPend), tx.Bucket(bucketRows), tx.Bucket(bucketParts), tx.Bucket(bucketBudget)
		spent := map[string]int64{}
		now := l.now().UTC()
		drop := func(k, v []byte) error {
			removed += int64(len(v))
			if err := pend.Delete(k); err != nil {
				return err
			}
			return idx.Delete(k)
		}
		for i, r := range recs {
			switch outs[i] {
			case dedup.Present:
				res.Duplicates++
				continue
			case dedup.Gone:
				continue
			}
			k := devKey(device, epoch, r.ID)
			v := pend.Get(k)
			if v == nil {
				// Confirmed in between by a concurrent redelivery.
				res.Duplicates++
				continue
			}
			if outs[i] == dedup.Inserted && dup[i] {
				// A redelivery of a record written long ago.
				if err := drop(k, v); err != nil {
					return err
				}
				res.Duplicates++
				continue
			}
			// The device's budget for the bundle version and day.
			bk := string(budgets[i])
			used, ok := spent[bk]
			if !ok {
				used = int64(getU64(bud, budgets[i]))
			}
			if caps[i] > 0 && used+int64(len(r.Payload)) > caps[i] {
				if err := drop(k, v); err != nil {
					return err
				}
				res.Dropped++
				continue
			}
			spent[bk] = used + int64(len(r.Payload))
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
		for bk, used := range spent {
			if err := putBudget(bud, []byte(bk), used, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("lake: committing %d records of %q: %w", len(recs), device, err)
	}
	l.staged.Add(-removed)
	l.accepted.Add(uint64(res.Accepted))
	l.duplicates.Add(uint64(res.Duplicates))
	l.dropped.Add(uint64(res.Dropped))
	if res.Dropped > 0 {
		l.log.Warn("lake: samples beyond the device's daily budget (sampling.maxBytesPerDay) dropped", "device", device, "records", res.Dropped)
	}
	if kick {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// budgetKey is the key of a device's budget for a bundle version and UTC
// day: device 0 model 0 date.
func budgetKey(device, model string, t time.Time) []byte {
	return []byte(device + "\x00" + model + "\x00" + t.UTC().Format(time.DateOnly))
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// budgetDays is how many days a device's budgets are kept: a sample
// delivered later than that (a long cut) starts a fresh one.
const budgetDays = 7

// putBudget records a budget and, when it is a new one, deletes the
// device's budgets of days before budgetDays ago.
func putBudget(b *bolt.Bucket, k []byte, used int64, now time.Time) error {
	if b.Get(k) == nil {
		device, _, _ := bytes.Cut(k, []byte{0})
		prefix := append(bytes.Clone(device), 0)
		oldest := now.AddDate(0, 0, -budgetDays).Format(time.DateOnly)
		var old [][]byte
		c := b.Cursor()
		for bk, _ := c.Seek(prefix); bk != nil && bytes.HasPrefix(bk, prefix); bk, _ = c.Next() {
			if i := bytes.LastIndexByte(bk, 0); string(bk[i+1:]) < oldest {
				old = append(old, bytes.Clone(bk))
			}
		}
		for _, bk := range old {
			if err := b.Delete(bk); err != nil {
				return err
			}
		}
	}
	return b.Put(k, u64(uint64(used)))
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
