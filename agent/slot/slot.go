package slot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// Sentinel errors, errors.Is-able. Errors from verification keep the
// bundle package's sentinels (bundle.ErrSignature, bundle.ErrDigest, ...)
// and download errors fetch's (fetch.ErrNoSpace, fetch.ErrDigest, ...).
var (
	// ErrBusy: another Install or Rollback is in progress.
	ErrBusy = errors.New("slot: another install is in progress")
	// ErrLocked: another process holds the data directory.
	ErrLocked = errors.New("slot: data directory is in use by another process")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("slot: store closed")
	// ErrDowngrade: the bundle's version is lower than the active one's
	// and the request did not allow a downgrade.
	ErrDowngrade = errors.New("slot: downgrade refused")
	// ErrAgentTooOld: the bundle's minAgentVersion is above this agent's.
	ErrAgentTooOld = errors.New("slot: bundle needs a newer agent")
	// ErrActivate: the activate callback refused the bundle; the previous
	// version stays active.
	ErrActivate = errors.New("slot: activation failed")
	// ErrMismatch: the bundle is not the one Request.ID names.
	ErrMismatch = errors.New("slot: bundle is not the requested one")
	// ErrNoLastKnownGood: there is nothing to roll back to.
	ErrNoLastKnownGood = errors.New("slot: no last-known-good version")
	// ErrState: state.json is unreadable or invalid. Nothing is removed
	// when Open fails with it.
	ErrState = errors.New("slot: invalid state file")
	// ErrNoSpace is fetch.ErrNoSpace: the filesystem lacks room for the
	// bundle plus Options.MinFreeBytes.
	ErrNoSpace = fetch.ErrNoSpace
)

// Crash points passed to Options.Hook during Install, in this order.
const (
	PointDownloaded     = "downloaded"              // bundle and signature are local files
	PointUnpacked       = "unpacked"                // verified and unpacked into its final directory
	PointActivated      = "activated-callback-done" // activate returned nil
	PointStateTempWrite = "state-temp-written"      // new state in a temp file, not yet renamed (every state write)
	PointStateWritten   = "state-written"           // new state committed, older directories not yet removed
)

// Defaults for zero Options fields.
const (
	DefaultHistory    = 32
	DefaultPartMaxAge = 7 * 24 * time.Hour
	// MaxSigBytes caps a downloaded signature file.
	MaxSigBytes = 64 << 10
)

// Options configure a Store.
type Options struct {
	// Trust holds the publishers' public keys; required for Install.
	Trust *bundle.TrustRoot
	// Limits bound what the unpacker accepts; zero fields are
	// bundle.DefaultLimits.
	Limits bundle.Limits
	// Fetch configures downloads (HTTP client with TLS settings, retries,
	// stall timeout). Its MaxBytes defaults to Limits.MaxBundleBytes, its
	// MinFreeBytes to MinFreeBytes, its Logger to Logger.
	Fetch fetch.Options
	// MinFreeBytes is kept free on the data directory's filesystem: an
	// install needing more is refused with ErrNoSpace. 0 =>
	// fetch.DefaultMinFreeBytes; negative => no margin.
	MinFreeBytes int64
	// History bounds State.History; 0 => DefaultHistory.
	History int
	// PartMaxAge: Open removes partial downloads older than this; younger
	// ones are resumed by the next Install. 0 => DefaultPartMaxAge.
	PartMaxAge time.Duration
	// AgentVersion is checked against a bundle's minAgentVersion; "" skips
	// the check.
	AgentVersion string
	Logger       *slog.Logger
	// Hook, if set, is called at each crash point (Point*) of Install.
	// It exists for crash tests and is nil in production.
	Hook func(point string)
}

// ActivateFunc prepares an unpacked, verified bundle for service, or says
// why it cannot: the agent loads the model, runs its smoke vectors and
// keeps the loaded model as pending if they pass. It must not modify dir.
// The version is committed only when Install or Rollback then returns
// nil; on an error whatever activate prepared must be discarded.
type ActivateFunc func(ctx context.Context, dir string, m *bundle.Manifest) error

// Request says what to install.
type Request struct {
	// Bundle is an http(s) URL or a local path of a .bundle file.
	Bundle string
	// Sig is the URL or path of its signature; "" => Bundle + ".sig".
	Sig string
	// ID, when set, is the "name@version" the caller expects (from
	// desired state): a signed bundle with another identity is refused
	// with ErrMismatch (a registry cannot substitute another signed
	// version), and when it is the active version Install returns at
	// once, without a download.
	ID string
	// Size and SHA256 of the bundle file, when known (e.g. from desired
	// state); checked after the download.
	Size   int64
	SHA256 string
	// Force reinstalls the version that is already active.
	Force bool
	// AllowDowngrade permits a version lower than the active one of the
	// same bundle name (a rollback ordered by the control plane).
	AllowDowngrade bool
}

// Store is the on-disk bundle store. Its methods are safe for concurrent
// use; only one Install or Rollback runs at a time (others get ErrBusy).
type Store struct {
	dir     string // absolute data directory
	opts    Options
	log     *slog.Logger
	fetcher *fetch.Fetcher
	lock    *os.File

	busy sync.Mutex // held for a whole Install or Rollback

	mu     sync.Mutex // guards st and closed
	st     State
	closed bool
}

// Open opens (creating if needed) the store in dir and recovers from an
// interrupted install: it validates state.json, falls back to the
// last-known-good when the active directory is missing or broken, drops a
// last-known-good whose directory is missing, and removes stray bundle
// directories, temp files and stale partial downloads.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.PartMaxAge <= 0 {
		opts.PartMaxAge = DefaultPartMaxAge
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = fetch.DefaultMinFreeBytes
	} else if opts.MinFreeBytes < 0 {
		opts.MinFreeBytes = -1 // fetch's "no margin"
	}
	fo := opts.Fetch
	if fo.MaxBytes == 0 {
		fo.MaxBytes = opts.Limits.MaxBundleBytes
		if fo.MaxBytes == 0 {
			fo.MaxBytes = bundle.DefaultLimits().MaxBundleBytes
		}
	}
	if fo.MinFreeBytes == 0 {
		fo.MinFreeBytes = opts.MinFreeBytes
	}
	if fo.Logger == nil {
		fo.Logger = opts.Logger
	}

	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	for _, d := range []string{abs, filepath.Join(abs, bundlesDir), filepath.Join(abs, downloadsDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("slot: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(abs, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, abs)
		}
		return nil, fmt.Errorf("slot: locking %s: %w", abs, err)
	}
	s := &Store{
		dir:     abs,
		opts:    opts,
		log:     opts.Logger,
		fetcher: fetch.New(fo),
		lock:    lock,
	}
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the data directory. It waits for a running Install or
// Rollback and is idempotent.
func (s *Store) Close() error {
	s.busy.Lock()
	defer s.busy.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.lock.Close() // releases the flock
}

// Dir is the store's data directory (absolute).
func (s *Store) Dir() string { return s.dir }

// Active returns the version in service.
func (s *Store) Active() (Slot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.Active == nil {
		return Slot{}, false
	}
	return s.abs(*s.st.Active), true
}

// LastKnownGood returns the version Rollback would return to.
func (s *Store) LastKnownGood() (Slot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.LastKnownGood == nil {
		return Slot{}, false
	}
	return s.abs(*s.st.LastKnownGood), true
}

// State returns a copy of the committed state (for reporting), with
// absolute directories.
func (s *Store) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	if st.Active != nil {
		a := s.abs(*st.Active)
		st.Active = &a
	}
	if st.LastKnownGood != nil {
		l := s.abs(*st.LastKnownGood)
		st.LastKnownGood = &l
	}
	if st.LastError != nil {
		e := *st.LastError
		st.LastError = &e
	}
	st.History = append([]Event(nil), st.History...)
	return st
}

func (s *Store) abs(sl Slot) Slot {
	sl.Dir = filepath.Join(s.dir, filepath.FromSlash(sl.Dir))
	return sl
}

func (s *Store) hook(point string) {
	if s.opts.Hook != nil {
		s.opts.Hook(point)
	}
}

// ReadManifest reads and validates dir/manifest.json of an unpacked
// bundle.
func ReadManifest(dir string) (*bundle.Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, bundle.ManifestName))
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	m, err := bundle.ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("slot: %s: %w", dir, err)
	}
	return m, nil
}

func randomSuffix() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// slotDirName is bundles/NAME@VERSION-RANDOM, relative to the data dir.
func slotDirName(m *bundle.Manifest) string {
	return bundlesDir + "/" + m.ID() + "-" + randomSuffix()
}

// validRelDir reports whether rel is bundles/ONE-COMPONENT, so that a
// hand-edited state file cannot point the store outside bundles/.
func validRelDir(rel string) bool {
	name, ok := strings.CutPrefix(rel, bundlesDir+"/")
	return ok && name != "" && !strings.ContainsAny(name, `/\`) && name != "." && name != ".." && !strings.HasPrefix(name, ".")
}
