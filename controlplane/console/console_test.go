package console_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/console"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// env is a real fleetd with a viewer token besides the operator's.
type env struct {
	srv              *fleetd.Server
	operator, viewer string
	enrol            string
	logs             *testenv.SyncBuffer
}

func start(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{logs: &testenv.SyncBuffer{Max: 4 << 20}}
	cfg := fleetd.Config{
		DataDir: dir,
		HTTP:    fleetd.HTTPConfig{Listen: "127.0.0.1:0"},
		Broker:  fleetd.BrokerConfig{Listen: "127.0.0.1:0"},
		Auth:    fleetd.AuthConfig{Tokens: []fleetd.TokenConfig{{Name: "vera", Role: "viewer"}}},
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	cfg.Announce = io.Discard
	srv, err := fleetd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	run := testenv.Start(srv.Run)
	t.Cleanup(func() {
		if err := run.Stop(time.Minute); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("fleetd log:\n%s", e.logs.String())
		}
	})
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	e.operator = read(filepath.Join(dir, fleetd.OperatorTokenFile))
	e.viewer = read(filepath.Join(dir, fleetd.TokensDir, "vera.token"))
	e.enrol = read(filepath.Join(dir, fleetd.EnrolTokenFile))
	return e
}

// browser is a cookie-keeping HTTP client that does not follow
// redirects, as a test of what each answer says.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfRe = regexp.MustCompile(`data-csrf="([^"]+)"`)

// signIn signs c in with tok and returns the CSRF token of the fleet
// page.
func signIn(t *testing.T, e *env, c *http.Client, tok string) string {
	t.Helper()
	base := e.srv.URL() + console.Prefix
	resp, _ := post(t, c, base+"/login", url.Values{"token": {tok}, "next": {console.Prefix + "/rollouts"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != console.Prefix+"/rollouts" {
		t.Fatalf("sign-in: %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
	_, body := get(t, c, base+"/")
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("fleet page has no CSRF token:\n%s", body)
	}
	return m[1]
}

// TestSignIn: pages need a session, a wrong token gets none, the
// session cookie is HttpOnly and SameSite=Strict and holds no token,
// the token never reaches a URL or the log, and signing out ends it.
func TestSignIn(t *testing.T) {
	e := start(t)
	base := e.srv.URL() + console.Prefix
	c := browser(t)

	resp, _ := get(t, c, e.srv.URL()+"/")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != console.Prefix+"/" {
		t.Errorf("GET /: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	for _, p := range []string{"/", "/devices", "/bundles", "/rollouts", "/rollouts/r1"} {
		resp, _ := get(t, c, base+p)
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), console.Prefix+"/login?next=") {
			t.Errorf("%s signed out: %s to %q, want the sign-in form", p, resp.Status, resp.Header.Get("Location"))
		}
	}
	resp, body := post(t, c, base+"/login", url.Values{"token": {"wrong-token-0123456789"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "invalid API token") {
		t.Errorf("sign-in with a wrong token: %s\n%s", resp.Status, body)
	}
	resp, _ = post(t, c, base+"/login", url.Values{"token": {e.operator}}, map[string]string{"Origin": "http://evil.example"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin sign-in: %s, want 403", resp.Status)
	}

	csrf := signIn(t, e, c, e.operator)
	u, _ := url.Parse(base + "/")
	var ck *http.Cookie
	for _, x := range c.Jar.Cookies(u) {
		ck = x
	}
	if ck == nil || strings.Contains(ck.Value, e.operator) {
		t.Fatalf("session cookie %+v", ck)
	}
	resp, _ = post(t, browser(t), base+"/login", url.Values{"token": {e.operator}}, nil)
	set := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/console/"} {
		if !strings.Contains(set, want) {
			t.Errorf("Set-Cookie %q lacks %s", set, want)
		}
	}
	for _, p := range []string{"/", "/devices", "/bundles", "/rollouts"} {
		resp, body := get(t, c, base+p)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<span id="whoami">operator <span class="role">admin</span>`) {
			t.Errorf("%s: %s\n%s", p, resp.Status, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", p, csp)
		}
	}
	resp, body = get(t, c, base+"/rollouts/nope")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "not found") {
		t.Errorf("unknown rollout: %s\n%s", resp.Status, body)
	}

	// POSTs need the session's CSRF token and this origin.
	for _, tc := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no token", url.Values{}, nil},
		{"wrong token", url.Values{"csrf": {"x" + csrf}}, nil},
		{"other origin", url.Values{"csrf": {csrf}}, map[string]string{"Origin": "http://evil.example"}},
	} {
		resp, body := post(t, c, base+"/rollouts/r1/abort", tc.form, tc.hdr)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("abort with %s: %s %s", tc.name, resp.Status, body)
		}
	}
	resp, body = post(t, c, base+"/rollouts/r1/abort", url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "not found") {
		t.Errorf("abort of an unknown rollout with the CSRF token: %s\n%s", resp.Status, body)
	}

	resp, _ = post(t, c, base+"/logout", url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign out: %s", resp.Status)
	}
	if resp, _ := get(t, c, base+"/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after signing out: %s, want the sign-in form", resp.Status)
	}
	if strings.Contains(e.logs.String(), e.operator) {
		t.Errorf("the operator token is in fleetd's log")
	}
}

// TestViewerForbidden: a viewer's console shows its role, and an action
// it forges anyway (with a valid session and CSRF token) is refused by
// the API with 403.
func TestViewerForbidden(t *testing.T) {
	e := start(t)
	base := e.srv.URL() + console.Prefix
	c := browser(t)
	csrf := signIn(t, e, c, e.viewer)
	_, body := get(t, c, base+"/rollouts")
	if !strings.Contains(body, `<span id="whoami">vera <span class="role">viewer</span>`) {
		t.Errorf("rollouts page of a viewer:\n%s", body)
	}
	resp, body := post(t, c, base+"/rollouts/r1/abort", url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `token &#34;vera&#34; has role viewer; POST /api/v1/rollouts/r1/abort needs operator`) {
		t.Errorf("viewer's forged abort: %s\n%s", resp.Status, body)
	}
}

// TestLive: the console's event stream and GET /api/v1/watch both say
// "devices" when a device enrols.
func TestLive(t *testing.T) {
	e := start(t)
	c := browser(t)
	signIn(t, e, c, e.operator)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	open := func(u, token string) *bufio.Reader {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("%s: %s %s", u, resp.Status, resp.Header.Get("Content-Type"))
		}
		r := bufio.NewReader(resp.Body)
		if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, ":") {
			t.Fatalf("%s: first line %q, %v", u, line, err)
		}
		return r
	}
	streams := map[string]*bufio.Reader{
		"console": open(e.srv.URL()+console.Prefix+"/events", ""),
		"api":     open(e.srv.URL()+"/api/v1/watch", e.viewer),
	}
	// Both streams are subscribed once their first line arrived.
	op, err := client.New(e.srv.URL(), e.operator, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Enroll(ctx, e.enrol, "dev-1", nil); err != nil {
		t.Fatal(err)
	}
	for name, r := range streams {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s stream: %v", name, err)
			}
			if line == "event: devices\n" {
				break
			}
		}
	}
}
