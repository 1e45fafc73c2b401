// Package registry is fleetd's bundle registry: it stores signed bundles
// pushed by publishers (fleetctl bundle push) by name and version, and
// tells devices where to download them.
//
// Two implementations share the Registry interface and one conformance
// test suite:
//
//   - FS (the default) keeps files under DIR/bundles/NAME/VERSION/ and
//     serves downloads from fleetd's own HTTP server through
//     FS.Handler, with range requests and short-lived HMAC-signed URLs
//     (or a caller-supplied access check).
//   - S3 keeps objects in an S3 bucket (MinIO, AWS, ...) and hands
//     devices short-lived presigned GET URLs, so downloads never pass
//     through fleetd.
//
// A version, once pushed, is immutable: pushing the same name@version
// again with the same bundle is a no-op, with a different bundle an
// ErrConflict. The registry never signs anything; it refuses bundles
// without a signature and, given a trust root, bundles whose signature
// none of its keys made.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/semver"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Registry stores signed bundles and says where devices download them.
// Implementations are safe for concurrent use.
type Registry interface {
	// Put stores the bundle at bundlePath with its detached signature at
	// sigPath (cosign's base64 format). The manifest is read from the
	// bundle; a missing or empty signature is refused (ErrNoSignature),
	// and so is one the configured trust root, if any, does not verify
	// (wrapping bundle.ErrSignature). A name@version that exists with
	// another bundle is refused (ErrConflict); with the same bundle (same
	// sha256) Put returns the stored Entry and changes nothing.
	Put(ctx context.Context, bundlePath, sigPath string) (Entry, error)
	// Get returns name@version (ErrNotFound if absent).
	Get(ctx context.Context, name, version string) (Entry, error)
	// List returns the versions of name, oldest first by semantic
	// version precedence; name "" lists every bundle, by name and then
	// version. An unknown name gives an empty list.
	List(ctx context.Context, name string) ([]Entry, error)
	// Delete removes name@version (ErrNotFound if absent). Downloads in
	// progress may fail; URLs handed out for it stop working.
	Delete(ctx context.Context, name, version string) error
	// URL returns where device deviceID downloads e's bundle and
	// signature: short-lived URLs that need no other credentials when
	// the implementation signs them. deviceID may be "" (an operator).
	URL(ctx context.Context, e Entry, deviceID string) (bundleURL, sigURL string, err error)
}

// Sentinel errors callers branch on with errors.Is. A refused signature
// wraps bundle.ErrSignature, and a malformed bundle the bundle package's
// error (bundle.ErrFormat, bundle.ErrManifest, ...) besides ErrInvalid.
var (
	// ErrNotFound: no such name@version.
	ErrNotFound = errors.New("registry: bundle not found")
	// ErrConflict: name@version exists with different content.
	ErrConflict = errors.New("registry: version already exists with different content")
	// ErrNoSignature: the bundle's detached signature is missing or empty.
	ErrNoSignature = errors.New("registry: bundle signature missing")
	// ErrInvalid: a name, version, device id or bundle is not valid; the
	// message says which.
	ErrInvalid = errors.New("registry: invalid argument")
)

// Entry describes a stored bundle.
type Entry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Size and SHA256 (lowercase hex) are those of the .bundle file.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Sig is the detached signature as pushed: cosign's base64 text.
	Sig string `json:"sig"`
	// Verified says the signature was checked against the registry's
	// trust root when the bundle was pushed.
	Verified bool `json:"verified"`
	// SignerKey is the fingerprint (bundle.KeyInfo.ID) of the trusted key
	// whose signature was verified; empty when none was checked.
	SignerKey string `json:"signerKey,omitempty"`
	// Manifest summarises the bundle's manifest.
	Manifest Summary `json:"manifest"`
	// Pushed is when the bundle was stored.
	Pushed time.Time `json:"pushed"`

	// push locates the S3 objects of an Entry the S3 registry returned.
	push string
}

// ID returns "name@version".
func (e Entry) ID() string { return e.Name + "@" + e.Version }

// FileName is the bundle's conventional file name, NAME-VERSION.bundle.
func (e Entry) FileName() string { return e.Name + "-" + e.Version + ".bundle" }

// BundleID returns e's identity as the protocol spells it.
func (e Entry) BundleID() protocol.BundleID {
	return protocol.BundleID{Name: e.Name, Version: e.Version}
}

// BundleRef returns the reference a desired state carries for e,
// downloaded from bundleURL and sigURL (as URL returns them).
func (e Entry) BundleRef(bundleURL, sigURL string) protocol.BundleRef {
	return protocol.BundleRef{
		Name: e.Name, Version: e.Version,
		URL: bundleURL, SigURL: sigURL,
		SHA256: e.SHA256, Size: e.Size,
	}
}

// Ref is URL and Entry.BundleRef in one call.
func Ref(ctx context.Context, r Registry, e Entry, deviceID string) (protocol.BundleRef, error) {
	u, sig, err := r.URL(ctx, e, deviceID)
	if err != nil {
		return protocol.BundleRef{}, err
	}
	return e.BundleRef(u, sig), nil
}

// Summary is what an Entry keeps of the bundle's manifest.
type Summary struct {
	SchemaVersion      int           `json:"schemaVersion"`
	MinAgentVersion    string        `json:"minAgentVersion,omitempty"`
	Created            string        `json:"created,omitempty"`
	Model              string        `json:"model"`
	Inputs             []tensor.Spec `json:"inputs"`
	Outputs            []tensor.Spec `json:"outputs"`
	Pre                string        `json:"pre,omitempty"`
	Post               string        `json:"post,omitempty"`
	ExecutionProviders []string      `json:"executionProviders,omitempty"`
	Profile            string        `json:"profile,omitempty"`
	// Smoke counts the smoke-test vectors.
	Smoke int `json:"smoke"`
	// Files lists the bundle's files; UnpackedSize is their total size.
	Files        []bundle.File `json:"files"`
	UnpackedSize int64         `json:"unpackedSize"`
	// Lineage is where the model came from (an MLflow run, say).
	Lineage *bundle.Lineage `json:"lineage,omitempty"`
	// Sampling is the bundle's data sampling policy, if it has one.
	Sampling *bundle.Sampling `json:"sampling,omitempty"`
}

func summarize(m *bundle.Manifest) Summary {
	s := Summary{
		SchemaVersion:      m.SchemaVersion,
		MinAgentVersion:    m.MinAgentVersion,
		Created:            m.Created,
		Model:              m.Runtime.Model,
		Inputs:             m.Runtime.Inputs,
		Outputs:            m.Runtime.Outputs,
		ExecutionProviders: m.Runtime.ExecutionProviders,
		Profile:            m.Profile,
		Smoke:              len(m.Smoke),
		Files:              m.Files,
		Lineage:            m.Lineage,
		Sampling:           m.Sampling,
	}
	if m.Runtime.Pre != nil {
		s.Pre = m.Runtime.Pre.Module
	}
	if m.Runtime.Post != nil {
		s.Post = m.Runtime.Post.Module
	}
	for _, f := range m.Files {
		s.UnpackedSize += f.Size
	}
	return s
}

// Defaults.
const (
	// DefaultURLExpiry is how long download URLs stay valid.
	DefaultURLExpiry = 15 * time.Minute
	// maxEntryBytes caps an entry.json read back.
	maxEntryBytes = 4 << 20
	// maxSigBytes caps a signature file.
	maxSigBytes = 16 << 10
	// entryFormat is the version of the stored entry.json.
	entryFormat = 1
)

// storedEntry is entry.json: the Entry plus what the implementation needs.
type storedEntry struct {
	Format int `json:"format"`
	Entry
	// Push names the S3 objects of this push (see S3).
	Push string `json:"push,omitempty"`
}

func decodeEntry(b []byte, where string) (storedEntry, error) {
	var se storedEntry
	if err := json.Unmarshal(b, &se); err != nil {
		return storedEntry{}, fmt.Errorf("registry: decoding %s: %w", where, err)
	}
	if se.Format != entryFormat {
		return storedEntry{}, fmt.Errorf("registry: %s: entry format %d, this fleetd reads %d", where, se.Format, entryFormat)
	}
	return se, nil
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
		`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
		`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

// checkName checks a bundle name as the manifest does (it is also a path
// component and an object key part, so this is what keeps them safe).
func checkName(name string) error {
	if name == "" || len(name) > 64 || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: bundle name %q: must be 1 to 64 characters of [a-z0-9._-], starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}

func checkVersion(version string) error {
	if version == "" || len(version) > 64 || !semverRE.MatchString(version) {
		return fmt.Errorf("%w: version %q: must be a semantic version MAJOR.MINOR.PATCH (no leading v, at most 64 characters)", ErrInvalid, version)
	}
	return nil
}

func checkID(name, version string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return checkVersion(version)
}

func checkDevice(deviceID string) error {
	if deviceID == "" {
		return nil
	}
	if err := protocol.ValidateDeviceID(deviceID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// checkURL checks the arguments of Registry.URL.
func checkURL(e Entry, deviceID string) error {
	if err := checkID(e.Name, e.Version); err != nil {
		return err
	}
	return checkDevice(deviceID)
}

// compareVersions orders semantic versions by precedence; versions equal
// in precedence (differing in build metadata) by their text.
func compareVersions(a, b string) int {
	if c := semver.Compare("v"+a, "v"+b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// sortEntries sorts by name, then version precedence.
func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return compareVersions(a.Version, b.Version)
	})
}

// getListed is the end of a List: it gets the versions the listing found
// (found holds their names and versions) from r, leaving out those
// deleted since, and sorts them.
func getListed(ctx context.Context, r Registry, found []Entry) ([]Entry, error) {
	out := []Entry{}
	for _, id := range found {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, err := r.Get(ctx, id.Name, id.Version)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	sortEntries(out)
	return out, nil
}

// readSig reads and checks a detached signature file, returning its text
// (trimmed, with one trailing newline) for storage.
func readSig(sigPath string) ([]byte, error) {
	if sigPath == "" {
		return nil, fmt.Errorf("%w: no signature file given", ErrNoSignature)
	}
	f, err := os.Open(sigPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (sign the bundle first: fleetctl bundle sign)", ErrNoSignature, sigPath)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: reading signature: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("registry: reading signature %s: %w", sigPath, err)
	}
	if len(b) > maxSigBytes {
		return nil, fmt.Errorf("%w: %w: signature %s is larger than %d bytes", ErrInvalid, bundle.ErrSignature, sigPath, maxSigBytes)
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		return nil, fmt.Errorf("%w: %s is empty", ErrNoSignature, sigPath)
	}
	// Decode it the way devices will.
	if _, err := bundle.ReadSignature(sigPath); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return []byte(text + "\n"), nil
}

// inspect reads, checks and digests a bundle file the registry owns (a
// private copy), returning its Entry.
// With a trust root, the signature is checked before anything is
// decompressed.
func inspect(ctx context.Context, path string, sig []byte, trust *bundle.TrustRoot, lim bundle.Limits) (Entry, error) {
	var signer string
	if trust != nil {
		k, err := trust.Signer(path, sig)
		if err != nil {
			return Entry{}, fmt.Errorf("registry: %w", err)
		}
		signer = k.ID
	}
	m, err := bundle.ReadManifest(ctx, path, lim)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	size, sum, err := digestFile(path)
	if err != nil {
		return Entry{}, err
	}
	return Entry{
		Name: m.Name, Version: m.Version,
		Size: size, SHA256: sum,
		Sig:       strings.TrimSpace(string(sig)),
		Verified:  trust != nil,
		SignerKey: signer,
		Manifest:  summarize(m),
	}, nil
}

func digestFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", fmt.Errorf("registry: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("registry: hashing %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// conflict is the error for pushing name@version over different content.
func conflict(have Entry, sum string) error {
	return fmt.Errorf("%w: %s is stored with sha256 %s, the pushed bundle has %s (bump the version)",
		ErrConflict, have.ID(), have.SHA256, sum)
}

// stored looks for e's version before a push stores it. found says the
// version is there: the push is then done, returning the stored Entry if
// it is the same bundle, ErrConflict if it is another, or the error
// looking failed with.
func stored(ctx context.Context, r Registry, e Entry) (have Entry, found bool, err error) {
	have, err = r.Get(ctx, e.Name, e.Version)
	switch {
	case errors.Is(err, ErrNotFound):
		return Entry{}, false, nil
	case err != nil:
		return Entry{}, true, err
	case have.SHA256 != e.SHA256:
		return Entry{}, true, conflict(have, e.SHA256)
	}
	return have, true, nil
}

// lostRace is what a push of e returns when another push of the same
// version committed first: the winner's Entry if it is the same bundle,
// else ErrConflict.
func lostRace(ctx context.Context, r Registry, e Entry) (Entry, error) {
	have, err := r.Get(ctx, e.Name, e.Version)
	if err != nil {
		return Entry{}, fmt.Errorf("registry: %s appeared while pushing, but: %w", e.ID(), err)
	}
	if have.SHA256 != e.SHA256 {
		return Entry{}, conflict(have, e.SHA256)
	}
	return have, nil
}

// openBundle opens the bundle file a push reads, which must be a regular
// file.
func openBundle(path string) (*os.File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("registry: opening bundle: %w", err)
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	if !fi.Mode().IsRegular() {
		fh.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, path)
	}
	return fh, nil
}
