package agent

// The shadow candidate on disk: DATA/shadow/state.json, written
// atomically, and restoring the candidate it names at start (re-hashing
// its files), or forgetting it; leftover directories are removed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/agent/slot"
	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

const (
	shadowStateName   = "state.json"
	shadowStateSchema = 1
)

// shadowState is DATA/shadow/state.json: the candidate to restore at
// start.
type shadowState struct {
	SchemaVersion int    `json:"schemaVersion"`
	Candidate     string `json:"candidate"`
	// Dir is the candidate's directory, relative to DATA/shadow.
	Dir    string             `json:"dir"`
	Bundle protocol.BundleRef `json:"bundle"`
	Since  time.Time          `json:"since"`
}

func (a *Agent) shadowRoot() string { return filepath.Join(a.cfg.DataDir, ShadowDir) }

// cleanShadowDir removes everything under DATA/shadow but the state file
// and keep (a directory name).
func (a *Agent) cleanShadowDir(keep string) {
	ents, err := os.ReadDir(a.shadowRoot())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("listing the shadow directory", "err", err)
		}
		return
	}
	for _, e := range ents {
		if e.Name() == shadowStateName || (keep != "" && e.Name() == keep) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(a.shadowRoot(), e.Name())); err != nil {
			a.log.Warn("removing a leftover shadow directory", "name", e.Name(), "err", err)
		}
	}
}

// restoreShadow is start's hook, after the active bundle is loaded: it
// brings back the candidate of DATA/shadow/state.json, re-hashing its
// files first. A candidate that cannot be restored is forgotten (the
// device then reports no shadow, which fleetd sees).
func (a *Agent) restoreShadow(ctx context.Context) {
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
	b, err := os.ReadFile(filepath.Join(a.shadowRoot(), shadowStateName))
	if errors.Is(err, os.ErrNotExist) {
		a.cleanShadowDir("")
		return
	}
	var st shadowState
	if err == nil {
		st, err = parseShadowState(b)
	}
	var c *shadowCandidate
	if err == nil {
		c, err = a.loadShadow(ctx, st)
	}
	if err != nil {
		a.log.Warn("the shadow candidate cannot be restored; forgetting it", "candidate", st.Candidate, "err", err)
		a.stopShadow("not restorable")
		return
	}
	a.cleanShadowDir(filepath.Base(c.dir))
	if old := a.shadow.set(c); old != nil {
		a.retireShadow(old) // none expected at start
	}
	a.log.Info("shadow candidate restored", "candidate", c.id)
	releaseMemory()
}

// parseShadowState decodes and checks DATA/shadow/state.json.
func parseShadowState(b []byte) (shadowState, error) {
	var st shadowState
	if err := json.Unmarshal(b, &st); err != nil {
		return shadowState{}, fmt.Errorf("%s: %w", shadowStateName, err)
	}
	switch {
	case st.SchemaVersion != shadowStateSchema:
		return shadowState{}, fmt.Errorf("%s: schema version %d, want %d", shadowStateName, st.SchemaVersion, shadowStateSchema)
	case !filepath.IsLocal(st.Dir) || strings.ContainsAny(st.Dir, `/\`):
		return shadowState{}, fmt.Errorf("%s: dir %q is not a directory under %s", shadowStateName, st.Dir, ShadowDir)
	case st.Candidate == "" || st.Candidate != st.Bundle.ID():
		return shadowState{}, fmt.Errorf("%s: candidate %q is not its bundle's %q", shadowStateName, st.Candidate, st.Bundle.ID())
	}
	return st, nil
}

func (a *Agent) loadShadow(ctx context.Context, st shadowState) (*shadowCandidate, error) {
	dir := filepath.Join(a.shadowRoot(), filepath.FromSlash(st.Dir))
	m, err := slot.Verify(ctx, dir)
	if err != nil {
		return nil, err
	}
	if m.ID() != st.Candidate {
		return nil, fmt.Errorf("%w: %s holds %s, state says %s", slot.ErrMismatch, dir, m.ID(), st.Candidate)
	}
	mdl, err := a.load(ctx, dir, m)
	if err != nil {
		return nil, err
	}
	return &shadowCandidate{id: m.ID(), name: m.Name, version: m.Version, ref: st.Bundle, dir: dir,
		model: mdl, tol: shadowTolerance(m), since: st.Since}, nil
}

// shadowWriteFile writes b to path atomically (shared/atomicfile),
// creating its directory.
func shadowWriteFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}
