package testenv

import (
	"bytes"
	"sync"
)

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers:
// a process's output or a logger's, written by goroutines that may
// outlive the test, read when it fails. The zero value is ready to use.
type SyncBuffer struct {
	// Max, if positive, is the most bytes it keeps: once it holds more,
	// later writes are dropped (and reported written), so that a chatty
	// debug log cannot eat the machine's memory.
	Max int

	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p, or drops it once the buffer holds more than Max bytes.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Max > 0 && s.b.Len() > s.Max {
		return len(p), nil
	}
	return s.b.Write(p)
}

// String returns what was written.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
