package keylock

import (
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"
)

// TestSerializesPerKey checks that holders of one key never overlap,
// that other keys are not held up, and that no lock outlives its users.
func TestSerializesPerKey(t *testing.T) {
	var s Set
	const workers, rounds = 8, 200
	inside := map[string]int{}
	var mu sync.Mutex
	var g errgroup.Group
	for w := range workers {
		key := []string{"a", "b"}[w%2]
		g.Go(func() error {
			for range rounds {
				unlock := s.Lock(key)
				mu.Lock()
				inside[key]++
				n := inside[key]
				mu.Unlock()
				if n != 1 {
					unlock()
					t.Errorf("key %s: %d holders at once", key, n)
					return nil
				}
				mu.Lock()
				inside[key]--
				mu.Unlock()
				unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("%d locks left after every holder unlocked, want 0", n)
	}
}

// TestOtherKeyNotBlocked checks that holding one key does not block another.
func TestOtherKeyNotBlocked(t *testing.T) {
	var s Set
	unlockA := s.Lock("a")
	done := make(chan struct{})
	go func() {
		s.Lock("b")()
		close(done)
	}()
	<-done // would hang (and the test time out) if "b" waited for "a"
	if n := s.Len(); n != 1 {
		t.Fatalf("Len = %d while a is held, want 1", n)
	}
	unlockA()
	if n := s.Len(); n != 0 {
		t.Fatalf("Len = %d after unlock, want 0", n)
	}
}
