package fleetd

// The bundles' drift profiles: read once per bundle version and digest
// from the registry's bundle file (fetched, checked and unpacked), with
// concurrent queries waiting on the one load.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

type profileLoad struct {
	done chan struct{}
	p    *drift.Profile
	err  error
}

// profile returns bundle's drift profile, read once per bundle version
// (and digest) from the registry.
func (x *driftIndex) profile(ctx context.Context, s *Server, id protocol.BundleID) (*drift.Profile, error) {
	e, err := s.reg.Get(ctx, id.Name, id.Version)
	if err != nil {
		return nil, err
	}
	if e.Manifest.Profile == "" {
		return nil, fmt.Errorf("%w: %s", ErrNoProfile, id.ID())
	}
	key := id.ID() + "@" + e.SHA256
	x.mu.Lock()
	if x.profiles == nil {
		x.profiles = map[string]*profileLoad{}
	}
	pl := x.profiles[key]
	if pl == nil {
		pl = &profileLoad{done: make(chan struct{})}
		x.profiles[key] = pl
		x.mu.Unlock()
		// Not the caller's context: others may wait for this load.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), profileLoadTimeout)
		pl.p, pl.err = s.loadProfile(lctx, e.Name, e.Version)
		cancel()
		close(pl.done)
		if pl.err != nil {
			x.mu.Lock()
			delete(x.profiles, key) // tried again by the next query
			x.mu.Unlock()
		}
	} else {
		x.mu.Unlock()
		select {
		case <-pl.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return pl.p, pl.err
}

// loadProfile reads the drift profile of name@version from the registry:
// it fetches the bundle file (through the file registry's handler in
// process, or from S3), checks its digest against the registry's entry,
// unpacks it (which checks every file against the manifest) into a
// temporary directory and parses the profile.
func (s *Server) loadProfile(ctx context.Context, name, version string) (*drift.Profile, error) {
	e, err := s.reg.Get(ctx, name, version)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Join(s.cfg.DataDir, UploadDir), "profile-")
	if err != nil {
		return nil, fmt.Errorf("fleetd: reading the drift profile of %s: %w", e.ID(), err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, e.FileName())
	if err := s.fetchBundle(ctx, e.ID(), path, e.Size, e.SHA256); err != nil {
		return nil, fmt.Errorf("fleetd: reading the drift profile of %s: %w", e.ID(), err)
	}
	unpacked := filepath.Join(dir, "bundle")
	m, err := bundle.Unpack(ctx, path, unpacked, bundle.Limits{MaxBundleBytes: int64(s.cfg.HTTP.MaxBundleBytes)})
	if err != nil {
		return nil, fmt.Errorf("fleetd: reading the drift profile of %s: %w", e.ID(), err)
	}
	if m.Profile == "" {
		return nil, fmt.Errorf("%w: %s", ErrNoProfile, e.ID())
	}
	p, err := drift.LoadProfile(filepath.Join(unpacked, filepath.FromSlash(m.Profile)))
	if err != nil {
		return nil, fmt.Errorf("fleetd: the drift profile of %s: %w", e.ID(), err)
	}
	s.log.Info("fleetd: drift profile read", "bundle", e.ID(), "profile", p.ID(), "features", len(p.Features))
	return p, nil
}
