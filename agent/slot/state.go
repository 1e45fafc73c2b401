package slot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// Names under the data directory.
const (
	stateName    = "state.json"
	lockName     = "lock"
	bundlesDir   = "bundles"
	downloadsDir = "downloads"
	stagingPref  = ".staging-"
	tempPref     = ".state.json.tmp-"
)

// StateSchemaVersion is the state.json schema this code reads and writes.
const StateSchemaVersion = 1

// Slot is one installed bundle.
type Slot struct {
	// ID is "name@version".
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Dir is the unpacked bundle: absolute in what a Store returns,
	// relative to the data directory in state.json.
	Dir         string    `json:"dir"`
	InstalledAt time.Time `json:"installedAt"`
}

// Failure records why the last install or rollback failed.
type Failure struct {
	Time time.Time `json:"time"`
	// Op is "install" or "rollback" (or "recover" for a fallback at Open).
	Op string `json:"op"`
	// ID is the version concerned when known, and Source what was asked
	// to be installed (credentials and query removed).
	ID     string `json:"id,omitempty"`
	Source string `json:"source,omitempty"`
	Error  string `json:"error"`
}

// Event is one entry of the bounded history, oldest first.
type Event struct {
	Time time.Time `json:"time"`
	// Op is "install", "rollback", "recover" or "failed".
	Op    string `json:"op"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error,omitempty"`
}

// State is the content of state.json.
type State struct {
	SchemaVersion int `json:"schemaVersion"`
	// Generation counts commits.
	Generation    uint64    `json:"generation"`
	UpdatedAt     time.Time `json:"updatedAt"`
	Active        *Slot     `json:"active"`
	LastKnownGood *Slot     `json:"lastKnownGood"`
	// LastError is the failure of the most recent install or rollback,
	// nil once one succeeds.
	LastError *Failure `json:"lastError"`
	History   []Event  `json:"history"`
}

// readState reads state.json; a missing file is an empty store.
func (s *Store) readState() (State, error) {
	path := filepath.Join(s.dir, stateName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{SchemaVersion: StateSchemaVersion}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("%w: %w", ErrState, err)
	}
	st, err := parseState(b)
	if err != nil {
		return State{}, fmt.Errorf("%w: %s: %w", ErrState, path, err)
	}
	return st, nil
}

// parseState decodes state.json strictly: unknown fields, trailing data,
// another schema version and slot directories outside bundles/ are
// refused.
func parseState(b []byte) (State, error) {
	var st State
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return State{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return State{}, errors.New("trailing data after the JSON object")
	}
	if st.SchemaVersion != StateSchemaVersion {
		return State{}, fmt.Errorf("schemaVersion %d, this agent reads %d", st.SchemaVersion, StateSchemaVersion)
	}
	for _, c := range []struct {
		what string
		sl   *Slot
	}{{"active", st.Active}, {"lastKnownGood", st.LastKnownGood}} {
		if c.sl == nil {
			continue
		}
		if !validRelDir(c.sl.Dir) {
			return State{}, fmt.Errorf("%s dir %q is not bundles/NAME", c.what, c.sl.Dir)
		}
		if c.sl.ID == "" || c.sl.ID != c.sl.Name+"@"+c.sl.Version {
			return State{}, fmt.Errorf("%s id %q does not match name %q and version %q", c.what, c.sl.ID, c.sl.Name, c.sl.Version)
		}
	}
	return st, nil
}

// commit writes st atomically and makes it the store's state. It is the
// only way state changes.
func (s *Store) commit(st State) error {
	st.SchemaVersion = StateSchemaVersion
	st.Generation++
	st.UpdatedAt = time.Now().UTC()
	if n := len(st.History) - s.opts.History; n > 0 {
		st.History = append([]Event(nil), st.History[n:]...)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("slot: encoding state: %w", err)
	}
	b = append(b, '\n')
	if err := s.writeAtomic(stateName, b); err != nil {
		return fmt.Errorf("slot: writing state: %w", err)
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	return nil
}

func (s *Store) writeAtomic(name string, b []byte) error {
	f, err := os.CreateTemp(s.dir, tempPref+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	s.hook(PointStateTempWrite)
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		return err
	}
	ok = true
	// Once renamed, the new state is what every later reader sees: a
	// failed directory sync must not make the caller undo the files it
	// points to. (A power cut could still bring back the previous state:
	// its active directory is kept as the last-known-good, and Open
	// drops a pointer to anything removed since.)
	if err := atomicfile.SyncDir(s.dir); err != nil {
		s.log.Error("slot: state written but the directory sync failed", "err", err)
	}
	return nil
}

// checkSlot says what is wrong with an installed slot, if anything: its
// directory must exist and hold a valid manifest of the same ID. File
// digests are not re-hashed here (see Verify).
func (s *Store) checkSlot(sl *Slot) error {
	dir := s.abs(*sl).Dir
	m, err := ReadManifest(dir)
	if err != nil {
		return err
	}
	if m.ID() != sl.ID {
		return fmt.Errorf("%s holds %s, state says %s", dir, m.ID(), sl.ID)
	}
	return nil
}

// recover loads the state, repairs dangling pointers and removes what an
// interrupted install left behind.
func (s *Store) recover() error {
	st, err := s.readState()
	if err != nil {
		return err
	}
	s.st = st
	changed := false
	now := time.Now().UTC()
	if st.LastKnownGood != nil {
		if err := s.checkSlot(st.LastKnownGood); err != nil {
			s.log.Warn("slot: dropping the last-known-good, its directory is unusable", "id", st.LastKnownGood.ID, "dir", st.LastKnownGood.Dir, "err", err)
			st.History = append(st.History, Event{Time: now, Op: "recover", ID: st.LastKnownGood.ID, Error: "last-known-good dropped: " + err.Error()})
			st.LastKnownGood = nil
			changed = true
		}
	}
	if st.Active != nil {
		if err := s.checkSlot(st.Active); err != nil {
			msg := fmt.Sprintf("active %s unusable (%v)", st.Active.ID, err)
			if st.LastKnownGood != nil {
				msg += "; fell back to last-known-good " + st.LastKnownGood.ID
			} else {
				msg += "; no last-known-good to fall back to"
			}
			s.log.Error("slot: "+msg, "dir", st.Active.Dir)
			st.LastError = &Failure{Time: now, Op: "recover", ID: st.Active.ID, Error: msg}
			st.History = append(st.History, Event{Time: now, Op: "recover", ID: st.Active.ID, Error: msg})
			st.Active, st.LastKnownGood = st.LastKnownGood, nil
			changed = true
		}
	}
	if changed {
		if err := s.commit(st); err != nil {
			return err
		}
	}
	s.collect()
	s.cleanDownloads(false)
	// Temp files of an interrupted state write.
	if ents, err := os.ReadDir(s.dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tempPref) {
				s.remove(filepath.Join(s.dir, e.Name()))
			}
		}
	}
	return nil
}

// collect removes every entry of bundles/ that is neither the active nor
// the last-known-good directory.
func (s *Store) collect() {
	s.mu.Lock()
	keep := map[string]bool{}
	for _, sl := range []*Slot{s.st.Active, s.st.LastKnownGood} {
		if sl != nil {
			keep[filepath.Base(sl.Dir)] = true
		}
	}
	s.mu.Unlock()
	root := filepath.Join(s.dir, bundlesDir)
	ents, err := os.ReadDir(root)
	if err != nil {
		s.log.Warn("slot: listing bundles", "err", err)
		return
	}
	removed := false
	for _, e := range ents {
		if keep[e.Name()] {
			continue
		}
		s.log.Info("slot: removing unused bundle directory", "dir", e.Name())
		s.remove(filepath.Join(root, e.Name()))
		removed = true
	}
	if removed {
		if err := atomicfile.SyncDir(root); err != nil {
			s.log.Warn("slot: syncing bundles", "err", err)
		}
	}
}

// cleanDownloads removes finished downloads and partial ones older than
// PartMaxAge (all of them if all is set); younger partial downloads stay
// to be resumed.
func (s *Store) cleanDownloads(all bool) {
	root := filepath.Join(s.dir, downloadsDir)
	ents, err := os.ReadDir(root)
	if err != nil {
		s.log.Warn("slot: listing downloads", "err", err)
		return
	}
	for _, e := range ents {
		p := filepath.Join(root, e.Name())
		if !all && strings.HasSuffix(e.Name(), ".part") && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) < s.opts.PartMaxAge {
				continue
			}
		}
		s.remove(p)
	}
}

func (s *Store) remove(path string) {
	if err := os.RemoveAll(path); err != nil {
		s.log.Warn("slot: removing", "path", path, "err", err)
	}
}
