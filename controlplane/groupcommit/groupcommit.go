// Package groupcommit batches bbolt write transactions: writes that arrive
// while a commit is being fsynced gather and commit together in the next
// transaction, so many callers share one fsync. When the database is idle
// a write commits at once, without waiting for company.
package groupcommit

import (
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrClosed is returned for writes submitted after Close.
var ErrClosed = errors.New("groupcommit: closed")

// errRetryGroup aborts a group transaction after one of its writes failed.
var errRetryGroup = errors.New("groupcommit: retry group")

type request struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// Committer runs writes against one bbolt database in shared transactions.
type Committer struct {
	update   func(func(*bolt.Tx) error) error
	maxBatch int
	reqs     chan request
	quit     chan struct{}
	loop     sync.WaitGroup
	once     sync.Once
}

// New starts a committer. update runs one write transaction (usually
// db.Update, perhaps with the caller's error mapping); at most maxBatch
// writes share a transaction.
func New(update func(func(*bolt.Tx) error) error, maxBatch int) *Committer {
	if maxBatch < 1 {
		maxBatch = 1
	}
	c := &Committer{update: update, maxBatch: maxBatch, reqs: make(chan request), quit: make(chan struct{})}
	c.loop.Add(1)
	go c.run()
	return c
}

// Do runs fn in a write transaction shared with the other writes waiting,
// and returns fn's error (or the commit's). fn may run more than once:
// when another write of its group fails, the group is retried without it,
// so fn must only touch tx and values it resets on every run.
func (c *Committer) Do(fn func(*bolt.Tx) error) error {
	req := request{fn: fn, done: make(chan error, 1)}
	select {
	case c.reqs <- req:
	case <-c.quit:
		return ErrClosed
	}
	return <-req.done
}

// Close stops the committer after the group in progress; later writes get
// ErrClosed. It is idempotent.
func (c *Committer) Close() {
	c.once.Do(func() { close(c.quit) })
	c.loop.Wait()
}

func (c *Committer) run() {
	defer c.loop.Done()
	for {
		var group []request
		select {
		case r := <-c.reqs:
			group = append(group, r)
		case <-c.quit:
			return
		}
	gather:
		for len(group) < c.maxBatch {
			select {
			case r := <-c.reqs:
				group = append(group, r)
			default:
				break gather
			}
		}
		c.commit(group)
	}
}

// commit commits group in one transaction. A write that fails is run
// alone, so that its error is its caller's only, and the rest retried.
func (c *Committer) commit(group []request) {
	for len(group) > 0 {
		failed, failErr := -1, error(nil)
		err := c.update(func(tx *bolt.Tx) error {
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
		r.done <- c.update(r.fn)
		group = append(group[:failed:failed], group[failed+1:]...)
	}
}

// DB is a bbolt database together with the Committer for its batch
// writes, as fleetd's stores use it. View and Update run one transaction
// of their own, Batch a shared one; all three report a use after Close as
// the store's own closed error.
type DB struct {
	bolt      *bolt.DB
	group     *Committer
	closed    error
	closeOnce sync.Once
	closeErr  error
}

// Wrap takes db over: its batch writes share transactions of at most
// maxBatch writes, and closed is the error (the store's ErrClosed) that
// View, Update and Batch report once DB is closed.
func Wrap(db *bolt.DB, maxBatch int, closed error) *DB {
	d := &DB{bolt: db, closed: closed}
	d.group = New(d.Update, maxBatch)
	return d
}

// View runs fn in a read transaction.
func (d *DB) View(fn func(*bolt.Tx) error) error { return d.closedErr(d.bolt.View(fn)) }

// Update runs fn in a write transaction of its own.
func (d *DB) Update(fn func(*bolt.Tx) error) error { return d.closedErr(d.bolt.Update(fn)) }

// Batch runs fn in a write transaction shared with whatever other batch
// writes are waiting (see Committer.Do): when the database is idle fn
// commits at once; while a commit is being fsynced, the writes arriving
// meanwhile gather and commit together in the next one. fn may run more
// than once, so it must only touch tx and values it resets on every run.
func (d *DB) Batch(fn func(*bolt.Tx) error) error {
	err := d.group.Do(fn)
	if errors.Is(err, ErrClosed) {
		return d.closed
	}
	return err
}

// Close stops the committer, then closes the file. It is idempotent.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		d.group.Close()
		d.closeErr = d.bolt.Close()
	})
	return d.closeErr
}

// closedErr maps bbolt's closed-database error to the store's.
func (d *DB) closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", d.closed, err)
	}
	return err
}
