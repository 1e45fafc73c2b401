// Package fetch downloads bundles to local files for the edge agent:
// HTTP(S) with retries (exponential backoff with jitter), resumption with
// Range requests after a cut, size caps, a free-space check before the
// first byte is written, and an optional sha256 check at the end. A
// download lands in DEST.part and becomes DEST by an atomic rename only
// when complete and verified, so DEST is either absent or whole.
//
// A DEST.part left by an interrupted call (or an agent restart) is
// resumed by the next call for the same DEST.
package fetch

// The Fetcher: its Options and defaults, the sentinel errors, Expect, New
// and Fetch, which takes a local source as is (verify.go) and downloads a
// URL (download.go, attempt.go).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
)

// Defaults for zero Options fields.
const (
	DefaultMaxBytes     = 4 << 30 // 4 GiB
	DefaultMinFreeBytes = 32 << 20
	DefaultRetries      = 5
	DefaultMaxResumes   = 10
	DefaultRetryWaitMin = 500 * time.Millisecond
	DefaultRetryWaitMax = 30 * time.Second
	DefaultStallTimeout = 60 * time.Second
)

// PartSuffix is appended to DEST for the file being downloaded.
const PartSuffix = ".part"

// Sentinel errors, errors.Is-able.
var (
	// ErrTooLarge: the download is (or announces to be) larger than the cap.
	ErrTooLarge = errors.New("fetch: download exceeds the size cap")
	// ErrSize: the size differs from the expected size.
	ErrSize = errors.New("fetch: size mismatch")
	// ErrDigest: the sha256 differs from the expected digest.
	ErrDigest = errors.New("fetch: sha256 mismatch")
	// ErrNoSpace: the filesystem lacks room for the download plus the
	// configured margin.
	ErrNoSpace = errors.New("fetch: not enough free disk space")
	// ErrStatus: the server answered with a status that is not retried
	// (e.g. 404, 403).
	ErrStatus = errors.New("fetch: unexpected HTTP status")
	// ErrInterrupted: the transfer was cut more often than allowed; the
	// partial file is kept and the next call resumes it.
	ErrInterrupted = errors.New("fetch: download interrupted too often")
	// ErrSource: the source is neither an http(s) URL nor a readable
	// local file.
	ErrSource = errors.New("fetch: bad source")
)

// Options configure a Fetcher. Zero values pick the defaults above.
type Options struct {
	// HTTPClient carries TLS settings (e.g. a private CA); nil => a pooled
	// client. Do not set Timeout on it: that bounds the whole transfer.
	HTTPClient *http.Client
	// MaxBytes caps one download; 0 => DefaultMaxBytes.
	MaxBytes int64
	// MinFreeBytes is kept free on the destination filesystem: a download
	// is refused when its remaining size plus this margin exceeds the
	// free space. 0 => DefaultMinFreeBytes; negative => no margin.
	MinFreeBytes int64
	// Retries is how often one request is retried on connection errors,
	// 429 and 5xx (go-retryablehttp's RetryMax); 0 => DefaultRetries;
	// negative => none.
	Retries int
	// MaxResumes bounds how often a cut transfer is resumed within one
	// call; 0 => DefaultMaxResumes; negative => none.
	MaxResumes int
	// RetryWaitMin and RetryWaitMax bound the backoff between attempts.
	RetryWaitMin, RetryWaitMax time.Duration
	// StallTimeout aborts (and then resumes) a transfer that received no
	// byte for this long; 0 => DefaultStallTimeout.
	StallTimeout time.Duration
	Logger       *slog.Logger
}

// Expect is what the caller knows about one file in advance.
type Expect struct {
	// Size is the exact size in bytes; 0 => unknown.
	Size int64
	// SHA256 is the lowercase hex digest; "" => not checked.
	SHA256 string
	// MaxBytes overrides Options.MaxBytes for this file when > 0.
	MaxBytes int64
}

// Fetcher downloads files. It is safe for concurrent use on distinct
// destinations.
type Fetcher struct {
	opts   Options
	client *retryablehttp.Client
	log    *slog.Logger
}

// New returns a Fetcher.
func New(opts Options) *Fetcher {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = DefaultMinFreeBytes
	} else if opts.MinFreeBytes < 0 {
		opts.MinFreeBytes = 0
	}
	if opts.Retries == 0 {
		opts.Retries = DefaultRetries
	} else if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.MaxResumes == 0 {
		opts.MaxResumes = DefaultMaxResumes
	} else if opts.MaxResumes < 0 {
		opts.MaxResumes = 0
	}
	if opts.RetryWaitMin <= 0 {
		opts.RetryWaitMin = DefaultRetryWaitMin
	}
	if opts.RetryWaitMax <= 0 {
		opts.RetryWaitMax = DefaultRetryWaitMax
	}
	if opts.RetryWaitMax < opts.RetryWaitMin {
		opts.RetryWaitMax = opts.RetryWaitMin
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc := opts.HTTPClient
	if hc == nil {
		t := cleanhttp.DefaultPooledTransport()
		// A server that accepts but never answers counts as a stall too.
		t.ResponseHeaderTimeout = opts.StallTimeout
		hc = &http.Client{Transport: t}
	}
	c := &retryablehttp.Client{
		HTTPClient:   hc,
		Logger:       slogAdapter{log},
		RetryWaitMin: opts.RetryWaitMin,
		RetryWaitMax: opts.RetryWaitMax,
		RetryMax:     opts.Retries,
		CheckRetry:   checkRetry,
		Backoff:      Backoff,
	}
	return &Fetcher{opts: opts, client: c, log: log}
}

// IsURL reports whether src is an http or https URL (anything else is
// taken as a local path).
func IsURL(src string) bool {
	u, err := url.Parse(src)
	if err != nil {
		return false
	}
	s := strings.ToLower(u.Scheme)
	return (s == "http" || s == "https") && u.Host != ""
}

// Fetch makes src available as a local file and returns its path. A local
// path (or file:// URL) is returned as is, after checking it is a regular
// file and, if given, its size and digest. An http(s) URL is downloaded
// to dest (through dest+".part", resumed if one exists).
func (f *Fetcher) Fetch(ctx context.Context, src, dest string, want Expect) (string, error) {
	if want.SHA256 != "" {
		want.SHA256 = strings.ToLower(want.SHA256)
		if b, err := hex.DecodeString(want.SHA256); err != nil || len(b) != sha256.Size {
			return "", fmt.Errorf("%w: expected sha256 %q is not 64 hex digits", ErrSource, want.SHA256)
		}
	}
	if want.Size < 0 {
		return "", fmt.Errorf("%w: negative expected size %d", ErrSource, want.Size)
	}
	if !IsURL(src) {
		return f.local(src, want)
	}
	if dest == "" {
		return "", fmt.Errorf("%w: no destination for %s", ErrSource, redact(src))
	}
	if err := f.download(ctx, src, dest, want); err != nil {
		return "", scrub(src, fmt.Errorf("fetch %s: %w", redact(src), err))
	}
	return dest, nil
}
