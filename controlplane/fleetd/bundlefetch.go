package fleetd

// Fetching a registry's bundle file to a local path, in process through
// the file registry's handler or over HTTP from S3, checked against the
// registry's size and SHA-256.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// fetchBundle writes the registry's bundle id to path and checks its size
// and SHA-256.
func (s *Server) fetchBundle(ctx context.Context, id, path string, size int64, sha string) error {
	name, version, _ := strings.Cut(id, "@")
	e, err := s.reg.Get(ctx, name, version)
	if err != nil {
		return err
	}
	u, _, err := s.reg.URL(ctx, e, "")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	if s.fsReg != nil {
		// The file registry serves its own URLs: no network, no TLS.
		pu, err := url.Parse(u)
		if err != nil {
			return fmt.Errorf("registry URL: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, pu.RequestURI(), nil)
		if err != nil {
			return err
		}
		rw := &fileResponse{header: http.Header{}, w: w}
		s.fsReg.Handler().ServeHTTP(rw, req)
		if rw.code != 0 && rw.code != http.StatusOK {
			return fmt.Errorf("registry answered %d for %s", rw.code, id)
		}
		if rw.err != nil {
			return rw.err
		}
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			return fmt.Errorf("downloading %s: %w", id, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("downloading %s: %s", id, resp.Status)
		}
		if _, err := io.Copy(w, io.LimitReader(resp.Body, size+1)); err != nil {
			return fmt.Errorf("downloading %s: %w", id, err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("bundle %s: %d bytes, the registry's entry says %d", id, st.Size(), size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("bundle %s: sha256 %s, the registry's entry says %s", id, got, sha)
	}
	return f.Close()
}

// fileResponse is the http.ResponseWriter fetchBundle hands the file
// registry's handler.
type fileResponse struct {
	header http.Header
	code   int
	w      io.Writer
	err    error
}

func (r *fileResponse) Header() http.Header { return r.header }

func (r *fileResponse) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *fileResponse) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	if r.code != http.StatusOK {
		return len(b), nil // an error body
	}
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.w.Write(b)
	r.err = err
	return n, err
}
