package fetch

// Local sources and the checks every file passes: size, size cap and
// SHA-256.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

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
