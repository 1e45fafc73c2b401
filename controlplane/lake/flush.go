package lake

// Flushing: a partition's staged rows become one Parquet file, in the
// two transactions and one write the package documentation describes.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FlushResult says what a flush cycle wrote.
type FlushResult struct {
	// Files are the keys written, Rows their rows.
	Files []string
	Rows  int
}

// Run writes partitions as they become due (FlushRows, FlushBytes,
// FlushAge) until ctx ends; a flush interrupted by a crash or a failed
// write is written again first. Close writes what is left.
func (l *Lake) Run(ctx context.Context) {
	tick := time.NewTicker(min(max(l.opts.FlushAge/4, 100*time.Millisecond), 10*time.Second))
	defer tick.Stop()
	for {
		kick := l.kick
		if _, err := l.flush(ctx, false); err != nil && ctx.Err() == nil {
			l.log.Error("lake: writing sample files (retried)", "err", err)
			kick = nil // a failing store is retried at the tick, not at every delivery
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-kick:
		}
	}
}

// Flush writes every staged row now, whatever its partition's size and
// age.
func (l *Lake) Flush(ctx context.Context) (FlushResult, error) { return l.flush(ctx, true) }

// Close writes what is staged (within ctx: what is not written stays
// staged for the next start) and closes the staging file.
func (l *Lake) Close(ctx context.Context) error {
	_, ferr := l.flush(ctx, true)
	if ferr != nil {
		ferr = fmt.Errorf("lake: at close, some samples stay staged for the next start: %w", ferr)
	}
	return errors.Join(ferr, l.db.Close())
}

// flush finishes the pending flushes, then plans and writes a flush for
// every partition that is due (all of them with force).
//
// A partition whose flush fails is left for the next cycle (Run's tick):
// its pending flushes after the failed one are not tried in this cycle,
// nor is it planned again in it, so that a file that cannot be written
// (a key or a prefix the store refuses, a row that does not encode)
// holds back neither the other partitions nor the cycle. The failed
// flush stays pending and is written again, under the same name, first
// in the next cycle. The errors, one per failed partition, are returned
// together. A partition is planned again in a cycle only after its
// flush succeeded, which consumed staged rows: the cycle ends.
func (l *Lake) flush(ctx context.Context, force bool) (FlushResult, error) {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	var res FlushResult
	var errs []error
	failed := map[string]bool{} // partitions whose flush failed in this cycle
	fail := func(part string, err error) {
		if part == "" { // unreadable flush: finish's error names it
			errs = append(errs, err)
			return
		}
		failed[part] = true
		errs = append(errs, fmt.Errorf("lake: partition %s: %w", part, err))
	}
	seqs, err := l.pendingFlushes()
	if err != nil {
		return res, err
	}
	for _, seq := range seqs {
		part := l.flushPartition(seq)
		if part != "" && failed[part] {
			continue
		}
		if err := l.finish(ctx, seq, &res); err != nil {
			fail(part, err)
		}
		if ctx.Err() != nil {
			return res, errors.Join(append(errs, ctx.Err())...)
		}
	}
	for {
		seq, part, err := l.planExcept(force, failed)
		if err != nil {
			// The staging file refuses writes: the next plans would fail too.
			return res, errors.Join(append(errs, err)...)
		}
		if seq == nil {
			return res, errors.Join(errs...)
		}
		if err := l.finish(ctx, seq, &res); err != nil {
			fail(part, err)
		}
		if ctx.Err() != nil {
			return res, errors.Join(append(errs, ctx.Err())...)
		}
	}
}

// flushPartition is the partition of pending flush seq; "" when its
// meta cannot be read (finish then says why).
func (l *Lake) flushPartition(seq []byte) string {
	var meta flushMeta
	l.db.View(func(tx *bolt.Tx) error {
		if f := tx.Bucket(bucketFlush).Bucket(seq); f != nil {
			if v := f.Get(keyFlush); v != nil {
				json.Unmarshal(v, &meta)
			}
		}
		return nil
	})
	return meta.Partition
}

func (l *Lake) pendingFlushes() ([][]byte, error) {
	var seqs [][]byte
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFlush).ForEachBucket(func(k []byte) error {
			seqs = append(seqs, bytes.Clone(k))
			return nil
		})
	})
	return seqs, err
}

// plan moves the oldest rows (up to FlushRows and about FlushBytes) of
// one due partition into a new flush and returns its sequence number;
// false when none is due.
func (l *Lake) plan(force bool) ([]byte, bool, error) {
	seq, _, err := l.planExcept(force, nil)
	return seq, seq != nil, err
}

// planExcept is plan, skipping the partitions in skip; it returns the
// new flush's sequence number and partition, nil when none is due.
func (l *Lake) planExcept(force bool, skip map[string]bool) ([]byte, string, error) {
	now := l.now().UTC()
	// Most cycles find nothing due: look in a read transaction first.
	var due []byte
	if err := l.db.View(func(tx *bolt.Tx) error {
		due = l.duePartition(tx, now, force, skip)
		return nil
	}); err != nil || due == nil {
		return nil, "", err
	}
	var seq, part []byte
	err := l.db.Update(func(tx *bolt.Tx) error {
		seq, part = nil, nil
		pb, rows, fb := tx.Bucket(bucketParts), tx.Bucket(bucketRows), tx.Bucket(bucketFlush)
		part = l.duePartition(tx, now, force, skip)
		if part == nil {
			return nil
		}
		n, err := fb.NextSequence()
		if err != nil {
			return err
		}
		seq = u64(n)
		f, err := fb.CreateBucket(seq)
		if err != nil {
			return err
		}
		key := fmt.Sprintf("%s/part-%s-%s-%06d.parquet", part, now.Format("20060102T150405Z"), l.token, n)
		meta, err := json.Marshal(flushMeta{Partition: string(part), Key: key})
		if err != nil {
			return err
		}
		if err := f.Put(keyFlush, meta); err != nil {
			return err
		}
		prefix := append(bytes.Clone(part), 0)
		var take [][]byte
		var taken, bytesTaken int64
		rc := rows.Cursor()
		for k, v := rc.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && taken < int64(l.opts.FlushRows); k, v = rc.Next() {
			if taken > 0 && bytesTaken+int64(len(v)) > l.opts.FlushBytes {
				break
			}
			if err := f.Put(bytes.Clone(k), bytes.Clone(v)); err != nil {
				return err
			}
			take = append(take, bytes.Clone(k))
			taken++
			bytesTaken += int64(len(v))
		}
		for _, k := range take {
			if err := rows.Delete(k); err != nil {
				return err
			}
		}
		return addPart(pb, part, -taken, -bytesTaken)
	})
	if err != nil {
		return nil, "", fmt.Errorf("lake: planning a flush: %w", err)
	}
	return seq, string(part), nil
}

// duePartition is the first partition that is due (any with rows, with
// force): FlushRows or FlushBytes reached, or its oldest row staged
// FlushAge ago. Partitions in skip are not.
func (l *Lake) duePartition(tx *bolt.Tx, now time.Time, force bool, skip map[string]bool) []byte {
	rows := tx.Bucket(bucketRows)
	c := tx.Bucket(bucketParts).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		n, b := partStats(v)
		if n == 0 || skip[string(k)] {
			continue
		}
		if force || n >= uint64(l.opts.FlushRows) || int64(b) >= l.opts.FlushBytes {
			return bytes.Clone(k)
		}
		// The partition's oldest row is its first.
		if _, first := rows.Cursor().Seek(append(bytes.Clone(k), 0)); first != nil {
			var r row
			if json.Unmarshal(first, &r) == nil && now.Sub(r.Received) >= l.opts.FlushAge {
				return bytes.Clone(k)
			}
		}
	}
	return nil
}

// finish writes flush seq's file and deletes the flush and its rows'
// dedup entries.
func (l *Lake) finish(ctx context.Context, seq []byte, res *FlushResult) error {
	var meta flushMeta
	var rows []row
	var size int64
	err := l.db.View(func(tx *bolt.Tx) error {
		f := tx.Bucket(bucketFlush).Bucket(seq)
		if f == nil {
			return errors.New("flush vanished")
		}
		return f.ForEach(func(k, v []byte) error {
			if bytes.Equal(k, keyFlush) {
				return json.Unmarshal(v, &meta)
			}
			var r row
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("row %x: %w", k, err)
			}
			rows = append(rows, r)
			size += int64(len(v))
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("lake: reading flush %d: %w", binary.BigEndian.Uint64(seq), err)
	}
	if len(rows) > 0 {
		data, err := encodeParquet(rows, l.opts.RowGroupRows)
		if err != nil {
			// Rows validated at ingest always encode; keep them staged.
			l.flushErrors.Add(1)
			return fmt.Errorf("lake: encoding %s: %w", meta.Key, err)
		}
		if err := l.opts.Store.PutObject(ctx, meta.Key, data); err != nil {
			l.flushErrors.Add(1)
			return fmt.Errorf("lake: writing %s: %w", l.opts.Store.Location(meta.Key), err)
		}
		l.log.Info("lake: wrote sample file", "file", l.opts.Store.Location(meta.Key), "rows", len(rows), "bytes", len(data))
	}
	err = l.db.Update(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketIdx)
		for _, r := range rows {
			if err := idx.Delete(devKey(r.Device, r.Epoch, r.ID)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketFlush).DeleteBucket(seq)
	})
	if err != nil {
		return fmt.Errorf("lake: completing %s (written; it is written again at the next start): %w", meta.Key, err)
	}
	l.staged.Add(-size)
	if len(rows) > 0 {
		l.files.Add(1)
		l.rows.Add(uint64(len(rows)))
		res.Files = append(res.Files, meta.Key)
		res.Rows += len(rows)
	}
	return nil
}
