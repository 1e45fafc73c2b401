package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// File names inside a version directory (and, for S3, a push prefix).
const (
	bundleFile = "bundle"
	sigFile    = "bundle.sig"
	entryFile  = "entry.json"
)

// MinURLKeyLen is the shortest FSConfig.URLKey accepted.
const MinURLKeyLen = 32

// FSConfig configures an FS registry.
type FSConfig struct {
	// Dir holds the registry: Dir/bundles/NAME/VERSION/{bundle,
	// bundle.sig,entry.json}, and Dir/tmp for pushes in progress (same
	// file system, so they can be renamed into place).
	Dir string
	// BaseURL is where fleetd serves Handler, as devices reach it, e.g.
	// "https://fleetd.example.com:8443/registry". Download URLs are
	// BaseURL/bundles/NAME/VERSION/NAME-VERSION.bundle (and .sig).
	BaseURL string
	// URLKey, if set, signs download URLs (HMAC-SHA256 over the path, the
	// device id and the expiry), so that a device needs no other
	// credentials to download. At least MinURLKeyLen bytes; every fleetd
	// replica serving the same registry needs the same key.
	URLKey []byte
	// URLExpiry is how long a signed URL is valid. Zero means
	// DefaultURLExpiry.
	URLExpiry time.Duration
	// Authorize, if set, admits requests that carry no signed URL (e.g.
	// a device presenting its credentials, an operator's token); an
	// error refuses them with 401.
	Authorize func(r *http.Request) error
	// Public serves downloads to anyone. Without Public, URLKey or
	// Authorize must be set.
	Public bool
	// Trust, if set, is the publishers' trust root: Put refuses bundles
	// whose signature none of its keys made.
	Trust *bundle.TrustRoot
	// Limits bound the bundles Put accepts (zero fields: defaults).
	Limits bundle.Limits
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the registry's logs; nil discards them.
	Logger *slog.Logger
}

// FS is the file-system Registry. Writes are atomic: a push is staged in
// Dir/tmp and its version directory renamed into place complete, so a
// reader sees all of a version or none of it, also across processes
// sharing Dir.
type FS struct {
	cfg  FSConfig
	base *url.URL
	log  *slog.Logger
	now  func() time.Time
}

var _ Registry = (*FS)(nil)

// NewFS checks cfg, creates Dir's layout and removes stale staging
// directories of interrupted pushes.
func NewFS(cfg FSConfig) (*FS, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: FSConfig.Dir is empty", ErrInvalid)
	}
	base, err := url.Parse(strings.TrimSuffix(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("%w: FSConfig.BaseURL %q: must be an absolute http(s) URL without query", ErrInvalid, cfg.BaseURL)
	}
	if cfg.URLKey != nil && len(cfg.URLKey) < MinURLKeyLen {
		return nil, fmt.Errorf("%w: FSConfig.URLKey is %d bytes, at least %d are required", ErrInvalid, len(cfg.URLKey), MinURLKeyLen)
	}
	if cfg.URLKey == nil && cfg.Authorize == nil && !cfg.Public {
		return nil, fmt.Errorf("%w: FSConfig: set URLKey (signed URLs), Authorize, or Public for open downloads", ErrInvalid)
	}
	if cfg.URLExpiry == 0 {
		cfg.URLExpiry = DefaultURLExpiry
	}
	if cfg.URLExpiry < 0 {
		return nil, fmt.Errorf("%w: FSConfig.URLExpiry %v is negative", ErrInvalid, cfg.URLExpiry)
	}
	f := &FS{cfg: cfg, base: base, log: cfg.Logger, now: cfg.Now}
	if f.log == nil {
		f.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if f.now == nil {
		f.now = time.Now
	}
	for _, d := range []string{f.bundlesDir(), f.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
	}
	f.cleanTmp()
	return f, nil
}

func (f *FS) bundlesDir() string { return filepath.Join(f.cfg.Dir, "bundles") }
func (f *FS) tmpDir() string     { return filepath.Join(f.cfg.Dir, "tmp") }
func (f *FS) versionDir(name, version string) string {
	return filepath.Join(f.bundlesDir(), name, version)
}

// staleAfter is the age beyond which a staging directory is considered
// left behind by a crashed push (another process may be pushing now).
const staleAfter = time.Hour

func (f *FS) cleanTmp() {
	des, err := os.ReadDir(f.tmpDir())
	if err != nil {
		return
	}
	for _, de := range des {
		fi, err := de.Info()
		if err != nil || f.now().Sub(fi.ModTime()) < staleAfter {
			continue
		}
		p := filepath.Join(f.tmpDir(), de.Name())
		if err := os.RemoveAll(p); err != nil {
			f.log.Warn("registry: removing a stale staging directory", "path", p, "err", err)
		}
	}
}

// Put implements Registry.
func (f *FS) Put(ctx context.Context, bundlePath, sigPath string) (Entry, error) {
	sig, err := readSig(sigPath)
	if err != nil {
		return Entry{}, err
	}
	stage, err := os.MkdirTemp(f.tmpDir(), "push-")
	if err != nil {
		return Entry{}, fmt.Errorf("registry: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(stage)
		}
	}()

	// Everything is checked on the private copy, which is what is stored.
	staged := filepath.Join(stage, bundleFile)
	if err := copyFile(ctx, bundlePath, staged); err != nil {
		return Entry{}, err
	}
	e, err := inspect(ctx, staged, sig, f.cfg.Trust, f.cfg.Limits)
	if err != nil {
		return Entry{}, err
	}
	if have, found, err := stored(ctx, f, e); found {
		return have, err
	}
	e.Pushed = f.now().UTC().Truncate(time.Millisecond)
	entry, err := json.MarshalIndent(storedEntry{Format: entryFormat, Entry: e}, "", "  ")
	if err != nil {
		return Entry{}, fmt.Errorf("registry: encoding entry: %w", err)
	}
	for _, w := range []struct {
		name string
		data []byte
	}{{sigFile, sig}, {entryFile, append(entry, '\n')}} {
		if err := writeSynced(filepath.Join(stage, w.name), w.data); err != nil {
			return Entry{}, err
		}
	}
	if err := atomicfile.SyncDir(stage); err != nil {
		return Entry{}, fmt.Errorf("registry: %w", err)
	}
	if err := os.Chmod(stage, 0o755); err != nil {
		return Entry{}, fmt.Errorf("registry: %w", err)
	}

	dst := f.versionDir(e.Name, e.Version)
	err = f.commitDir(stage, dst)
	if isExist(err) {
		return lostRace(ctx, f, e)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("registry: storing %s: %w", e.ID(), err)
	}
	committed = true
	f.log.Info("registry: bundle pushed", "bundle", e.ID(), "sha256", e.SHA256, "size", e.Size, "verified", e.Verified)
	return e, nil
}

// commitDir renames the staged version directory into place and fsyncs
// the parent. The name directory is created if needed (retrying if a
// concurrent Delete removes it in between).
func (f *FS) commitDir(stage, dst string) error {
	parent := filepath.Dir(dst)
	for try := 0; ; try++ {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		if err := atomicfile.SyncDir(f.bundlesDir()); err != nil {
			return err
		}
		err := os.Rename(stage, dst)
		if errors.Is(err, os.ErrNotExist) && try < 3 {
			continue
		}
		if err != nil {
			return err
		}
		return atomicfile.SyncDir(parent)
	}
}

// isExist reports whether err is rename's refusal to replace a non-empty
// directory.
func isExist(err error) bool {
	return errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}

// Get implements Registry.
func (f *FS) Get(ctx context.Context, name, version string) (Entry, error) {
	if err := checkID(name, version); err != nil {
		return Entry{}, err
	}
	se, err := f.readEntry(name, version)
	if err != nil {
		return Entry{}, err
	}
	return se.Entry, nil
}

func (f *FS) readEntry(name, version string) (storedEntry, error) {
	p := filepath.Join(f.versionDir(name, version), entryFile)
	b, err := readSmall(p, maxEntryBytes)
	if errors.Is(err, os.ErrNotExist) {
		return storedEntry{}, fmt.Errorf("%w: %s@%s", ErrNotFound, name, version)
	}
	if err != nil {
		return storedEntry{}, fmt.Errorf("registry: %w", err)
	}
	se, err := decodeEntry(b, p)
	if err != nil {
		return storedEntry{}, err
	}
	if se.Name != name || se.Version != version {
		return storedEntry{}, fmt.Errorf("registry: %s holds the entry of %s", p, se.ID())
	}
	return se, nil
}

// List implements Registry.
func (f *FS) List(ctx context.Context, name string) ([]Entry, error) {
	var names []string
	if name != "" {
		if err := checkName(name); err != nil {
			return nil, err
		}
		names = []string{name}
	} else {
		des, err := os.ReadDir(f.bundlesDir())
		if err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		for _, de := range des {
			if de.IsDir() && checkName(de.Name()) == nil {
				names = append(names, de.Name())
			}
		}
	}
	var found []Entry
	for _, n := range names {
		des, err := os.ReadDir(filepath.Join(f.bundlesDir(), n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		for _, de := range des {
			if de.IsDir() && checkVersion(de.Name()) == nil {
				found = append(found, Entry{Name: n, Version: de.Name()})
			}
		}
	}
	return getListed(ctx, f, found)
}

// Delete implements Registry. The version directory is renamed away
// first (atomically unpublishing it), then removed; downloads already
// streaming from open files finish.
func (f *FS) Delete(ctx context.Context, name, version string) error {
	if err := checkID(name, version); err != nil {
		return err
	}
	trash, err := os.MkdirTemp(f.tmpDir(), "delete-")
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	defer os.RemoveAll(trash)
	dir := f.versionDir(name, version)
	if err := os.Rename(dir, filepath.Join(trash, "v")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s@%s", ErrNotFound, name, version)
		}
		return fmt.Errorf("registry: deleting %s@%s: %w", name, version, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	// Remove the name directory if that was its last version; a
	// concurrent push recreates it (see commitDir).
	if os.Remove(filepath.Dir(dir)) == nil {
		atomicfile.SyncDir(f.bundlesDir())
	}
	f.log.Info("registry: bundle deleted", "bundle", name+"@"+version)
	return nil
}

// URL implements Registry: BaseURL/bundles/NAME/VERSION/NAME-VERSION.bundle
// and .bundle.sig, signed for deviceID when URLKey is set.
func (f *FS) URL(ctx context.Context, e Entry, deviceID string) (bundleURL, sigURL string, err error) {
	if err := checkURL(e, deviceID); err != nil {
		return "", "", err
	}
	exp := f.now().Add(f.cfg.URLExpiry)
	file := e.FileName()
	return f.url(e.Name, e.Version, file, deviceID, exp), f.url(e.Name, e.Version, file+".sig", deviceID, exp), nil
}

func (f *FS) url(name, version, file, deviceID string, exp time.Time) string {
	p := "/bundles/" + name + "/" + version + "/" + file
	u := *f.base
	u.Path = f.base.Path + p
	u.RawPath = ""
	if f.cfg.URLKey != nil {
		u.RawQuery = signQuery(f.cfg.URLKey, p, deviceID, exp).Encode()
	}
	return u.String()
}

// copyFile copies src to dst (created 0644), fsynced, honouring ctx.
func copyFile(ctx context.Context, src, dst string) error {
	in, err := openBundle(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if _, err := io.Copy(out, ctxReader{ctx, in}); err != nil {
		out.Close()
		return fmt.Errorf("registry: copying %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("registry: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// writeSynced writes a new file and fsyncs it.
func writeSynced(path string, data []byte) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if _, err := out.Write(data); err != nil {
		out.Close()
		return fmt.Errorf("registry: %w", err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("registry: %w", err)
	}
	return out.Close()
}

func readSmall(path string, max int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// randomID returns n random bytes in hex.
func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
