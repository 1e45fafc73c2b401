package inventory

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// BenchmarkSeenRecords measures telemetry deduplication beside the raw
// bbolt writes it is made of: one fsynced transaction per call, batched
// ids, and concurrent callers (one per device, as the broker's connection
// goroutines call it) sharing transactions through group commit, next to
// bbolt's own db.Batch.
func BenchmarkSeenRecords(b *testing.B) {
	for _, batch := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("store/seq/batch=%d", batch), func(b *testing.B) {
			s, _ := newStore(b)
			enroll(b, s, "dev-1", nil)
			ids := make([]uint64, batch)
			next := uint64(1)
			b.ResetTimer()
			for b.Loop() {
				for i := range ids {
					ids[i] = next
					next++
				}
				if _, err := s.SeenRecords("dev-1", "e", ids); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
	b.Run("raw-bolt/seq/update", func(b *testing.B) {
		db := rawBolt(b)
		var n uint64
		for b.Loop() {
			n++
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("b")).Put(binary.BigEndian.AppendUint64(nil, n), []byte("x"))
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})

	b.Run("store/parallel/batch=1", func(b *testing.B) {
		s, _ := newStore(b)
		var dev atomic.Int64
		for i := range 64 {
			enroll(b, s, fmt.Sprintf("dev-%d", i), nil)
		}
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			id := fmt.Sprintf("dev-%d", dev.Add(1)%64)
			next := uint64(1)
			for pb.Next() {
				if _, err := s.SeenRecord(id, "e", next); err != nil {
					b.Error(err)
					return
				}
				next++
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("raw-bolt/parallel/db.Batch", func(b *testing.B) {
		db := rawBolt(b)
		var n atomic.Uint64
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := binary.BigEndian.AppendUint64(nil, n.Add(1))
				if err := db.Batch(func(tx *bolt.Tx) error {
					return tx.Bucket([]byte("b")).Put(k, []byte("x"))
				}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}

func rawBolt(b *testing.B) *bolt.DB {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("b"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return db
}

// BenchmarkAuthenticate measures a device CONNECT's credential check
// beside a bare SHA-256 compare and bcrypt at its default cost (what a
// slow password hash would cost every CONNECT).
func BenchmarkAuthenticate(b *testing.B) {
	s, _ := newStore(b)
	c := enroll(b, s, "dev-1", nil)
	b.Run("store", func(b *testing.B) {
		for b.Loop() {
			if _, ok := s.Authenticate("dev-1", c.Password); !ok {
				b.Fatal("refused")
			}
		}
	})
	b.Run("store/parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok := s.Authenticate("dev-1", c.Password); !ok {
					b.Error("refused")
					return
				}
			}
		})
	})
	b.Run("store/unknown-user", func(b *testing.B) {
		for b.Loop() {
			if _, ok := s.Authenticate("dev-404", c.Password); ok {
				b.Fatal("accepted")
			}
		}
	})
	want := sha256.Sum256([]byte(c.Password))
	b.Run("raw-sha256", func(b *testing.B) {
		for b.Loop() {
			got := sha256.Sum256([]byte(c.Password))
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				b.Fatal("refused")
			}
		}
	})
	hash, err := bcrypt.GenerateFromPassword([]byte(c.Password), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("bcrypt-cost10", func(b *testing.B) {
		for b.Loop() {
			if bcrypt.CompareHashAndPassword(hash, []byte(c.Password)) != nil {
				b.Fatal("refused")
			}
		}
	})
}
