package fetch

// The download of one URL: the part file (resumed, or restarted when it
// cannot be trusted), the loop that resumes a cut transfer with backoff,
// and the final check and atomic rename into place.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

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
	return atomicfile.SyncDir(dir)
}
