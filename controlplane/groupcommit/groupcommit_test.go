package groupcommit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("b"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestConcurrentWritesShareCommits: every write lands exactly once, and
// concurrent writers share transactions (fewer commits than writes).
func TestConcurrentWritesShareCommits(t *testing.T) {
	db := openDB(t)
	var commits int
	var mu sync.Mutex
	c := New(func(fn func(*bolt.Tx) error) error {
		mu.Lock()
		commits++
		mu.Unlock()
		return db.Update(fn)
	}, 64)
	defer c.Close()

	const writers, each = 32, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				key := binary.BigEndian.AppendUint32(nil, uint32(w*each+i))
				if err := c.Do(func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put(key, []byte("v")) }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	var n int
	db.View(func(tx *bolt.Tx) error { n = tx.Bucket([]byte("b")).Stats().KeyN; return nil })
	if n != writers*each {
		t.Fatalf("%d keys stored, want %d", n, writers*each)
	}
	if commits >= writers*each {
		t.Fatalf("%d commits for %d writes: no grouping", commits, writers*each)
	}
	t.Logf("%d writes in %d commits", writers*each, commits)
}

// TestFailingWriteIsolated: a failing write returns its own error and
// rolls back only itself; the others of its group commit.
func TestFailingWriteIsolated(t *testing.T) {
	db := openDB(t)
	c := New(db.Update, 64)
	defer c.Close()
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			errs[i] = c.Do(func(tx *bolt.Tx) error {
				if err := tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%02d", i), []byte("v")); err != nil {
					return err
				}
				if i == 7 {
					return boom
				}
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (i == 7) != errors.Is(err, boom) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range errs {
			if got := b.Get(fmt.Appendf(nil, "k%02d", i)) != nil; got != (i != 7) {
				t.Errorf("key %d stored = %v", i, got)
			}
		}
		return nil
	})
}

func TestClose(t *testing.T) {
	db := openDB(t)
	c := New(db.Update, 8)
	if err := c.Do(func(*bolt.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	if err := c.Do(func(*bolt.Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close = %v, want ErrClosed", err)
	}
}
