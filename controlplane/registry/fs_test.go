package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var testURLKey = []byte("0123456789abcdef0123456789abcdef")

// newFSServer serves an FS registry configured by cfg (Dir, BaseURL and
// Now filled in) under /registry on a loopback HTTP server.
func newFSServer(t testing.TB, cfg FSConfig) (*FS, *cptest.Clock) {
	t.Helper()
	clk := cptest.NewClock(time.Now())
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.BaseURL = srv.URL + "/registry"
	cfg.Now = clk.Now
	reg, err := NewFS(cfg)
	if err != nil {
		t.Fatalf("NewFS: %v", err)
	}
	mux.Handle("/registry/", reg.Handler())
	return reg, clk
}

func TestFSConformance(t *testing.T) {
	runConformance(t, func(t *testing.T, trust *bundle.TrustRoot, urlExpiry time.Duration) env {
		reg, clk := newFSServer(t, FSConfig{URLKey: testURLKey, Trust: trust, URLExpiry: urlExpiry})
		return env{reg: reg, expire: func(*testing.T) { clk.Advance(reg.cfg.URLExpiry) }}
	})
}

func TestNewFSConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  FSConfig
		want string
	}{
		{"no dir", FSConfig{BaseURL: "http://x", Public: true}, "Dir is empty"},
		{"relative base", FSConfig{Dir: dir, BaseURL: "/registry", Public: true}, "absolute http(s) URL"},
		{"ftp base", FSConfig{Dir: dir, BaseURL: "ftp://x/r", Public: true}, "absolute http(s) URL"},
		{"query in base", FSConfig{Dir: dir, BaseURL: "http://x/r?a=b", Public: true}, "without query"},
		{"short key", FSConfig{Dir: dir, BaseURL: "http://x", URLKey: []byte("short")}, "URLKey is 5 bytes"},
		{"no access", FSConfig{Dir: dir, BaseURL: "http://x"}, "set URLKey"},
		{"negative expiry", FSConfig{Dir: dir, BaseURL: "http://x", Public: true, URLExpiry: -time.Second}, "negative"},
	}
	for _, tc := range tests {
		if _, err := NewFS(tc.cfg); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewFS = %v, want ErrInvalid containing %q", tc.name, err, tc.want)
		}
	}
}

// TestFSLayout pins the on-disk layout and that pushes leave nothing
// behind in the staging area.
func TestFSLayout(t *testing.T) {
	pub := newPublisher(t)
	dir := t.TempDir()
	reg, _ := newFSServer(t, FSConfig{Dir: dir, URLKey: testURLKey, Trust: pub.trust})
	bp, sp := pub.build(t, "vad", "1.0.0", modelBytes(1, 1024))
	en, err := reg.Put(context.Background(), bp, sp)
	if err != nil {
		t.Fatal(err)
	}
	vdir := filepath.Join(dir, "bundles", "vad", "1.0.0")
	if got := mustRead(t, filepath.Join(vdir, "bundle")); !bytes.Equal(got, mustRead(t, bp)) {
		t.Error("stored bundle differs from the pushed one")
	}
	if got := mustRead(t, filepath.Join(vdir, "bundle.sig")); strings.TrimSpace(string(got)) != en.Sig {
		t.Errorf("stored signature %q", got)
	}
	se, err := decodeEntry(mustRead(t, filepath.Join(vdir, "entry.json")), "entry.json")
	if err != nil || se.SHA256 != en.SHA256 {
		t.Errorf("entry.json = %+v, %v", se, err)
	}
	des, _ := os.ReadDir(vdir)
	if len(des) != 3 {
		t.Errorf("version directory holds %d files, want 3", len(des))
	}
	// A refused push leaves nothing either.
	other, osp := pub.build(t, "vad", "1.0.0", modelBytes(2, 1024))
	if _, err := reg.Put(context.Background(), other, osp); !errors.Is(err, ErrConflict) {
		t.Fatal(err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("staging area not empty: %v", tmp)
	}
	// Deleting the last version removes the name directory too.
	if err := reg.Delete(context.Background(), "vad", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bundles", "vad")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("name directory left after deleting its last version: %v", err)
	}
}

func TestFSCleansStaleStaging(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"push-old", "push-new"} {
		if err := os.MkdirAll(filepath.Join(dir, "tmp", name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleAfter)
	if err := os.Chtimes(filepath.Join(dir, "tmp", "push-old"), old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFS(FSConfig{Dir: dir, BaseURL: "http://x", Public: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "push-old")); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale staging directory kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "push-new")); err != nil {
		t.Error("recent staging directory (maybe another process's push) removed")
	}
}

func TestFSWithoutTrustRoot(t *testing.T) {
	pub := newPublisher(t)
	reg, _ := newFSServer(t, FSConfig{Public: true})
	bp, sp := pub.build(t, "vad", "1.0.0", modelBytes(1, 512))
	en, err := reg.Put(context.Background(), bp, sp)
	if err != nil {
		t.Fatal(err)
	}
	if en.Verified {
		t.Error("Verified without a trust root")
	}
	// Still refused: no signature at all.
	bp2, _ := pub.build(t, "vad", "1.0.1", modelBytes(1, 512))
	os.Remove(bp2 + ".sig")
	if _, err := reg.Put(context.Background(), bp2, bp2+".sig"); !errors.Is(err, ErrNoSignature) {
		t.Errorf("Put without signature = %v", err)
	}
}

// TestHandler covers what the conformance suite cannot: headers, access
// control and request validation of the FS download handler.
func TestHandler(t *testing.T) {
	pub := newPublisher(t)
	ctx := context.Background()
	const devHeader = "X-Test-Device"
	authorize := func(r *http.Request) error {
		if r.Header.Get(devHeader) != "dev-ok" {
			return errors.New("unknown device")
		}
		return nil
	}
	reg, clk := newFSServer(t, FSConfig{URLKey: testURLKey, Authorize: authorize, Trust: pub.trust})
	bp, sp := pub.build(t, "vad", "1.0.0", modelBytes(1, 8192))
	en, err := reg.Put(ctx, bp, sp)
	if err != nil {
		t.Fatal(err)
	}
	bu, su, err := reg.URL(ctx, en, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	file := mustRead(t, bp)

	t.Run("headers", func(t *testing.T) {
		if !strings.HasPrefix(bu, reg.base.String()+"/bundles/vad/1.0.0/vad-1.0.0.bundle?") {
			t.Errorf("bundle URL %s", bu)
		}
		_, resp := download(t, bu, nil, http.StatusOK)
		h := resp.Header
		if h.Get("ETag") != `"`+en.SHA256+`"` || h.Get("Content-Length") != strconv.Itoa(len(file)) ||
			h.Get("Accept-Ranges") != "bytes" || h.Get("Content-Type") != "application/octet-stream" ||
			h.Get("Last-Modified") != en.Pushed.UTC().Format(http.TimeFormat) ||
			!strings.Contains(h.Get("Cache-Control"), "no-transform") {
			t.Errorf("headers: %v", h)
		}
		_, resp = download(t, su, nil, http.StatusOK)
		if resp.Header.Get("ETag") != `"`+sha256hex([]byte(en.Sig+"\n"))+`"` {
			t.Errorf("signature ETag %q", resp.Header.Get("ETag"))
		}
		download(t, bu, http.Header{"If-None-Match": {`"` + en.SHA256 + `"`}}, http.StatusNotModified)
		// A resume with a stale If-Range validator gets the whole file.
		whole, _ := download(t, bu, http.Header{"Range": {"bytes=10-"}, "If-Range": {`"0123"`}}, http.StatusOK)
		if !bytes.Equal(whole, file) {
			t.Error("If-Range with a stale ETag did not return the whole file")
		}

		req, _ := http.NewRequest(http.MethodHead, bu, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(file)) {
			t.Errorf("HEAD: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
		}
		resp, err = http.Post(bu, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("POST: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})

	t.Run("signed URLs", func(t *testing.T) {
		u, _ := url.Parse(bu)
		q := u.Query()
		variant := func(edit func(u *url.URL, q url.Values)) string {
			u2 := *u
			q2 := url.Values{}
			for k, v := range q {
				q2[k] = append([]string(nil), v...)
			}
			edit(&u2, q2)
			u2.RawQuery = q2.Encode()
			return u2.String()
		}
		sigURL, _ := url.Parse(su)
		tests := []struct {
			name   string
			url    string
			status int
		}{
			{"valid", bu, http.StatusOK},
			{"other device", variant(func(_ *url.URL, q url.Values) { q.Set(paramDevice, "dev-2") }), http.StatusForbidden},
			{"no device", variant(func(_ *url.URL, q url.Values) { q.Del(paramDevice) }), http.StatusForbidden},
			{"later expiry", variant(func(_ *url.URL, q url.Values) { q.Set(paramExpires, "99999999999") }), http.StatusForbidden},
			{"bad base64", variant(func(_ *url.URL, q url.Values) { q.Set(paramSig, "!!") }), http.StatusForbidden},
			{"no expiry", variant(func(_ *url.URL, q url.Values) { q.Del(paramExpires) }), http.StatusForbidden},
			{"two sigs", variant(func(_ *url.URL, q url.Values) { q.Add(paramSig, q.Get(paramSig)) }), http.StatusForbidden},
			{"other file", variant(func(u *url.URL, _ url.Values) { u.Path = sigURL.Path }), http.StatusForbidden},
			{"other version", variant(func(u *url.URL, _ url.Values) { u.Path = strings.ReplaceAll(u.Path, "1.0.0", "1.0.1") }), http.StatusForbidden},
			{"unsigned", variant(func(_ *url.URL, q url.Values) { q.Del(paramSig) }), http.StatusUnauthorized},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) { download(t, tc.url, nil, tc.status) })
		}
		clk.Advance(DefaultURLExpiry)
		body, _ := download(t, bu, nil, http.StatusForbidden)
		if !strings.Contains(string(body), "expired") {
			t.Errorf("expired URL: %q", body)
		}
	})

	t.Run("authorize hook", func(t *testing.T) {
		plain := reg.base.String() + "/bundles/vad/1.0.0/vad-1.0.0.bundle"
		got, _ := download(t, plain, http.Header{devHeader: {"dev-ok"}}, http.StatusOK)
		if !bytes.Equal(got, file) {
			t.Error("authorized download differs")
		}
		body, _ := download(t, plain, http.Header{devHeader: {"intruder"}}, http.StatusUnauthorized)
		if strings.Contains(string(body), "unknown device") {
			t.Errorf("the hook's reason leaked to the client: %q", body)
		}
	})

	t.Run("paths", func(t *testing.T) {
		base := reg.base.String()
		for _, p := range []string{
			"/bundles/vad/1.0.0/other.bundle",
			"/bundles/vad/1.0.0/bundle",
			"/bundles/vad/1.0.0/entry.json",
			"/bundles/vad/2.0.0/vad-2.0.0.bundle",
			"/bundles/vad/1.0.0/",
			"/bundles/vad/1.0.0/x/vad-1.0.0.bundle",
			"/bundles/%2e%2e/1.0.0/vad-1.0.0.bundle",
			"/bundles/vad",
			"/other",
		} {
			t.Run(p, func(t *testing.T) {
				download(t, base+p, http.Header{devHeader: {"dev-ok"}}, http.StatusNotFound)
			})
		}
	})
}

// TestHandlerPublicAndClosed: without Authorize, unsigned requests are
// refused unless Public; signed URLs need a key.
func TestHandlerPublicAndClosed(t *testing.T) {
	pub := newPublisher(t)
	ctx := context.Background()
	bp, sp := pub.build(t, "vad", "1.0.0", modelBytes(1, 512))

	closed, _ := newFSServer(t, FSConfig{URLKey: testURLKey})
	en, err := closed.Put(ctx, bp, sp)
	if err != nil {
		t.Fatal(err)
	}
	download(t, closed.base.String()+"/bundles/vad/1.0.0/vad-1.0.0.bundle", nil, http.StatusForbidden)

	open, _ := newFSServer(t, FSConfig{Public: true})
	if _, err := open.Put(ctx, bp, sp); err != nil {
		t.Fatal(err)
	}
	bu, _, err := open.URL(ctx, en, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(bu, "?") {
		t.Errorf("URL without a key is signed: %s", bu)
	}
	download(t, bu, nil, http.StatusOK)
	download(t, bu+"?exp=1&sig=AAAA", nil, http.StatusForbidden)
}

// FuzzHandler feeds arbitrary paths and queries to the download handler:
// it never panics, and never serves a file to a request that is neither
// validly signed nor authorized.
func FuzzHandler(f *testing.F) {
	pub := newPublisher(f)
	reg, _ := newFSServer(f, FSConfig{URLKey: testURLKey})
	bp, sp := pub.build(f, "vad", "1.0.0", modelBytes(1, 512))
	en, err := reg.Put(context.Background(), bp, sp)
	if err != nil {
		f.Fatal(err)
	}
	bu, _, _ := reg.URL(context.Background(), en, "dev-1")
	valid, _ := url.Parse(bu)
	f.Add(valid.Path, valid.RawQuery)
	f.Add("/registry/bundles/vad/1.0.0/vad-1.0.0.bundle", "exp=1&sig=AAAA")
	f.Add("/registry/bundles/../1.0.0/x", "")
	f.Add("/registry/bundles/vad/1.0.0/vad-1.0.0.bundle.sig", "dev=a&dev=b&exp=9&sig=x")
	h := reg.Handler()
	f.Fuzz(func(t *testing.T, path, query string) {
		r := httptest.NewRequest(http.MethodGet, "http://fleetd/", nil)
		r.URL.Path, r.URL.RawQuery = path, query
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code == http.StatusOK && !(path == valid.Path || path == strings.TrimSuffix(valid.Path, ".bundle")+".bundle.sig") {
			t.Fatalf("served %q?%q", path, query)
		}
		if w.Code == http.StatusOK {
			if _, err := checkSignedURL(testURLKey, strings.TrimPrefix(path, "/registry"), r.URL.Query(), time.Now()); err != nil {
				t.Fatalf("served %q?%q without a valid signature: %v", path, query, err)
			}
		}
	})
}
