package slot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/semver"

	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// Unpack fetches, verifies and unpacks the bundle req names into dest,
// through the same steps as Install (resumable download with req's size
// and digest checked, signature against Options.Trust, the defensive
// unpacker within Options.Limits, req.ID pinned, minAgentVersion), but
// without activating it: the slots and state.json are not touched and a
// failure is not recorded as the store's LastError. It is how the agent
// installs a shadow candidate beside the active version.
//
// dest must be outside the store's bundles/ directory (Open and Install
// remove what no slot refers to there) and must not exist; its parent
// is created if needed. The bundle is unpacked into a staging directory
// beside dest and renamed into place, so dest is either complete or
// absent. req.Force, req.AllowDowngrade and the active version play no
// part. Unpack takes the store's install lock: while an Install or
// Rollback runs it fails with ErrBusy, and the other way round.
func (s *Store) Unpack(ctx context.Context, req Request, dest string) (*bundle.Manifest, error) {
	if !s.busy.TryLock() {
		return nil, ErrBusy
	}
	defer s.busy.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if s.opts.Trust == nil {
		return nil, fmt.Errorf("slot: no trust root configured: %w", bundle.ErrSignature)
	}
	if req.Bundle == "" {
		return nil, fmt.Errorf("slot: %w: empty bundle source", fetch.ErrSource)
	}
	dest, err := filepath.Abs(dest)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	if rel, err := filepath.Rel(filepath.Join(s.dir, bundlesDir), dest); err == nil && filepath.IsLocal(rel) {
		return nil, fmt.Errorf("slot: unpack destination %s is inside the store's %s directory", dest, bundlesDir)
	}
	if _, err := os.Lstat(dest); err == nil {
		return nil, fmt.Errorf("slot: unpack destination %s: %w", dest, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("slot: %w", err)
	}
	parent := filepath.Dir(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}

	bundlePath, sigPath, err := s.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	defer func() {
		for src, p := range map[string]string{req.Bundle: bundlePath, s.sigSource(req): sigPath} {
			if fetch.IsURL(src) {
				s.remove(p)
			}
		}
	}()
	fi, err := os.Stat(bundlePath)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	if err := fetch.CheckSpace(parent, fi.Size(), max(s.opts.MinFreeBytes, 0)); err != nil {
		return nil, err
	}

	staging := filepath.Join(parent, stagingPref+randomSuffix())
	m, err := bundle.VerifyAndUnpack(ctx, bundlePath, sigPath, s.opts.Trust, staging, s.opts.Limits)
	if err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("slot: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(staging)
		}
	}()
	id := m.ID()
	if req.ID != "" && id != req.ID {
		return nil, fmt.Errorf("%w: %s holds %s, expected %s", ErrMismatch, redact(req.Bundle), id, req.ID)
	}
	if s.opts.AgentVersion != "" && m.MinAgentVersion != "" &&
		semver.Compare("v"+s.opts.AgentVersion, "v"+m.MinAgentVersion) < 0 {
		return nil, fmt.Errorf("%w: %s needs agent %s, this is %s", ErrAgentTooOld, id, m.MinAgentVersion, s.opts.AgentVersion)
	}
	if err := os.Rename(staging, dest); err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	keep = true
	if err := atomicfile.SyncDir(parent); err != nil {
		os.RemoveAll(dest)
		return nil, fmt.Errorf("slot: %w", err)
	}
	s.log.Info("slot: unpacked without activating", "id", id, "dir", dest)
	return m, nil
}
