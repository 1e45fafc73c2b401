package rollout

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Sentinel errors callers branch on with errors.Is. Every error this
// package returns for bad input wraps one of them and names what was
// wrong.
var (
	// ErrInvalid: a spec is not valid (each problem is a *FieldError
	// naming the field), or an argument is not.
	ErrInvalid = errors.New("rollout: invalid")
	// ErrNotFound: no rollout with that id.
	ErrNotFound = errors.New("rollout: not found")
	// ErrConflict: the target overlaps a rollout that is still active
	// (the error is a *ConflictError naming it).
	ErrConflict = errors.New("rollout: devices held by another rollout")
	// ErrState: the operator action is not allowed in the rollout's
	// current state (e.g. resume of a running rollout).
	ErrState = errors.New("rollout: not allowed in this state")
	// ErrClosed: the Engine was used after Close.
	ErrClosed = errors.New("rollout: engine closed")
)

// FieldError is one problem with a spec: the field's path (e.g.
// "waves[2].percent"), what is wrong with it and, for a spec parsed from
// YAML, the line it is on.
type FieldError struct {
	// Path names the field in the spec's own terms: "gates.errorRate.max",
	// "waves[2].percent"; empty for the document as a whole.
	Path string
	// Line is the 1-based YAML line, 0 when unknown.
	Line int
	// Msg says what is wrong.
	Msg string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// ConflictError says which active rollouts hold devices of a new
// rollout's target.
type ConflictError struct {
	// Holders maps a rollout id to the target devices it holds (sorted).
	Holders map[string][]string
}

func (e *ConflictError) Error() string {
	ids := make([]string, 0, len(e.Holders))
	for id := range e.Holders {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		devs := e.Holders[id]
		sample := devs
		if len(sample) > 3 {
			sample = sample[:3]
		}
		more := ""
		if len(devs) > len(sample) {
			more = ", ..."
		}
		parts[i] = fmt.Sprintf("%d device(s) held by rollout %s (%s%s)", len(devs), id, strings.Join(sample, ", "), more)
	}
	return fmt.Sprintf("%v: %s", ErrConflict, strings.Join(parts, "; "))
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// HolderIDs returns the ids of the rollouts holding devices, sorted.
func (e *ConflictError) HolderIDs() []string {
	ids := make([]string, 0, len(e.Holders))
	for id := range e.Holders {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// errorList collects FieldErrors.
type errorList []error

func (l *errorList) add(path string, line int, format string, args ...any) {
	*l = append(*l, &FieldError{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (l errorList) err() error { return errors.Join(l...) }
