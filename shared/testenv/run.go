package testenv

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Running is a daemon's Run(ctx) going on its own goroutine (Start), for
// a test to stop.
type Running struct {
	cancel context.CancelFunc
	done   chan error
}

// Start calls run on a goroutine with a context that Stop cancels.
func Start(run func(context.Context) error) *Running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	return r
}

// ErrNotStopped: Run did not return within Stop's limit.
var ErrNotStopped = errors.New("testenv: Run did not return after its context ended")

// Stop cancels Run's context and waits up to limit for it to return: its
// error, or ErrNotStopped.
func (r *Running) Stop(limit time.Duration) error {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			return fmt.Errorf("Run: %w", err)
		}
		return nil
	case <-time.After(limit):
		return fmt.Errorf("%w (waited %v)", ErrNotStopped, limit)
	}
}
