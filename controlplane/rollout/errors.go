package rollout

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/edgefleet/edgefleet/shared/configfile"
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
// YAML, where it is.
type FieldError struct {
	// File names the spec's file (CheckSpecFile); empty when unknown.
	File string
	// Line and Column are 1-based, 0 when unknown.
	Line, Column int
	// Path names the field in the spec's own terms: "gates.errorRate.max",
	// "waves[2].percent"; empty for the document as a whole.
	Path string
	// Msg says what is wrong.
	Msg string
}

// Error is "FILE:LINE:COLUMN: PATH: MSG", less what is unknown (LINE:COLUMN
// for a spec without a file name).
func (e *FieldError) Error() string {
	ce := configfile.Error{File: e.File, Line: e.Line, Column: e.Column, Path: e.Path, Msg: e.Msg}
	return ce.Error()
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
	ids := e.HolderIDs()
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

// errorList collects the problems of a spec, placed where the spec's
// YAML set the fields they name (when r has the spec's source).
type errorList struct {
	r *configfile.Report
}

func (l *errorList) add(path string, format string, args ...any) {
	if l.r == nil {
		l.r = configfile.NewReport(nil)
	}
	l.r.Add(path, format, args...)
}

func (l *errorList) err() error {
	if l.r == nil {
		return nil
	}
	return fieldErrors(l.r.Errors())
}
