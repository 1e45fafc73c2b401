package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// server serves content with http.ServeContent (so Range and If-Range
// are real) and misbehaves on demand.
type server struct {
	content []byte
	modTime time.Time

	mu          sync.Mutex
	fail        int     // answer this many requests with 500 first
	cuts        []int64 // cut the next responses after this many body bytes
	stalls      int     // stall this many responses after half the body
	ignoreRange bool    // drop the Range header: always 200
	badRange    int     // answer this many range requests with a wrong Content-Range
	ranges      []string
	requests    int
}

func newServer(t *testing.T, size int) (*server, *httptest.Server) {
	t.Helper()
	s := &server{content: randomBytes(t, size), modTime: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	if s.fail > 0 {
		s.fail--
		s.mu.Unlock()
		http.Error(w, "try later", http.StatusInternalServerError)
		return
	}
	if s.ignoreRange {
		r.Header.Del("Range")
	}
	if s.badRange > 0 && r.Header.Get("Range") != "" {
		s.badRange--
		s.mu.Unlock()
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-9/%d", len(s.content)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(s.content[:10])
		return
	}
	var out http.ResponseWriter = w
	if len(s.cuts) > 0 {
		out = &testenv.CutWriter{ResponseWriter: w, Left: s.cuts[0]}
		s.cuts = s.cuts[1:]
	} else if s.stalls > 0 {
		s.stalls--
		out = &testenv.CutWriter{ResponseWriter: w, Left: int64(len(s.content) / 2), Hold: r.Context()}
	}
	s.mu.Unlock()
	http.ServeContent(out, r, "x.bundle", s.modTime, bytes.NewReader(s.content))
}

func testFetcher(t *testing.T, opts Options) *Fetcher {
	t.Helper()
	opts.RetryWaitMin = time.Millisecond
	opts.RetryWaitMax = 5 * time.Millisecond
	if opts.Logger == nil {
		opts.Logger = testenv.Logger(t)
	}
	return New(opts)
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// fetchAll fetches url into dest with f, expecting the sha256 of want, and
// checks dest holds want.
func fetchAll(t *testing.T, f *Fetcher, url, dest string, want []byte) {
	t.Helper()
	if _, err := f.Fetch(t.Context(), url, dest, Expect{SHA256: sum(want)}); err != nil {
		t.Fatal(err)
	}
	assertFile(t, dest, want)
}

func assertFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, sha256 %s; want %d bytes, sha256 %s", path, len(got), sum(got), len(want), sum(want))
	}
	if _, err := os.Stat(path + PartSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still exists (err %v)", path+PartSuffix, err)
	}
}

func assertNoFiles(t *testing.T, dest string) {
	t.Helper()
	for _, p := range []string{dest, dest + PartSuffix} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a failed download (err %v)", p, err)
		}
	}
}

func TestResumeAfterCuts(t *testing.T) {
	s, ts := newServer(t, 1<<20+123)
	s.cuts = []int64{1000, 200 << 10, 1, 300 << 10}
	dest := filepath.Join(t.TempDir(), "a.bundle")
	f := testFetcher(t, Options{})
	got, err := f.Fetch(t.Context(), ts.URL+"/a.bundle", dest, Expect{Size: int64(len(s.content)), SHA256: sum(s.content)})
	if err != nil {
		t.Fatal(err)
	}
	if got != dest {
		t.Fatalf("Fetch returned %q, want %q", got, dest)
	}
	assertFile(t, dest, s.content)
	want := []string{"", "bytes=1000-", fmt.Sprintf("bytes=%d-", 1000+200<<10), fmt.Sprintf("bytes=%d-", 1001+200<<10), fmt.Sprintf("bytes=%d-", 1001+500<<10)}
	if fmt.Sprint(s.ranges) != fmt.Sprint(want) {
		t.Fatalf("Range headers %q, want %q", s.ranges, want)
	}
}

func TestResumeAcrossCalls(t *testing.T) {
	s, ts := newServer(t, 300<<10)
	s.cuts = []int64{100 << 10, 50 << 10}
	dest := filepath.Join(t.TempDir(), "a.bundle")
	f := testFetcher(t, Options{MaxResumes: -1})
	_, err := f.Fetch(t.Context(), ts.URL, dest, Expect{})
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("first call: err %v, want ErrInterrupted", err)
	}
	if fi, err := os.Stat(dest + PartSuffix); err != nil || fi.Size() != 100<<10 {
		t.Fatalf("part file after a cut: %v, %v; want %d bytes", fi, err, 100<<10)
	}
	// A new Fetcher (as after an agent restart) resumes the part file.
	f = testFetcher(t, Options{})
	fetchAll(t, f, ts.URL, dest, s.content)
	if s.ranges[1] != "bytes=102400-" {
		t.Fatalf("second call asked %q, want a resume from 102400", s.ranges[1])
	}
}

func TestServerIgnoresRange(t *testing.T) {
	s, ts := newServer(t, 256<<10)
	s.ignoreRange = true
	s.cuts = []int64{100 << 10, 10}
	dest := filepath.Join(t.TempDir(), "a.bundle")
	f := testFetcher(t, Options{})
	fetchAll(t, f, ts.URL, dest, s.content)
	if s.requests != 3 {
		t.Fatalf("%d requests, want 3", s.requests)
	}
}

func TestWrongContentRangeRestarts(t *testing.T) {
	s, ts := newServer(t, 64<<10)
	s.cuts = []int64{1000}
	s.badRange = 1
	dest := filepath.Join(t.TempDir(), "a.bundle")
	f := testFetcher(t, Options{})
	fetchAll(t, f, ts.URL, dest, s.content)
	want := []string{"", "bytes=1000-", ""}
	if fmt.Sprint(s.ranges) != fmt.Sprint(want) {
		t.Fatalf("Range headers %q, want %q", s.ranges, want)
	}
}

func TestRangeNotSatisfiable(t *testing.T) {
	t.Run("part already complete", func(t *testing.T) {
		s, ts := newServer(t, 10<<10)
		dest := filepath.Join(t.TempDir(), "a.bundle")
		if err := os.WriteFile(dest+PartSuffix, s.content, 0o644); err != nil {
			t.Fatal(err)
		}
		f := testFetcher(t, Options{})
		fetchAll(t, f, ts.URL, dest, s.content)
		if s.requests != 1 || s.ranges[0] != "bytes=10240-" {
			t.Fatalf("requests %q, want one for bytes=10240-", s.ranges)
		}
	})
	t.Run("part longer than the file", func(t *testing.T) {
		s, ts := newServer(t, 10<<10)
		dest := filepath.Join(t.TempDir(), "a.bundle")
		if err := os.WriteFile(dest+PartSuffix, randomBytes(t, 20<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		f := testFetcher(t, Options{})
		if _, err := f.Fetch(t.Context(), ts.URL, dest, Expect{}); err != nil {
			t.Fatal(err)
		}
		assertFile(t, dest, s.content)
		want := []string{"bytes=20480-", ""}
		if fmt.Sprint(s.ranges) != fmt.Sprint(want) {
			t.Fatalf("Range headers %q, want %q", s.ranges, want)
		}
	})
}

func TestStalePartFromAnotherFile(t *testing.T) {
	s, ts := newServer(t, 10<<10)
	dest := filepath.Join(t.TempDir(), "a.bundle")
	// Same length prefix, different bytes: only the digest can tell.
	if err := os.WriteFile(dest+PartSuffix, randomBytes(t, 4<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	f := testFetcher(t, Options{})
	fetchAll(t, f, ts.URL, dest, s.content)
	want := []string{"bytes=4096-", ""}
	if fmt.Sprint(s.ranges) != fmt.Sprint(want) {
		t.Fatalf("Range headers %q, want %q", s.ranges, want)
	}
}

func TestRetriesServerErrors(t *testing.T) {
	s, ts := newServer(t, 4<<10)
	s.fail = 2
	dest := filepath.Join(t.TempDir(), "a.bundle")
	f := testFetcher(t, Options{Retries: 3})
	fetchAll(t, f, ts.URL, dest, s.content)
	if s.requests != 3 {
		t.Fatalf("%d requests, want 3 (500, 500, 200)", s.requests)
	}

	// More failures than retries: a clear error, bounded attempts.
	s.fail = 100
	s.requests = 0
	dest2 := filepath.Join(t.TempDir(), "b.bundle")
	_, err := f.Fetch(t.Context(), ts.URL, dest2, Expect{})
	if err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("err %v, want one naming the 500 status", err)
	}
	if s.requests != 4 {
		t.Fatalf("%d requests, want 4 (1 + 3 retries)", s.requests)
	}
}

func TestNotFound(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(ts.Close)
	dest := filepath.Join(t.TempDir(), "a.bundle")
	_, err := testFetcher(t, Options{}).Fetch(t.Context(), ts.URL, dest, Expect{})
	if !errors.Is(err, ErrStatus) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err %v, want ErrStatus naming 404", err)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dest exists after 404")
	}
}

func TestSizeCap(t *testing.T) {
	s, ts := newServer(t, 64<<10)
	tests := []struct {
		name string
		url  string
		opts Options
		want Expect
	}{
		{"announced", ts.URL, Options{MaxBytes: 32 << 10}, Expect{}},
		{"per-file cap", ts.URL, Options{}, Expect{MaxBytes: 1 << 10}},
		{"expected size above cap", ts.URL, Options{MaxBytes: 1 << 10}, Expect{Size: 64 << 10}},
		{"chunked", chunkedServer(t, s.content), Options{MaxBytes: 32 << 10}, Expect{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "a.bundle")
			_, err := testFetcher(t, tt.opts).Fetch(t.Context(), tt.url, dest, tt.want)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err %v, want ErrTooLarge", err)
			}
			assertNoFiles(t, dest)
		})
	}
}

// chunkedServer sends content without a Content-Length.
func chunkedServer(t *testing.T, content []byte) string {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for b := content; len(b) > 0; {
			n := min(len(b), 4096)
			w.Write(b[:n])
			w.(http.Flusher).Flush()
			b = b[n:]
		}
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

func TestChunked(t *testing.T) {
	content := randomBytes(t, 50<<10)
	dest := filepath.Join(t.TempDir(), "a.bundle")
	if _, err := testFetcher(t, Options{}).Fetch(t.Context(), chunkedServer(t, content), dest, Expect{}); err != nil {
		t.Fatal(err)
	}
	assertFile(t, dest, content)
}

func TestIntegrity(t *testing.T) {
	s, ts := newServer(t, 16<<10)
	tests := []struct {
		name    string
		want    Expect
		wantErr error
	}{
		{"sha mismatch", Expect{SHA256: sum([]byte("other"))}, ErrDigest},
		{"size mismatch", Expect{Size: 100}, ErrSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "a.bundle")
			_, err := testFetcher(t, Options{}).Fetch(t.Context(), ts.URL, dest, tt.want)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			assertNoFiles(t, dest)
		})
	}
	if _, err := testFetcher(t, Options{}).Fetch(t.Context(), ts.URL, filepath.Join(t.TempDir(), "x"), Expect{SHA256: "zz"}); !errors.Is(err, ErrSource) {
		t.Fatalf("malformed digest: err %v, want ErrSource", err)
	}
	_ = s
}

func TestNoSpace(t *testing.T) {
	s, ts := newServer(t, 16<<10)
	for _, want := range []Expect{{}, {Size: int64(len(s.content))}} {
		dest := filepath.Join(t.TempDir(), "a.bundle")
		_, err := testFetcher(t, Options{MinFreeBytes: 1 << 60}).Fetch(t.Context(), ts.URL, dest, want)
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("err %v, want ErrNoSpace", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, fmt.Sprintf("need %d bytes", int64(1<<60)+int64(len(s.content)))) || !strings.Contains(msg, "free") {
			t.Fatalf("error %q does not name the bytes needed and free", msg)
		}
		if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("dest exists after ErrNoSpace")
		}
	}
}

func TestStallResumes(t *testing.T) {
	s, ts := newServer(t, 64<<10)
	s.stalls = 1
	dest := filepath.Join(t.TempDir(), "a.bundle")
	// The stall is forever, so the timeout only has to be longer than
	// any hiccup of a busy machine.
	f := testFetcher(t, Options{StallTimeout: 2 * time.Second})
	fetchAll(t, f, ts.URL, dest, s.content)
	if want := fmt.Sprintf("bytes=%d-", 32<<10); len(s.ranges) != 2 || s.ranges[1] != want {
		t.Fatalf("Range headers %q, want a resume %q", s.ranges, want)
	}
}

func TestCancelStopsPromptly(t *testing.T) {
	started := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	t.Cleanup(ts.Close)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		cancel()
	}()
	dest := filepath.Join(t.TempDir(), "a.bundle")
	// The stall timeout and retries are long: only cancellation can end
	// this call before the test's deadline.
	f := New(Options{StallTimeout: time.Hour, RetryWaitMin: time.Hour, RetryWaitMax: time.Hour})
	_, err := f.Fetch(ctx, ts.URL, dest, Expect{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dest exists after cancellation")
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(ts.Close)
	ctx, cancel := context.WithCancel(t.Context())
	f := New(Options{RetryWaitMin: time.Hour, RetryWaitMax: time.Hour, Logger: slog.New(slog.NewTextHandler(&cancelOnWrite{cancel: cancel}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	_, err := f.Fetch(ctx, ts.URL, filepath.Join(t.TempDir(), "a"), Expect{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

// cancelOnWrite cancels when the retry log line is written, i.e. while
// the client waits for its backoff.
type cancelOnWrite struct{ cancel context.CancelFunc }

func (c *cancelOnWrite) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("retrying")) {
		c.cancel()
	}
	return len(p), nil
}

func TestLocalSource(t *testing.T) {
	dir := t.TempDir()
	content := []byte("bundle bytes")
	path := filepath.Join(dir, "a.bundle")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f := testFetcher(t, Options{})
	for _, src := range []string{path, "file://" + path} {
		got, err := f.Fetch(t.Context(), src, "", Expect{Size: int64(len(content)), SHA256: sum(content)})
		if err != nil || got != path {
			t.Fatalf("Fetch(%q) = %q, %v; want %q", src, got, err, path)
		}
	}
	tests := []struct {
		src     string
		want    Expect
		wantErr error
	}{
		{filepath.Join(dir, "missing"), Expect{}, ErrSource},
		{dir, Expect{}, ErrSource},
		{"ftp://example.com/a.bundle", Expect{}, ErrSource},
		{path, Expect{SHA256: sum([]byte("x"))}, ErrDigest},
		{path, Expect{Size: 3}, ErrSize},
		{path, Expect{MaxBytes: 3}, ErrTooLarge},
	}
	for _, tt := range tests {
		if _, err := f.Fetch(t.Context(), tt.src, "", tt.want); !errors.Is(err, tt.wantErr) {
			t.Errorf("Fetch(%q, %+v): err %v, want %v", tt.src, tt.want, err, tt.wantErr)
		}
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a local source must never be removed: %v", err)
	}
}

func TestAlreadyComplete(t *testing.T) {
	s, ts := newServer(t, 1<<10)
	dest := filepath.Join(t.TempDir(), "a.bundle")
	if err := os.WriteFile(dest, s.content, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := testFetcher(t, Options{}).Fetch(t.Context(), ts.URL, dest, Expect{SHA256: sum(s.content)}); err != nil {
		t.Fatal(err)
	}
	if s.requests != 0 {
		t.Fatalf("%d requests for a file already in place", s.requests)
	}
}

func TestIsURL(t *testing.T) {
	for src, want := range map[string]bool{
		"http://h/a": true, "HTTPS://h/a": true, "https:///a": false,
		"/var/lib/a.bundle": false, "a.bundle": false, "file:///a": false, "ftp://h/a": false,
	} {
		if got := IsURL(src); got != want {
			t.Errorf("IsURL(%q) = %v, want %v", src, got, want)
		}
	}
}

func TestRedact(t *testing.T) {
	got := redact("https://user:secret@h/a.bundle?X-Amz-Signature=abc")
	if strings.Contains(got, "secret") || strings.Contains(got, "abc") {
		t.Fatalf("redact leaked credentials: %q", got)
	}
}

func TestBackoff(t *testing.T) {
	for attempt := range 40 {
		d := Backoff(10*time.Millisecond, time.Second, attempt, nil)
		ceil := time.Second
		if attempt < 7 {
			ceil = 10 * time.Millisecond << attempt
		}
		if d < 10*time.Millisecond || d > ceil {
			t.Fatalf("attempt %d: %v outside [10ms, %v]", attempt, d, ceil)
		}
	}
	resp := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"2"}}}
	if d := Backoff(time.Millisecond, time.Minute, 0, resp); d != 2*time.Second {
		t.Fatalf("Retry-After 2: %v", d)
	}
	if d := Backoff(time.Millisecond, time.Second, 0, resp); d != time.Second {
		t.Fatalf("Retry-After above max: %v, want the max", d)
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in               string
		start, end, size int64
		ok               bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes 5-9/9", 0, 0, 0, false},
		{"bytes 9-5/10", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"items 0-9/10", 0, 0, 0, false},
		{"bytes */10", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tt := range tests {
		s, e, n, ok := parseContentRange(tt.in)
		if ok != tt.ok || (ok && (s != tt.start || e != tt.end || n != tt.size)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v", tt.in, s, e, n, ok)
		}
	}
	if n := parseUnsatisfiedRange("bytes */123"); n != 123 {
		t.Errorf("parseUnsatisfiedRange = %d", n)
	}
	if n := parseUnsatisfiedRange("bytes 0-1/2"); n != -1 {
		t.Errorf("parseUnsatisfiedRange of a satisfied range = %d", n)
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/*", "bytes */10", "bytes 9223372036854775806-9223372036854775806/9223372036854775807", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, size, ok := parseContentRange(s)
		if ok && (start < 0 || end < start || (size != -1 && size <= end)) {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d accepted", s, start, end, size)
		}
		if n := parseUnsatisfiedRange(s); n < -1 {
			t.Fatalf("parseUnsatisfiedRange(%q) = %d", s, n)
		}
	})
}

func TestErrorsHideSecrets(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	t.Cleanup(ts.Close)
	src := strings.Replace(ts.URL, "http://", "http://user:hunter2@", 1) + "/a.bundle?X-Amz-Signature=s3cr3t"
	var logs bytes.Buffer
	f := testFetcher(t, Options{Retries: 1, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	_, err := f.Fetch(t.Context(), src, filepath.Join(t.TempDir(), "a"), Expect{})
	if logs.Len() == 0 || strings.Contains(logs.String(), "s3cr3t") || strings.Contains(logs.String(), "hunter2") {
		t.Fatalf("logs leak the URL's secrets (or are empty):\n%s", logs.String())
	}
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v leaks the URL's secrets", err)
	}
	if !errors.Is(err, ErrStatus) {
		t.Fatalf("err %v, want ErrStatus through the scrubbed wrapper", err)
	}
}

func TestHTTPS(t *testing.T) {
	content := randomBytes(t, 100<<10)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "a.bundle", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(ts.Close)
	dest := filepath.Join(t.TempDir(), "a.bundle")
	// Without the server's CA: refused, and not retried.
	if _, err := testFetcher(t, Options{}).Fetch(t.Context(), ts.URL, dest, Expect{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: err %v", err)
	}
	if _, err := testFetcher(t, Options{HTTPClient: ts.Client()}).Fetch(t.Context(), ts.URL, dest, Expect{SHA256: sum(content)}); err != nil {
		t.Fatal(err)
	}
	assertFile(t, dest, content)
}
