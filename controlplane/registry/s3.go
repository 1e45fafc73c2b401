package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// DefaultS3Region is the region used when S3Config.Region is empty
// (MinIO's default).
const DefaultS3Region = "us-east-1"

// S3Config configures an S3 registry.
type S3Config struct {
	// Endpoint is the S3 server's host[:port], e.g. "minio:9000" or
	// "s3.eu-central-1.amazonaws.com"; Secure selects https.
	Endpoint string
	Secure   bool
	// AccessKey and SecretKey are the credentials fleetd uses.
	AccessKey, SecretKey string
	// Region is the bucket's region. Zero means DefaultS3Region. It is
	// needed to presign URLs without asking the server.
	Region string
	// Bucket holds the registry; Prefix (optional, e.g. "prod/") is put
	// before every key.
	Bucket, Prefix string
	// CreateBucket creates Bucket if it does not exist; otherwise a
	// missing bucket is an error.
	CreateBucket bool
	// PublicEndpoint and PublicSecure, if set, are the server's address
	// as devices reach it, used in presigned URLs (fleetd may reach it
	// at an internal address).
	PublicEndpoint string
	PublicSecure   bool
	// URLExpiry is how long presigned URLs are valid. Zero means
	// DefaultURLExpiry; S3 allows 1 second to 7 days.
	URLExpiry time.Duration
	// Transport is the HTTP transport to the server (e.g. with a private
	// CA); nil means minio-go's default.
	Transport http.RoundTripper
	// Trust, if set, is the publishers' trust root: Put refuses bundles
	// whose signature none of its keys made.
	Trust *bundle.TrustRoot
	// Limits bound the bundles Put accepts (zero fields: defaults).
	Limits bundle.Limits
	// Now is the clock for push times; nil means time.Now.
	Now func() time.Time
	// Logger receives the registry's logs; nil discards them.
	Logger *slog.Logger
}

// S3 is the S3 Registry. Keys, under Prefix:
//
//	bundles/NAME/VERSION/entry.json         the Entry (the commit point)
//	bundles/NAME/VERSION/PUSH/bundle        the bundle
//	bundles/NAME/VERSION/PUSH/bundle.sig    its signature
//
// PUSH is a random id per push, so concurrent pushes never overwrite each
// other's objects: each uploads its own, then creates entry.json only if
// it does not exist yet (a conditional If-None-Match: * write); the loser
// removes its objects and reports ErrConflict, or the winner's Entry if
// the bundles are the same.
type S3 struct {
	cfg     S3Config
	client  *minio.Client
	presign *minio.Client
	log     *slog.Logger
	now     func() time.Time
}

var _ Registry = (*S3)(nil)

// NewS3 connects to the server and checks (or creates) the bucket.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, fmt.Errorf("%w: S3Config: Endpoint and Bucket are required", ErrInvalid)
	}
	if cfg.Prefix != "" && (strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/")) {
		return nil, fmt.Errorf("%w: S3Config.Prefix %q must end with / and not start with one", ErrInvalid, cfg.Prefix)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultS3Region
	}
	if cfg.URLExpiry == 0 {
		cfg.URLExpiry = DefaultURLExpiry
	}
	if cfg.URLExpiry < time.Second || cfg.URLExpiry > 7*24*time.Hour {
		return nil, fmt.Errorf("%w: S3Config.URLExpiry %v: S3 allows 1s to 7 days", ErrInvalid, cfg.URLExpiry)
	}
	newClient := func(endpoint string, secure bool) (*minio.Client, error) {
		c, err := minio.New(endpoint, &minio.Options{
			Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
			Secure:    secure,
			Region:    cfg.Region,
			Transport: cfg.Transport,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: S3 endpoint %q: %w", ErrInvalid, endpoint, err)
		}
		return c, nil
	}
	s := &S3{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	if s.client, err = newClient(cfg.Endpoint, cfg.Secure); err != nil {
		return nil, err
	}
	s.presign = s.client
	if cfg.PublicEndpoint != "" {
		if s.presign, err = newClient(cfg.PublicEndpoint, cfg.PublicSecure); err != nil {
			return nil, err
		}
	}

	exists, err := s.client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("registry: checking bucket %q at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	if !exists {
		if !cfg.CreateBucket {
			return nil, fmt.Errorf("registry: bucket %q does not exist at %s (create it, or set CreateBucket)", cfg.Bucket, cfg.Endpoint)
		}
		err := s.client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
		if code := minio.ToErrorResponse(err).Code; err != nil && code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
			return nil, fmt.Errorf("registry: creating bucket %q: %w", cfg.Bucket, err)
		}
		s.log.Info("registry: bucket created", "bucket", cfg.Bucket, "endpoint", cfg.Endpoint)
	}
	return s, nil
}

func (s *S3) versionPrefix(name, version string) string {
	return s.cfg.Prefix + "bundles/" + name + "/" + version + "/"
}
func (s *S3) entryKey(name, version string) string {
	return s.versionPrefix(name, version) + entryFile
}
func (s *S3) blobKey(name, version, push, file string) string {
	return s.versionPrefix(name, version) + push + "/" + file
}

// Put implements Registry.
func (s *S3) Put(ctx context.Context, bundlePath, sigPath string) (Entry, error) {
	sig, err := readSig(sigPath)
	if err != nil {
		return Entry{}, err
	}
	fh, err := openBundle(bundlePath)
	if err != nil {
		return Entry{}, err
	}
	defer fh.Close()
	e, err := inspect(ctx, bundlePath, sig, s.cfg.Trust, s.cfg.Limits)
	if err != nil {
		return Entry{}, err
	}
	if have, found, err := stored(ctx, s, e); found {
		return have, err
	}

	push := randomID(8)
	keys := []string{s.blobKey(e.Name, e.Version, push, bundleFile), s.blobKey(e.Name, e.Version, push, sigFile)}
	committed := false
	defer func() {
		if !committed {
			s.removeKeys(context.WithoutCancel(ctx), keys)
		}
	}()
	// Upload what was checked: the bytes sent are hashed on the way and
	// must match the digest inspect computed.
	h := sha256.New()
	_, err = s.client.PutObject(ctx, s.cfg.Bucket, keys[0], io.TeeReader(fh, h), e.Size, minio.PutObjectOptions{
		ContentType:  "application/octet-stream",
		UserMetadata: map[string]string{"sha256": e.SHA256},
	})
	if err != nil {
		return Entry{}, fmt.Errorf("registry: uploading %s: %w", e.ID(), err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != e.SHA256 {
		return Entry{}, fmt.Errorf("%w: %s changed while it was being pushed (sha256 %s, then %s)", ErrInvalid, bundlePath, e.SHA256, sum)
	}
	if err := s.putSmall(ctx, keys[1], sig, "text/plain; charset=utf-8", false); err != nil {
		return Entry{}, fmt.Errorf("registry: uploading the signature of %s: %w", e.ID(), err)
	}

	e.Pushed = s.now().UTC().Truncate(time.Millisecond)
	entry, err := json.MarshalIndent(storedEntry{Format: entryFormat, Entry: e, Push: push}, "", "  ")
	if err != nil {
		return Entry{}, fmt.Errorf("registry: encoding entry: %w", err)
	}
	err = s.putSmall(ctx, s.entryKey(e.Name, e.Version), append(entry, '\n'), "application/json", true)
	if isPreconditionFailed(err) {
		return lostRace(ctx, s, e)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("registry: storing the entry of %s: %w", e.ID(), err)
	}
	committed = true
	e.push = push
	s.log.Info("registry: bundle pushed", "bundle", e.ID(), "sha256", e.SHA256, "size", e.Size, "verified", e.Verified, "push", push)
	return e, nil
}

// putSmall uploads b; onlyNew makes it a conditional create.
func (s *S3) putSmall(ctx context.Context, key string, b []byte, ctype string, onlyNew bool) error {
	opts := minio.PutObjectOptions{ContentType: ctype}
	if onlyNew {
		opts.SetMatchETagExcept("*")
	}
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, key, bytes.NewReader(b), int64(len(b)), opts)
	return err
}

func isPreconditionFailed(err error) bool {
	if err == nil {
		return false
	}
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

func isNoSuchKey(err error) bool {
	return minio.ToErrorResponse(err).Code == "NoSuchKey"
}

// Get implements Registry.
func (s *S3) Get(ctx context.Context, name, version string) (Entry, error) {
	if err := checkID(name, version); err != nil {
		return Entry{}, err
	}
	se, err := s.readEntry(ctx, name, version)
	if err != nil {
		return Entry{}, err
	}
	return se.Entry, nil
}

func (s *S3) readEntry(ctx context.Context, name, version string) (storedEntry, error) {
	key := s.entryKey(name, version)
	obj, err := s.client.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return storedEntry{}, fmt.Errorf("registry: reading %s: %w", key, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, maxEntryBytes+1))
	if err != nil {
		if isNoSuchKey(err) {
			return storedEntry{}, fmt.Errorf("%w: %s@%s", ErrNotFound, name, version)
		}
		return storedEntry{}, fmt.Errorf("registry: reading %s: %w", key, err)
	}
	if len(b) > maxEntryBytes {
		return storedEntry{}, fmt.Errorf("registry: %s is larger than %d bytes", key, maxEntryBytes)
	}
	se, err := decodeEntry(b, key)
	if err != nil {
		return storedEntry{}, err
	}
	if se.Name != name || se.Version != version || se.Push == "" {
		return storedEntry{}, fmt.Errorf("registry: %s holds the entry of %s (push %q)", key, se.ID(), se.Push)
	}
	se.Entry.push = se.Push
	return se, nil
}

// List implements Registry.
func (s *S3) List(ctx context.Context, name string) ([]Entry, error) {
	prefix := s.cfg.Prefix + "bundles/"
	if name != "" {
		if err := checkName(name); err != nil {
			return nil, err
		}
		prefix += name + "/"
	}
	var found []Entry
	for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("registry: listing %s: %w", prefix, obj.Err)
		}
		// Keep only .../bundles/NAME/VERSION/entry.json.
		rel := strings.TrimPrefix(obj.Key, s.cfg.Prefix+"bundles/")
		parts := strings.Split(rel, "/")
		if len(parts) == 3 && parts[2] == entryFile && checkID(parts[0], parts[1]) == nil {
			found = append(found, Entry{Name: parts[0], Version: parts[1]})
		}
	}
	return getListed(ctx, s, found)
}

// Delete implements Registry: the entry goes first (unpublishing the
// version at once), then the push's objects, and objects of pushes that
// crashed before committing.
func (s *S3) Delete(ctx context.Context, name, version string) error {
	if err := checkID(name, version); err != nil {
		return err
	}
	se, err := s.readEntry(ctx, name, version)
	if err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.cfg.Bucket, s.entryKey(name, version), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("registry: deleting %s@%s: %w", name, version, err)
	}
	s.log.Info("registry: bundle deleted", "bundle", name+"@"+version)

	// A push may have committed a new entry since; keep its objects.
	keep := ""
	if cur, err := s.readEntry(ctx, name, version); err == nil {
		keep = cur.Push
	}
	var stale []string
	prefix := s.versionPrefix(name, version)
	for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("registry: listing %s: %w", prefix, obj.Err)
		}
		push, _, ok := strings.Cut(strings.TrimPrefix(obj.Key, prefix), "/")
		if !ok || push == keep {
			continue
		}
		if push == se.Push || s.now().Sub(obj.LastModified) > staleAfter {
			stale = append(stale, obj.Key)
		}
	}
	return s.removeKeys(ctx, stale)
}

func (s *S3) removeKeys(ctx context.Context, keys []string) error {
	var first error
	for _, k := range keys {
		if err := s.client.RemoveObject(ctx, s.cfg.Bucket, k, minio.RemoveObjectOptions{}); err != nil && !isNoSuchKey(err) {
			s.log.Warn("registry: removing an object", "key", k, "err", err)
			if first == nil {
				first = fmt.Errorf("registry: removing %s: %w", k, err)
			}
		}
	}
	return first
}

// URL implements Registry: presigned GET URLs of e's objects, valid for
// S3Config.URLExpiry. deviceID is checked but not part of the URL.
func (s *S3) URL(ctx context.Context, e Entry, deviceID string) (bundleURL, sigURL string, err error) {
	if err := checkURL(e, deviceID); err != nil {
		return "", "", err
	}
	// An Entry this registry returned knows its push; one decoded from
	// elsewhere costs a read of entry.json.
	push := e.push
	if push == "" {
		se, err := s.readEntry(ctx, e.Name, e.Version)
		if err != nil {
			return "", "", err
		}
		if se.SHA256 != e.SHA256 {
			return "", "", fmt.Errorf("%w: %s now has sha256 %s, not %s", ErrNotFound, e.ID(), se.SHA256, e.SHA256)
		}
		push = se.Push
	}
	urls := make([]string, 2)
	for i, f := range []struct{ key, name string }{
		{s.blobKey(e.Name, e.Version, push, bundleFile), e.FileName()},
		{s.blobKey(e.Name, e.Version, push, sigFile), e.FileName() + ".sig"},
	} {
		params := url.Values{"response-content-disposition": {`attachment; filename="` + f.name + `"`}}
		u, err := s.presign.PresignedGetObject(ctx, s.cfg.Bucket, f.key, s.cfg.URLExpiry, params)
		if err != nil {
			return "", "", fmt.Errorf("registry: presigning %s: %w", f.key, err)
		}
		urls[i] = u.String()
	}
	return urls[0], urls[1], nil
}
