package agent

// Shadow mode: the overview below, where the candidate lives on disk
// (ShadowDir) and the options that size the sampling. The rest is in
// shadow_runner.go (the goroutines that run and compare the samples),
// shadow_compare.go (when two outputs agree), shadow_stats.go (the
// windows, records and counters), shadow_state.go (the persisted
// candidate) and shadow_agent.go (the Agent's hooks and Apply's steps).

import (
	"fmt"
	"time"
)

// Shadow mode: a desired state may name a candidate bundle to run in
// shadow (protocol.DesiredState.Shadow). The agent fetches and verifies it
// like an install (slot.Store.Unpack: signature, digests, limits) into
// DATA/shadow/, loads it and runs its smoke test, and from then on runs a
// sample of the active model's successful requests through it as well, on
// the same inputs. The candidate never answers a client: the request path
// only decides whether to keep a request's input (api.Options.KeepInput)
// and hands it to a bounded queue; one goroutine runs the candidate and
// compares. Every shadow window, a "shadow" record per candidate goes to
// the outbox (protocol.ShadowRecord), which fleetd's rollout engine reads for the
// shadowAgreement gate. The candidate is persisted (DATA/shadow/state.json)
// and restored at start; it is stopped when a desired state no longer
// names it (a rollback, or the waves installing it as active).

// ShadowDir holds the shadow candidate under the data directory: its
// state file and its unpacked bundle directory.
const ShadowDir = "shadow"

// Defaults of the shadow options.
const (
	// DefaultShadowRate is the share of the active model's successful
	// requests also run on the shadow candidate.
	DefaultShadowRate = 0.1
	// DefaultShadowWindow is how often a shadow record is appended.
	DefaultShadowWindow = time.Minute
	// DefaultShadowQueue bounds the inputs waiting for the candidate;
	// samples that find it full are dropped and counted.
	DefaultShadowQueue = 64
)

type shadowOptions struct {
	rate      float64
	window    time.Duration
	queue     int
	rateSet   bool
	windowSet bool
	queueSet  bool
}

// WithShadowRate sets the share, in [0, 1], of the active model's
// successful requests that a shadow candidate also runs
// (DefaultShadowRate); 0 loads a candidate but compares nothing.
func WithShadowRate(r float64) Option {
	return func(o *options) { o.shadow.rate, o.shadow.rateSet = r, true }
}

// WithShadowWindow sets how often the shadow comparison is appended to
// the outbox as a "shadow" record (DefaultShadowWindow).
func WithShadowWindow(d time.Duration) Option {
	return func(o *options) { o.shadow.window, o.shadow.windowSet = d, true }
}

// WithShadowQueue sets how many sampled inputs may wait for the shadow
// candidate (DefaultShadowQueue).
func WithShadowQueue(n int) Option {
	return func(o *options) { o.shadow.queue, o.shadow.queueSet = n, true }
}

// resolve fills in the defaults and checks the values.
func (o *shadowOptions) resolve() error {
	if !o.rateSet {
		o.rate = DefaultShadowRate
	}
	if !o.windowSet {
		o.window = DefaultShadowWindow
	}
	if !o.queueSet {
		o.queue = DefaultShadowQueue
	}
	switch {
	case !(o.rate >= 0 && o.rate <= 1):
		return fmt.Errorf("agent: the shadow sample rate must be in [0, 1], got %v", o.rate)
	case o.window <= 0:
		return fmt.Errorf("agent: the shadow window must be > 0, got %v", o.window)
	case o.queue <= 0:
		return fmt.Errorf("agent: the shadow queue must be > 0, got %d", o.queue)
	}
	return nil
}
