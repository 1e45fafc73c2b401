package protocol

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Sentinel errors. Every error this package returns wraps exactly one of
// them (ErrTopic may also wrap ErrDeviceID), so callers branch with
// errors.Is and count with ReasonOf.
var (
	// ErrTooLarge: the payload is over MaxPayloadSize (or decompresses to
	// more than MaxDecodedSize).
	ErrTooLarge = errors.New("protocol: message too large")
	// ErrMalformed: not a JSON object of the expected shape (syntax error,
	// wrong JSON type for a field, trailing data, bad compression).
	ErrMalformed = errors.New("protocol: malformed message")
	// ErrVersion: the envelope version "v" is not one this code speaks.
	ErrVersion = errors.New("protocol: unsupported message version")
	// ErrInvalid: a required field is missing or a value is out of range;
	// the message names the field.
	ErrInvalid = errors.New("protocol: invalid message")
	// ErrTopic: not a topic of the device subtree.
	ErrTopic = errors.New("protocol: invalid topic")
	// ErrDeviceID: not a valid device id.
	ErrDeviceID = errors.New("protocol: invalid device id")

	// ErrReplay: a desired state whose seq is not above the last accepted
	// one (a replayed or reordered instruction).
	ErrReplay = errors.New("protocol: desired state replayed")
	// ErrDuplicate is the benign case of ErrReplay: the seq equals the last
	// accepted one, as when the broker redelivers the retained desired
	// state on every reconnect. errors.Is(ErrDuplicate, ErrReplay) holds.
	ErrDuplicate = fmt.Errorf("%w (same seq as the last accepted one)", ErrReplay)
	// ErrExpired: the desired state's expiresAt has passed (a stale
	// instruction held back by an attacker or a long outage).
	ErrExpired = errors.New("protocol: desired state expired")
	// ErrNotYetValid: the desired state's issuedAt is further in the
	// future than the allowed clock skew.
	ErrNotYetValid = errors.New("protocol: desired state not yet valid")
	// ErrWrongDevice: the desired state names another device.
	ErrWrongDevice = errors.New("protocol: desired state for another device")
)

// Reasons are the short, stable labels for refusals, used as counter keys
// and in "desired.refused" events.
const (
	ReasonTooLarge    = "too_large"
	ReasonMalformed   = "malformed"
	ReasonVersion     = "version"
	ReasonInvalid     = "invalid"
	ReasonTopic       = "topic"
	ReasonDeviceID    = "device_id"
	ReasonDuplicate   = "duplicate"
	ReasonReplay      = "replay"
	ReasonExpired     = "expired"
	ReasonNotYetValid = "not_yet_valid"
	ReasonWrongDevice = "wrong_device"
	ReasonOther       = "other"
)

// ReasonOf maps an error from this package to its Reason label (ReasonOther
// for nil or foreign errors).
func ReasonOf(err error) string {
	switch {
	case err == nil:
		return ReasonOther
	case errors.Is(err, ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, ErrVersion):
		return ReasonVersion
	case errors.Is(err, ErrInvalid):
		return ReasonInvalid
	case errors.Is(err, ErrTopic):
		return ReasonTopic
	case errors.Is(err, ErrDeviceID):
		return ReasonDeviceID
	case errors.Is(err, ErrDuplicate):
		return ReasonDuplicate
	case errors.Is(err, ErrReplay):
		return ReasonReplay
	case errors.Is(err, ErrExpired):
		return ReasonExpired
	case errors.Is(err, ErrNotYetValid):
		return ReasonNotYetValid
	case errors.Is(err, ErrWrongDevice):
		return ReasonWrongDevice
	}
	return ReasonOther
}

// Counters counts refusals by reason, for "rejected with a logged reason
// and a counter". The zero value is ready to use and safe for concurrent
// use; keys should come from a small fixed set (the Reason constants, or a
// component's own constants), never from input.
type Counters struct {
	m sync.Map // string -> *atomic.Uint64
}

// Add adds n to the counter for reason and returns the new value.
func (c *Counters) Add(reason string, n uint64) uint64 {
	v, ok := c.m.Load(reason)
	if !ok {
		v, _ = c.m.LoadOrStore(reason, new(atomic.Uint64))
	}
	return v.(*atomic.Uint64).Add(n)
}

// Inc adds one to the counter for reason and returns the new value.
func (c *Counters) Inc(reason string) uint64 { return c.Add(reason, 1) }

// Count counts err under ReasonOf(err) and returns the new value.
func (c *Counters) Count(err error) uint64 { return c.Inc(ReasonOf(err)) }

// Get returns the counter for reason (0 if never counted).
func (c *Counters) Get(reason string) uint64 {
	if v, ok := c.m.Load(reason); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}

// Snapshot returns a copy of every counter.
func (c *Counters) Snapshot() map[string]uint64 {
	out := make(map[string]uint64)
	c.m.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// Reasons returns the reasons counted so far, sorted.
func (c *Counters) Reasons() []string {
	var out []string
	c.m.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	sort.Strings(out)
	return out
}
