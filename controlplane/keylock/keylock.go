// Package keylock serializes work per key (a device id, say) without
// keeping a mutex for every key ever seen: a key's lock exists only while
// someone holds or waits for it.
package keylock

import "sync"

// Set is a set of per-key locks. The zero value is ready to use; a Set
// must not be copied after first use.
type Set struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	mu   sync.Mutex
	refs int
}

// Lock locks key's lock, waiting while another holder has it, and
// returns the function that unlocks it (call it exactly once).
func (s *Set) Lock(key string) (unlock func()) {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = make(map[string]*entry)
	}
	e := s.locks[key]
	if e == nil {
		e = &entry{}
		s.locks[key] = e
	}
	e.refs++
	s.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		s.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}
}

// Len is the number of keys whose lock is held or waited for.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.locks)
}
