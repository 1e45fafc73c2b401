package fetch

// One transfer attempt: a (retried) range request, the server's answer
// (200, 206 or 416) checked against what is held and expected, the body
// copied with a stall timeout.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

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
