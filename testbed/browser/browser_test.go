package browser

import (
	"crypto/rand"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// consolePage is a stand-in for the web console: a labelled button whose
// text its script changes on a click, which it reports with a POST, and
// an element a server-sent event stream updates.
const consolePage = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>edgefleet console (test)</title></head>
<body>
<h1>Rollout console</h1>
<button id="go" type="button" aria-label="Start the canary wave">Start</button>
<p>Click: <span id="status">idle</span></p>
<p>Events: <span id="sse">connecting</span>, last <output id="event">none</output></p>
<script>
const go = document.getElementById('go');
const status = document.getElementById('status');
go.addEventListener('click', async () => {
  go.textContent = 'Started';
  go.disabled = true;
  try {
    const res = await fetch('/click', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({button: 'go'}),
    });
    status.textContent = res.ok ? 'click recorded' : 'click failed: ' + res.status;
  } catch (e) {
    status.textContent = 'click failed: ' + e;
  }
});
const sse = document.getElementById('sse');
const es = new EventSource('/events');
es.onopen = () => { sse.textContent = 'open'; };
es.onerror = () => { sse.textContent = 'error'; };
es.addEventListener('rollout', (e) => { document.getElementById('event').textContent = e.data; });
</script>
</body>
</html>
`

// consoleServer serves consolePage on 127.0.0.1: GET / the page, POST
// /click records a click, GET /events is the event stream, which sends
// event (as a "rollout" event) once a click is recorded.
type consoleServer struct {
	*httptest.Server
	event string

	mu     sync.Mutex
	clicks []string // the bodies of the click POSTs
	hosts  []string // the Host of every request
	once   sync.Once
	click  chan struct{} // closed at the first click
}

func newConsoleServer(t *testing.T) *consoleServer {
	t.Helper()
	s := &consoleServer{event: "wave 1 of 3 started, " + rand.Text(), click: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, consolePage)
	})
	mux.HandleFunc("POST /click", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<10))
		s.mu.Lock()
		s.clicks = append(s.clicks, string(body))
		s.mu.Unlock()
		s.once.Do(func() { close(s.click) })
		w.WriteHeader(http.StatusNoContent)
	})
	done := make(chan struct{})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		io.WriteString(w, ": connected\n\n")
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-s.click:
			fmt.Fprintf(w, "event: rollout\ndata: %s\n\n", s.event)
			rc.Flush()
		case <-r.Context().Done():
			return
		case <-done:
			return
		}
		// Held open, as a console's stream is, until the browser goes.
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hosts = append(s.hosts, r.Host)
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(done) }) // runs first: ends open streams
	return s
}

func (s *consoleServer) seen() (clicks, hosts []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.clicks...), append([]string(nil), s.hosts...)
}

// TestSmoke drives the console page with chromium: a click, its POST, the
// server-sent event that follows it, a screenshot, and no way out past
// loopback.
func TestSmoke(t *testing.T) {
	srv := newConsoleServer(t)
	Run(t, "testdata/smoke.mjs", map[string]string{"URL": srv.URL, "EVENT": srv.event})

	clicks, hosts := srv.seen()
	if len(clicks) != 1 || !strings.Contains(clicks[0], `"button":"go"`) {
		t.Errorf("the server saw click POSTs %q, want one from the button", clicks)
	}
	for _, h := range hosts {
		if !strings.HasPrefix(h, "127.0.0.1:") {
			t.Errorf("the server saw a request for host %q, want 127.0.0.1 only (the resolver rule lets blocked.localhost through?)", h)
		}
	}

	shot := filepath.Join(Artifacts(t), "smoke.png")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("the screenshot: %v", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() == 0 {
		t.Fatalf("the screenshot %s is empty (%v)", shot, err)
	}
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the screenshot %s is not a PNG: %v", shot, err)
	}
	if b := img.Bounds(); b.Dx() == 0 || b.Dy() == 0 {
		t.Errorf("the screenshot is %v, want a page", b)
	}
}

// fakeTB records a Run's failure instead of failing the test; the rest
// is the real test's.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed []string
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) {
	f.mu.Lock()
	f.failed = append(f.failed, fmt.Sprint(args...))
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, fmt.Sprintf(format, args...))
}

// run runs fn with f as its TB, in a goroutine of its own (Fatalf ends
// it), and returns what failed.
func (f *fakeTB) run(fn func(tb testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.failed, "\n")
}

// TestFailure checks what a failing script reports: the step, the
// selector and what it showed, and the failed step's screenshot.
func TestFailure(t *testing.T) {
	srv := newConsoleServer(t)
	f := &fakeTB{TB: t}
	got := f.run(func(tb testing.TB) { Run(tb, "testdata/fail.mjs", map[string]string{"URL": srv.URL}) })
	for _, want := range []string{
		"testdata/fail.mjs failed",
		`step "wrong text" failed`,
		`expectText: #status did not show "never shown" within 500 ms: it shows "idle"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the failure does not say %q:\n%s", want, got)
		}
	}
	if _, err := os.Stat(filepath.Join(Artifacts(t), "failed-wrong_text.png")); err != nil {
		t.Errorf("the failed step's screenshot: %v", err)
	}
}

// TestMissing checks that a missing browser or playwright-core fails,
// naming the set-up command, rather than skipping.
func TestMissing(t *testing.T) {
	for _, tc := range []struct{ name, env, value string }{
		{"chromium", "CHROMIUM", "/nonexistent/chromium"},
		{"playwright-core", "EDGEFLEET_PLAYWRIGHT", t.TempDir()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			f := &fakeTB{TB: t}
			got := f.run(func(tb testing.TB) { Run(tb, "testdata/smoke.mjs", nil) })
			if !strings.Contains(got, tc.name) || !strings.Contains(got, "run `scripts/setup.sh test`") {
				t.Errorf("Run with %s=%s failed with %q, want it to name %s and scripts/setup.sh test", tc.env, tc.value, got, tc.name)
			}
		})
	}
}
