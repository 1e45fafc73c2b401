package telemetry

import (
	"errors"

	bolt "go.etcd.io/bbolt"
)

// maxBatch bounds the writes that share one transaction.
const maxBatch = 512

type batchReq struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// batch runs fn in a write transaction shared with the other batch writes
// waiting (group commit): when the store is idle fn commits at once; while
// a commit is being fsynced, writes arriving meanwhile gather and commit
// together in the next one. fn may run more than once (when another write
// of its group fails, the group is retried without it), so it must only
// touch tx and values it resets on every run.
func (s *Store) batch(fn func(*bolt.Tx) error) error {
	req := batchReq{fn: fn, done: make(chan error, 1)}
	select {
	case s.reqs <- req:
	case <-s.quit:
		return ErrClosed
	}
	return <-req.done
}

// commitLoop is the group committer, running from Open to Close.
func (s *Store) commitLoop() {
	defer s.committer.Done()
	for {
		var group []batchReq
		select {
		case r := <-s.reqs:
			group = append(group, r)
		case <-s.quit:
			return
		}
	gather:
		for len(group) < maxBatch {
			select {
			case r := <-s.reqs:
				group = append(group, r)
			default:
				break gather
			}
		}
		s.commitGroup(group)
	}
}

var errRetryGroup = errors.New("telemetry: retry group")

// commitGroup commits group in one transaction. A write that fails is run
// alone, so that its error is its caller's only, and the rest retried.
func (s *Store) commitGroup(group []batchReq) {
	for len(group) > 0 {
		failed, failErr := -1, error(nil)
		err := s.update(func(tx *bolt.Tx) error {
			for i, r := range group {
				if err := r.fn(tx); err != nil {
					failed, failErr = i, err
					return errRetryGroup
				}
			}
			return nil
		})
		if failed < 0 {
			for _, r := range group {
				r.done <- err
			}
			return
		}
		r := group[failed]
		if len(group) == 1 {
			r.done <- failErr
			return
		}
		r.done <- s.update(r.fn)
		group = append(group[:failed:failed], group[failed+1:]...)
	}
}
