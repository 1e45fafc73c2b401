package uplink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// StateFile is the name of the uplink's state file in Config.StateDir.
const StateFile = "uplink-state.json"

// stateVersion is the schema of StateFile this code reads and writes.
const stateVersion = 1

// maxStateFile bounds what parseState reads; the real file is ~150 bytes.
const maxStateFile = 4 << 10

// state is what the uplink keeps across restarts.
type state struct {
	V        int    `json:"v"`
	DeviceID string `json:"deviceId"`
	// AcceptedSeq is the seq of the last desired state the guard accepted;
	// it is written before the agent acts on it, so that a restart still
	// refuses anything older (protocol.Guard.LastSeq).
	AcceptedSeq uint64 `json:"acceptedSeq"`
	// DoneSeq is the last accepted seq whose Apply finished (either way).
	// DoneSeq < AcceptedSeq after a restart means the agent stopped in
	// the middle of that Apply: the redelivered retained message resumes it.
	DoneSeq uint64 `json:"doneSeq"`
	// Attempts counts the Apply calls started for AcceptedSeq, so that a
	// desired state that crashes the agent is not resumed forever.
	Attempts int `json:"attempts"`
	// Session is the last connection's Status.Session.
	Session uint64 `json:"session"`
}

// parseState decodes and checks a state file's content.
func parseState(b []byte, deviceID string) (state, error) {
	var s state
	if len(b) > maxStateFile {
		return s, fmt.Errorf("%d bytes, the limit is %d", len(b), maxStateFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return state{}, fmt.Errorf("not a JSON state object: %w", err)
	}
	if dec.More() {
		return state{}, errors.New("trailing data after the JSON object")
	}
	switch {
	case s.V != stateVersion:
		return state{}, fmt.Errorf("schema version %d, this code reads %d", s.V, stateVersion)
	case s.DeviceID != deviceID:
		return state{}, fmt.Errorf("it belongs to device %q, this is %q", s.DeviceID, deviceID)
	case s.DoneSeq > s.AcceptedSeq:
		return state{}, fmt.Errorf("doneSeq %d is above acceptedSeq %d", s.DoneSeq, s.AcceptedSeq)
	case s.Attempts < 0:
		return state{}, fmt.Errorf("attempts %d is negative", s.Attempts)
	}
	return s, nil
}

// stateStore holds the state in memory and writes every change to
// StateFile atomically before it takes effect.
type stateStore struct {
	path string

	writeMu sync.Mutex // serializes changes and their file writes
	mu      sync.Mutex // guards st; never held across I/O, so readers never wait for an fsync
	st      state
}

// openState reads dir/StateFile (creating dir if needed); a missing file
// is a fresh state. A file that cannot be read or parsed is an error
// wrapping ErrState: starting from zero would let the device accept
// replayed desired states again.
func openState(dir, deviceID string) (*stateStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("uplink: state dir: %w", err)
	}
	s := &stateStore{
		path: filepath.Join(dir, StateFile),
		st:   state{V: stateVersion, DeviceID: deviceID},
	}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrState, err)
	}
	st, err := parseState(b, deviceID)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w (remove it only to reset the device's replay protection)", ErrState, s.path, err)
	}
	s.st = st
	return s, nil
}

// get returns a copy of the current state.
func (s *stateStore) get() state {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// update applies fn to a copy of the state and writes it; the change
// takes effect only once the write succeeded.
func (s *stateStore) update(fn func(*state)) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	next := s.get()
	fn(&next)
	if err := s.write(next); err != nil {
		return err
	}
	s.set(next)
	return nil
}

func (s *stateStore) set(st state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
}

// accept records seq as accepted (first attempt), before it is applied.
func (s *stateStore) accept(seq uint64) error {
	return s.update(func(st *state) {
		st.AcceptedSeq = seq
		st.Attempts = 1
	})
}

// resume counts one more attempt at the accepted seq.
func (s *stateStore) resume() error {
	return s.update(func(st *state) { st.Attempts++ })
}

// done records that the Apply of seq finished.
func (s *stateStore) done(seq uint64) error {
	return s.update(func(st *state) {
		if seq > st.DoneSeq && seq <= st.AcceptedSeq {
			st.DoneSeq = seq
		}
	})
}

// nextSession returns the session number of a new connection: above every
// earlier one, and at least the current time in milliseconds, so that it
// still increases across restarts if a write of the counter failed. It is
// persisted; a failed write is returned along with the (usable) number.
func (s *stateStore) nextSession(now time.Time) (uint64, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	next := s.get()
	next.Session = max(next.Session+1, uint64(max(now.UnixMilli(), 0)))
	err := s.write(next)
	s.set(next) // in memory even if the write failed
	return next.Session, err
}

// write replaces the file atomically: temp file, fsync, rename, fsync dir.
func (s *stateStore) write(st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("uplink: encoding state: %w", err)
	}
	b = append(b, '\n')
	if err := atomicfile.WriteFile(s.path, b, 0o600); err != nil {
		return fmt.Errorf("uplink: writing state: %w", err)
	}
	return nil
}

// guard returns the replay guard for the current state.
func (s *stateStore) guard(deviceID string, maxSkew time.Duration) protocol.Guard {
	st := s.get()
	return protocol.Guard{DeviceID: deviceID, LastSeq: st.AcceptedSeq, MaxSkew: maxSkew}
}
