package slot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/mod/semver"

	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// Install makes the bundle req names the active version:
//
//  1. download it and its signature (URLs; resumed if cut) or take the
//     local paths;
//  2. check its signature against Options.Trust and unpack it within
//     Options.Limits into a new directory under bundles/;
//  3. refuse it with ErrMismatch if req.ID is set and differs; if the
//     version is the active one, stop there and return the active
//     slot and nil (req.Force reinstalls it); refuse a lower version of
//     the same bundle name with ErrDowngrade unless req.AllowDowngrade,
//     and one whose minAgentVersion is above Options.AgentVersion with
//     ErrAgentTooOld;
//  4. call activate with the directory and manifest;
//  5. commit state.json: the new version becomes active, the previous
//     active becomes the last-known-good;
//  6. remove the directories no slot refers to any more.
//
// On any error the previous version stays active and unchanged, the new
// directory is removed and State().LastError records why (except for
// ErrBusy and ErrClosed). A partial download is kept and resumed by the
// next Install of the same URL.
func (s *Store) Install(ctx context.Context, req Request, activate ActivateFunc) (Slot, error) {
	if !s.busy.TryLock() {
		return Slot{}, ErrBusy
	}
	defer s.busy.Unlock()
	if err := s.checkOpen(); err != nil {
		return Slot{}, err
	}
	sl, id, err := s.install(ctx, req, activate)
	if err != nil {
		s.fail("install", id, req.Bundle, err)
		return Slot{}, err
	}
	return sl, nil
}

func (s *Store) install(ctx context.Context, req Request, activate ActivateFunc) (_ Slot, id string, err error) {
	if s.opts.Trust == nil {
		return Slot{}, "", fmt.Errorf("slot: no trust root configured: %w", bundle.ErrSignature)
	}
	if req.Bundle == "" {
		return Slot{}, "", fmt.Errorf("slot: %w: empty bundle source", fetch.ErrSource)
	}
	if a, ok := s.Active(); ok && req.ID != "" && a.ID == req.ID && !req.Force {
		s.log.Debug("slot: version already active", "id", a.ID)
		return a, a.ID, nil
	}
	bundlePath, sigPath, err := s.resolve(ctx, req)
	if err != nil {
		return Slot{}, "", err
	}
	// A downloaded file has served its purpose once unpacked (or refused).
	defer func() {
		for src, p := range map[string]string{req.Bundle: bundlePath, s.sigSource(req): sigPath} {
			if fetch.IsURL(src) {
				s.remove(p)
			}
		}
	}()
	s.hook(PointDownloaded)

	fi, err := os.Stat(bundlePath)
	if err != nil {
		return Slot{}, "", fmt.Errorf("slot: %w", err)
	}
	// The unpacked files are at least as large as the compressed bundle.
	if err := fetch.CheckSpace(filepath.Join(s.dir, bundlesDir), fi.Size(), max(s.opts.MinFreeBytes, 0)); err != nil {
		return Slot{}, "", err
	}

	staging := filepath.Join(s.dir, bundlesDir, stagingPref+randomSuffix())
	m, err := bundle.VerifyAndUnpack(ctx, bundlePath, sigPath, s.opts.Trust, staging, s.opts.Limits)
	if err != nil {
		os.RemoveAll(staging)
		return Slot{}, "", fmt.Errorf("slot: %w", err)
	}
	id = m.ID()
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(staging)
		}
	}()

	if req.ID != "" && id != req.ID {
		return Slot{}, id, fmt.Errorf("%w: %s holds %s, expected %s", ErrMismatch, redact(req.Bundle), id, req.ID)
	}
	active, hasActive := s.Active()
	if hasActive && active.ID == id && !req.Force {
		s.log.Info("slot: version already active", "id", id)
		return active, id, nil
	}
	if hasActive && active.Name == m.Name && !req.AllowDowngrade &&
		semver.Compare("v"+m.Version, "v"+active.Version) < 0 {
		return Slot{}, id, fmt.Errorf("%w: %s is older than the active %s", ErrDowngrade, id, active.ID)
	}
	if s.opts.AgentVersion != "" && m.MinAgentVersion != "" &&
		semver.Compare("v"+s.opts.AgentVersion, "v"+m.MinAgentVersion) < 0 {
		return Slot{}, id, fmt.Errorf("%w: %s needs agent %s, this is %s", ErrAgentTooOld, id, m.MinAgentVersion, s.opts.AgentVersion)
	}

	rel := slotDirName(m)
	dir := filepath.Join(s.dir, filepath.FromSlash(rel))
	if err := os.Rename(staging, dir); err != nil {
		return Slot{}, id, fmt.Errorf("slot: %w", err)
	}
	staging = dir // removed by the deferred cleanup unless committed
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return Slot{}, id, fmt.Errorf("slot: %w", err)
	}
	s.hook(PointUnpacked)

	if err := activate(ctx, dir, m); err != nil {
		return Slot{}, id, fmt.Errorf("%w: %s: %w", ErrActivate, id, err)
	}
	s.hook(PointActivated)

	now := time.Now().UTC()
	sl := Slot{ID: id, Name: m.Name, Version: m.Version, Dir: rel, InstalledAt: now}
	st := s.State()
	st = s.relState(st)
	st.LastKnownGood = st.Active
	st.Active = &sl
	st.LastError = nil
	st.History = append(st.History, Event{Time: now, Op: "install", ID: id})
	if err := s.commit(st); err != nil {
		return Slot{}, id, err
	}
	keep = true
	s.hook(PointStateWritten)
	s.log.Info("slot: installed", "id", id, "dir", rel, "last_known_good", slotID(st.LastKnownGood))
	s.collect()
	return s.abs(sl), id, nil
}

// Rollback makes the last-known-good version active again, without a
// download, through the same activate callback; the version it replaces
// becomes the last-known-good (so a second Rollback swaps back). If
// activate fails, nothing changes but State().LastError.
func (s *Store) Rollback(ctx context.Context, activate ActivateFunc) (Slot, error) {
	if !s.busy.TryLock() {
		return Slot{}, ErrBusy
	}
	defer s.busy.Unlock()
	if err := s.checkOpen(); err != nil {
		return Slot{}, err
	}
	lkg, ok := s.LastKnownGood()
	if !ok {
		return Slot{}, ErrNoLastKnownGood
	}
	sl, err := s.rollback(ctx, lkg, activate)
	if err != nil {
		s.fail("rollback", lkg.ID, "", err)
		return Slot{}, err
	}
	return sl, nil
}

func (s *Store) rollback(ctx context.Context, lkg Slot, activate ActivateFunc) (Slot, error) {
	// The directory sat on disk since it was last active: re-hash it.
	m, err := Verify(ctx, lkg.Dir)
	if err != nil {
		return Slot{}, err
	}
	if err := activate(ctx, lkg.Dir, m); err != nil {
		return Slot{}, fmt.Errorf("%w: %s: %w", ErrActivate, lkg.ID, err)
	}
	now := time.Now().UTC()
	st := s.relState(s.State())
	st.Active, st.LastKnownGood = st.LastKnownGood, st.Active
	st.LastError = nil
	st.History = append(st.History, Event{Time: now, Op: "rollback", ID: lkg.ID})
	if err := s.commit(st); err != nil {
		return Slot{}, err
	}
	s.log.Info("slot: rolled back", "id", lkg.ID, "last_known_good", slotID(st.LastKnownGood))
	return s.abs(*st.Active), nil
}

// fail records a failed install or rollback in the state file. The
// active pointer does not move.
func (s *Store) fail(op, id, source string, cause error) {
	if errors.Is(cause, ErrBusy) || errors.Is(cause, ErrClosed) {
		return
	}
	now := time.Now().UTC()
	f := &Failure{Time: now, Op: op, ID: id, Source: redact(source), Error: cause.Error()}
	st := s.relState(s.State())
	st.LastError = f
	st.History = append(st.History, Event{Time: now, Op: "failed", ID: id, Error: cause.Error()})
	s.log.Warn("slot: "+op+" failed", "id", id, "source", f.Source, "err", cause)
	if err := s.commit(st); err != nil {
		s.log.Error("slot: recording the failure", "err", err)
	}
}

func (s *Store) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// relState turns the absolute dirs of a State() copy back into the
// relative form state.json holds.
func (s *Store) relState(st State) State {
	for _, sl := range []*Slot{st.Active, st.LastKnownGood} {
		if sl != nil {
			if rel, err := filepath.Rel(s.dir, sl.Dir); err == nil {
				sl.Dir = filepath.ToSlash(rel)
			}
		}
	}
	return st
}

func slotID(sl *Slot) string {
	if sl == nil {
		return ""
	}
	return sl.ID
}

func (s *Store) sigSource(req Request) string {
	if req.Sig != "" {
		return req.Sig
	}
	if fetch.IsURL(req.Bundle) {
		u, err := url.Parse(req.Bundle)
		if err == nil {
			u.Path += ".sig"
			u.RawPath = ""
			return u.String()
		}
	}
	return req.Bundle + ".sig"
}

// resolve returns local paths of the bundle and its signature,
// downloading what is a URL into downloads/.
func (s *Store) resolve(ctx context.Context, req Request) (bundlePath, sigPath string, err error) {
	// The small signature first: a cut bundle download then keeps its
	// part file for the next attempt, and nothing else lingers.
	// A local signature goes to the verifier as is: a missing one is
	// bundle.ErrSignature there.
	sigSrc := s.sigSource(req)
	sigPath = sigSrc
	if fetch.IsURL(sigSrc) {
		sigPath, err = s.fetcher.Fetch(ctx, sigSrc, s.downloadPath(sigSrc), fetch.Expect{MaxBytes: MaxSigBytes})
		if err != nil {
			return "", "", fmt.Errorf("slot: downloading the signature: %w", err)
		}
	}
	bundlePath, err = s.fetcher.Fetch(ctx, req.Bundle, s.downloadPath(req.Bundle), fetch.Expect{Size: req.Size, SHA256: req.SHA256})
	if err != nil {
		if fetch.IsURL(sigSrc) {
			s.remove(sigPath)
		}
		return "", "", fmt.Errorf("slot: bundle: %w", err)
	}
	return bundlePath, sigPath, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// downloadPath is downloads/HASH-BASE for a URL: the hash keeps two URLs
// with the same file name apart, the base keeps it readable.
func (s *Store) downloadPath(src string) string {
	if !fetch.IsURL(src) {
		return ""
	}
	h := sha256.Sum256([]byte(src))
	base := "download"
	if u, err := url.Parse(src); err == nil {
		if b := unsafeChars.ReplaceAllString(path.Base(u.Path), "_"); b != "" && b != "." && b != "_" && b != ".." {
			base = b
		}
	}
	if len(base) > 64 {
		base = base[len(base)-64:]
	}
	return filepath.Join(s.dir, downloadsDir, hex.EncodeToString(h[:6])+"-"+base)
}

// redact drops credentials and the query from a URL for the state file.
func redact(src string) string {
	if !fetch.IsURL(src) {
		return src
	}
	u, err := url.Parse(src)
	if err != nil {
		return ""
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.String()
}

// Verify re-hashes every file the manifest in dir lists and checks that
// nothing else is there: a check of an installed slot against bit rot or
// tampering (e.g. at boot). It returns the manifest.
func Verify(ctx context.Context, dir string) (*bundle.Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	listed := map[string]bool{bundle.ManifestName: true}
	for _, f := range m.Files {
		listed[f.Path] = true
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := checkFile(filepath.Join(dir, f.Path), f); err != nil {
			return nil, fmt.Errorf("slot: %s: %w", dir, err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	for _, e := range ents {
		if !listed[e.Name()] {
			return nil, fmt.Errorf("slot: %s: %w: %s is not in the manifest", dir, bundle.ErrExtraFile, e.Name())
		}
	}
	return m, nil
}

func checkFile(p string, want bundle.File) error {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s", bundle.ErrMissingFile, want.Path)
		}
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("reading %s: %w", want.Path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != want.Size || got != want.SHA256 {
		return fmt.Errorf("%w: %s is %d bytes with sha256 %s, the manifest says %d bytes with %s", bundle.ErrDigest, want.Path, n, got, want.Size, want.SHA256)
	}
	return nil
}
