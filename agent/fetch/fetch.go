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

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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

// checkRetry is go-retryablehttp's policy (connection errors, 429, 5xx
// except 501), keeping the status in the final error.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	retry, cerr := retryablehttp.ErrorPropagatedRetryPolicy(ctx, resp, err)
	if cerr != nil && err == nil && resp != nil && ctx.Err() == nil {
		cerr = fmt.Errorf("%w: %s", ErrStatus, resp.Status)
	}
	return retry, cerr
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

// scrubbed is an error whose message has a URL's secrets removed; it
// unwraps to the original.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// scrub removes src's query (often a presigned token) and password from
// err's message: net/http and go-retryablehttp quote the URL in theirs,
// and error messages end up in logs and reported state.
func scrub(src string, err error) error {
	u, perr := url.Parse(src)
	if perr != nil {
		return err
	}
	msg := err.Error()
	if u.RawQuery != "" {
		msg = strings.ReplaceAll(msg, u.RawQuery, "REDACTED")
	}
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "REDACTED")
	}
	if msg == err.Error() {
		return err
	}
	return &scrubbed{msg: msg, err: err}
}

func (f *Fetcher) local(src string, want Expect) (string, error) {
	path := src
	if scheme, _, ok := strings.Cut(src, "://"); ok {
		u, err := url.Parse(src)
		if err != nil || !strings.EqualFold(scheme, "file") {
			return "", fmt.Errorf("%w: %s is neither an http(s) URL, a file:// URL nor a path", ErrSource, redact(src))
		}
		path = u.Path
	}
	if path == "" {
		return "", fmt.Errorf("%w: empty path", ErrSource)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSource, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file", ErrSource, path)
	}
	if err := f.verify(path, fi.Size(), want); err != nil {
		return "", fmt.Errorf("fetch %s: %w", path, err)
	}
	return path, nil
}

func (f *Fetcher) maxBytes(want Expect) int64 {
	if want.MaxBytes > 0 {
		return want.MaxBytes
	}
	return f.opts.MaxBytes
}

// verify checks size and digest of a complete file.
func (f *Fetcher) verify(path string, size int64, want Expect) error {
	if want.Size > 0 && size != want.Size {
		return fmt.Errorf("%w: %s is %d bytes, expected %d", ErrSize, path, size, want.Size)
	}
	if max := f.maxBytes(want); size > max {
		return fmt.Errorf("%w: %s is %d bytes, cap %d", ErrTooLarge, path, size, max)
	}
	if want.SHA256 == "" {
		return nil
	}
	got, err := fileSHA256(path)
	if err != nil {
		return err
	}
	if got != want.SHA256 {
		return fmt.Errorf("%w: %s has sha256 %s, expected %s", ErrDigest, path, got, want.SHA256)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// download runs the resume loop for one URL. A failed download keeps a
// non-empty part file for the next call; an empty one is removed.
func (f *Fetcher) download(ctx context.Context, src, dest string, want Expect) (err error) {
	part := dest + PartSuffix
	defer func() {
		if fi, serr := os.Stat(part); err != nil && serr == nil && fi.Size() == 0 {
			os.Remove(part)
		}
	}()
	if want.SHA256 != "" {
		// A complete file from an earlier call that crashed after the
		// rename but before its caller used it.
		if fi, err := os.Stat(dest); err == nil && fi.Mode().IsRegular() {
			if f.verify(dest, fi.Size(), want) == nil {
				f.log.Debug("fetch: already complete", "dest", dest)
				return nil
			}
		}
	}
	max := f.maxBytes(want)
	if want.Size > max {
		return fmt.Errorf("%w: expected size %d, cap %d", ErrTooLarge, want.Size, max)
	}
	dir := filepath.Dir(dest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pf, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if pf != nil {
			pf.Close()
		}
	}()
	fi, err := pf.Stat()
	if err != nil {
		return err
	}
	off := fi.Size()
	// inherited: the part file holds bytes from an earlier call, whose
	// origin we cannot vouch for; a digest mismatch then restarts once.
	inherited := off > 0
	if (want.Size > 0 && off > want.Size) || off > max {
		off = 0
		inherited = false
	}
	if err := pf.Truncate(off); err != nil {
		return err
	}
	if off > 0 {
		f.log.Info("fetch: resuming", "url", redact(src), "offset", off)
	}

	if want.Size > 0 {
		if err := f.checkSpace(dir, want.Size-off); err != nil {
			return err
		}
	}

	var (
		validator string // ETag or Last-Modified for If-Range
		cuts      int    // transfers cut (or refused) without completing
		idle      int    // consecutive cuts that made no progress
		total     int64  = -1
	)
	for {
		res, err := f.attempt(ctx, src, pf, off, validator, want, dir)
		if res.validator != "" {
			validator = res.validator
		}
		if res.restarted {
			inherited = false
		}
		if res.total >= 0 {
			total = res.total
		}
		if err == nil {
			off = res.off
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("download stopped at byte %d: %w", res.off, context.Cause(ctx))
		}
		if !res.resumable {
			if res.discard {
				pf.Close()
				pf = nil
				os.Remove(part)
			}
			return err
		}
		if res.off > off {
			idle = 0
		} else {
			idle++
		}
		off = res.off
		cuts++
		if cuts > f.opts.MaxResumes {
			return fmt.Errorf("%w: %d cuts, %d bytes kept in %s for the next attempt: %w", ErrInterrupted, cuts, off, part, err)
		}
		wait := Backoff(f.opts.RetryWaitMin, f.opts.RetryWaitMax, idle, nil)
		f.log.Warn("fetch: transfer cut, resuming", "url", redact(src), "offset", off, "total", total, "cut", cuts, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("download stopped at byte %d: %w", off, context.Cause(ctx))
		case <-t.C:
		}
	}

	if err := pf.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", part, err)
	}
	if err := pf.Close(); err != nil {
		return err
	}
	pf = nil
	if total >= 0 && off != total {
		os.Remove(part)
		return fmt.Errorf("%w: got %d bytes, server announced %d", ErrSize, off, total)
	}
	if err := f.verify(part, off, want); err != nil {
		os.Remove(part)
		if inherited && errors.Is(err, ErrDigest) {
			// The kept part file came from another file; start over once.
			f.log.Warn("fetch: resumed file failed its digest, downloading from scratch", "url", redact(src))
			return f.download(ctx, src, dest, want)
		}
		return err
	}
	if err := os.Rename(part, dest); err != nil {
		return err
	}
	return syncDir(dir)
}

type attemptResult struct {
	off       int64 // bytes now in the part file
	total     int64 // full size if known, else -1
	validator string
	restarted bool // the part file was truncated to zero
	resumable bool // the error is a cut worth resuming
	discard   bool // the part file must be removed
}

// attempt issues one (retried) request and copies the body into pf from
// off. It returns nil when the file is complete.
func (f *Fetcher) attempt(ctx context.Context, src string, pf *os.File, off int64, validator string, want Expect, dir string) (attemptResult, error) {
	res := attemptResult{off: off, total: -1}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := retryablehttp.NewRequestWithContext(actx, http.MethodGet, src, nil)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrSource, err)
	}
	// Transparent gzip would make byte offsets meaningless.
	req.Header.Set("Accept-Encoding", "identity")
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		if validator != "" {
			req.Header.Set("If-Range", validator)
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		// go-retryablehttp already retried with backoff: give up, keeping
		// the part file for the next call.
		return res, err
	}
	defer resp.Body.Close()
	if v := resp.Header.Get("ETag"); v != "" && !strings.HasPrefix(v, "W/") {
		res.validator = v
	} else if v := resp.Header.Get("Last-Modified"); v != "" {
		res.validator = v
	}

	max := f.maxBytes(want)
	restart := func() error {
		res.off, res.restarted = 0, true
		if _, err := pf.Seek(0, io.SeekStart); err != nil {
			return err
		}
		return pf.Truncate(0)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if off > 0 {
			f.log.Info("fetch: server ignored the range, restarting from zero", "url", redact(src))
		}
		if err := restart(); err != nil {
			return res, err
		}
		res.total = resp.ContentLength
	case http.StatusPartialContent:
		start, end, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off || (size >= 0 && end != size-1) {
			// Not the range we asked for: drop what we have and ask again
			// without a range.
			f.log.Warn("fetch: unexpected Content-Range, restarting from zero", "url", redact(src), "content_range", resp.Header.Get("Content-Range"), "offset", off)
			if err := restart(); err != nil {
				return res, err
			}
			res.resumable = true
			return res, fmt.Errorf("unexpected Content-Range %q for offset %d", resp.Header.Get("Content-Range"), off)
		}
		res.total = size
	case http.StatusRequestedRangeNotSatisfiable:
		size := parseUnsatisfiedRange(resp.Header.Get("Content-Range"))
		if size >= 0 && size == off && off > 0 {
			res.total = size
			return res, nil // we already hold the whole file
		}
		f.log.Warn("fetch: range not satisfiable, restarting from zero", "url", redact(src), "offset", off, "content_range", resp.Header.Get("Content-Range"))
		if err := restart(); err != nil {
			return res, err
		}
		res.resumable = true
		return res, fmt.Errorf("range from byte %d not satisfiable (Content-Range %q)", off, resp.Header.Get("Content-Range"))
	default:
		return res, fmt.Errorf("%w: %s", ErrStatus, resp.Status)
	}

	if res.total >= 0 {
		if want.Size > 0 && res.total != want.Size {
			res.discard = true
			return res, fmt.Errorf("%w: server announces %d bytes, expected %d", ErrSize, res.total, want.Size)
		}
		if res.total > max {
			res.discard = true
			return res, fmt.Errorf("%w: server announces %d bytes, cap %d", ErrTooLarge, res.total, max)
		}
		if err := f.checkSpace(dir, res.total-res.off); err != nil {
			return res, err
		}
	}

	if _, err := pf.Seek(res.off, io.SeekStart); err != nil {
		return res, err
	}
	limit := max
	if res.total >= 0 {
		limit = res.total
	}
	body := &stallReader{r: resp.Body, timeout: f.opts.StallTimeout, cancel: cancel}
	defer body.stop()
	n, err := io.Copy(pf, io.LimitReader(body, limit-res.off+1))
	res.off += n
	if err != nil {
		if errors.Is(context.Cause(actx), errStalled) && ctx.Err() == nil {
			err = fmt.Errorf("%w after %s", errStalled, f.opts.StallTimeout)
		}
		res.resumable = true
		return res, err
	}
	if res.off > limit {
		res.discard = true
		if res.total >= 0 {
			return res, fmt.Errorf("%w: server sent more than the %d bytes it announced", ErrSize, res.total)
		}
		return res, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	if res.total >= 0 && res.off < res.total {
		res.resumable = true
		return res, fmt.Errorf("body ended at byte %d of %d: %w", res.off, res.total, io.ErrUnexpectedEOF)
	}
	return res, nil
}

var errStalled = errors.New("transfer stalled")

// stallReader cancels the request when no byte arrives for timeout.
type stallReader struct {
	r       io.Reader
	timeout time.Duration
	cancel  context.CancelCauseFunc
	timer   *time.Timer
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.timer == nil {
		s.timer = time.AfterFunc(s.timeout, func() { s.cancel(errStalled) })
	} else {
		s.timer.Reset(s.timeout)
	}
	return s.r.Read(p)
}

func (s *stallReader) stop() {
	if s.timer != nil {
		s.timer.Stop()
	}
}

// parseContentRange parses "bytes START-END/SIZE" (SIZE may be "*", then
// size is -1).
func parseContentRange(v string) (start, end, size int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, sz, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err error
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return 0, 0, 0, false
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, false
	}
	size = -1
	if sz != "*" {
		if size, err = strconv.ParseInt(sz, 10, 64); err != nil || size <= end {
			return 0, 0, 0, false
		}
	}
	return start, end, size, true
}

// parseUnsatisfiedRange parses a 416's "bytes */SIZE"; -1 if absent or
// malformed.
func parseUnsatisfiedRange(v string) int64 {
	sz, found := strings.CutPrefix(strings.TrimSpace(v), "bytes */")
	if !found {
		return -1
	}
	n, err := strconv.ParseInt(sz, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// Backoff is exponential backoff with full jitter: a random wait in
// [min, min·2^attempt] capped at max, or the server's Retry-After on 429
// and 503. It has go-retryablehttp's Backoff signature.
func Backoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			if d := time.Duration(s) * time.Second; d < max {
				return d
			}
			return max
		}
	}
	ceil := max
	if attempt < 30 {
		if c := min << attempt; c > 0 && c < max {
			ceil = c
		}
	}
	if ceil <= min {
		return min
	}
	return min + rand.N(ceil-min+1)
}

// redact drops credentials and the query (often a presigned token) from a
// URL for logs and errors.
func redact(src string) string {
	u, err := url.Parse(src)
	if err != nil {
		return "<unparsable URL>"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.String()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// slogAdapter is go-retryablehttp's LeveledLogger on top of slog.
// Failed attempts it will retry are warnings for us, not errors. It
// removes URL queries (presigned tokens) from the values it logs.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Error(msg string, kv ...any) { a.l.Warn("fetch: "+msg, scrubKV(kv)...) }
func (a slogAdapter) Info(msg string, kv ...any)  { a.l.Info("fetch: "+msg, scrubKV(kv)...) }
func (a slogAdapter) Debug(msg string, kv ...any) { a.l.Debug("fetch: "+msg, scrubKV(kv)...) }
func (a slogAdapter) Warn(msg string, kv ...any)  { a.l.Warn("fetch: "+msg, scrubKV(kv)...) }

var queryRE = regexp.MustCompile(`\?[^\s"]*`)

func scrubKV(kv []any) []any {
	out := make([]any, len(kv))
	for i, v := range kv {
		switch v := v.(type) {
		case string:
			out[i] = queryRE.ReplaceAllString(v, "?REDACTED")
		case error:
			out[i] = queryRE.ReplaceAllString(v.Error(), "?REDACTED")
		default:
			out[i] = v
		}
	}
	return out
}
