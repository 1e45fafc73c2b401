package outbox

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchPayload is a typical prediction sample.
var benchPayload = make([]byte, 200)

// BenchmarkAppend compares durable appends per second, side by side:
//
//   - outbox: this package (writer goroutine, group commit);
//   - bbolt-update: one db.Update (one commit, two fdatasyncs) per record,
//     what a naive outbox would do;
//   - bbolt-batch: bbolt's own db.Batch, with its default 10ms/1000 and
//     tuned to 1ms/64.
//
// All use the same file options (map freelist, NoFreelistSync) and fsync
// every commit. appenders is the number of concurrent callers.
func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("outbox/appenders=%d", n), func(b *testing.B) {
			o, err := Open(filepath.Join(b.TempDir(), "outbox.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer o.Close()
			parallel(b, n, func() error {
				_, err := o.Append(context.Background(), "prediction", benchPayload)
				return err
			})
		})
	}
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("bbolt-update/appenders=%d", n), func(b *testing.B) {
			db := rawDB(b)
			parallel(b, n, func() error { return db.Update(putOne) })
		})
	}
	for _, tc := range []struct {
		delay     time.Duration
		size      int
		appenders int
	}{
		{10 * time.Millisecond, 1000, 64}, // bbolt's defaults
		{time.Millisecond, 64, 1},         // tuned to the 64 appenders
		{time.Millisecond, 64, 64},
		{time.Millisecond, 64, 256},
	} {
		b.Run(fmt.Sprintf("bbolt-batch-%s-%d/appenders=%d", tc.delay, tc.size, tc.appenders), func(b *testing.B) {
			db := rawDB(b)
			db.MaxBatchDelay, db.MaxBatchSize = tc.delay, tc.size
			parallel(b, tc.appenders, func() error { return db.Batch(putOne) })
		})
	}
}

// parallel runs fn b.N times from n goroutines and reports records/s.
func parallel(b *testing.B, n int, fn func() error) {
	b.SetBytes(int64(len(benchPayload)))
	b.SetParallelism((n + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	if n == 1 {
		for range b.N {
			if err := fn(); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := fn(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func rawDB(b *testing.B) *bolt.DB {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, &bolt.Options{
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(recordsBucket)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func putOne(tx *bolt.Tx) error {
	recs := tx.Bucket(recordsBucket)
	id, err := recs.NextSequence()
	if err != nil {
		return err
	}
	return recs.Put(idKey(id), encodeValue("prediction", time.Now(), benchPayload))
}
