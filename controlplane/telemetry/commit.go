package telemetry

import (
	"errors"

	"github.com/edgefleet/edgefleet/controlplane/groupcommit"
	bolt "go.etcd.io/bbolt"
)

// maxBatch bounds the writes that share one transaction.
const maxBatch = 512

// batch runs fn in a write transaction shared with the other batch writes
// waiting (group commit, see package groupcommit). fn may run more than
// once, so it must only touch tx and values it resets on every run.
func (s *Store) batch(fn func(*bolt.Tx) error) error {
	err := s.group.Do(fn)
	if errors.Is(err, groupcommit.ErrClosed) {
		return ErrClosed
	}
	return err
}
