package inventory

import "errors"

// Sentinel errors callers branch on with errors.Is. Every error this
// package returns for bad input wraps one of them and names what was
// wrong.
var (
	// ErrNotFound: no device with that id.
	ErrNotFound = errors.New("inventory: device not found")
	// ErrExists: Enroll for a device id that is already enrolled (and
	// Options.AllowReenrol is off).
	ErrExists = errors.New("inventory: device already enrolled")
	// ErrEnrolToken: the enrolment token matches none of the configured
	// ones (or none are configured).
	ErrEnrolToken = errors.New("inventory: enrolment token not valid")
	// ErrInvalid: a device id, label, epoch, record id, reported state
	// or desired state is not valid; the message names it.
	ErrInvalid = errors.New("inventory: invalid argument")
	// ErrSelector: a label selector does not parse; the message names
	// the bad term.
	ErrSelector = errors.New("inventory: invalid label selector")
	// ErrClosed: the Store was used after Close.
	ErrClosed = errors.New("inventory: closed")
)
