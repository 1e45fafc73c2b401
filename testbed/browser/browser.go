// Package browser runs browser tests: a node script that drives Debian's
// chromium through playwright-core (launch.mjs in this directory, which
// the script imports by its relative path), against servers the Go test
// started on loopback. The browser can reach loopback only (launch.mjs's
// host resolver rule) and Playwright never downloads a browser:
// scripts/setup.sh test installs the Debian chromium package and
// playwright-core (scripts/npm-apps.sh playwright, into .cache/playwright).
// A missing one fails the test, naming that command; it is never skipped.
//
//	browser.Run(t, "testdata/console.mjs", map[string]string{"URL": srv.URL})
//	shot := filepath.Join(browser.Artifacts(t), "console.png")
//
// Like every package under testbed/, only testbed/ may import it
// (testbed/imports, rule testbed-on-top).
package browser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// Timeout bounds one Run; a test's own deadline (go test -timeout), less
// a margin to report in, bounds it further.
const Timeout = 3 * time.Minute

// DefaultChromium is the browser Run starts when $CHROMIUM is unset: the
// Debian chromium package's launcher.
const DefaultChromium = "/usr/bin/chromium"

// PlaywrightDir is where scripts/npm-apps.sh playwright installs
// playwright-core: $EDGEFLEET_PLAYWRIGHT, or else the repository's
// .cache/playwright.
func PlaywrightDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("EDGEFLEET_PLAYWRIGHT"); d != "" {
		return d
	}
	return filepath.Join(testenv.Root(tb), ".cache", "playwright")
}

// Chromium is the browser executable: $CHROMIUM, or else DefaultChromium.
// A missing one fails tb.
func Chromium(tb testing.TB) string {
	tb.Helper()
	bin := os.Getenv("CHROMIUM")
	if bin == "" {
		bin = DefaultChromium
	}
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("browser: chromium not found at %s: run `scripts/setup.sh test` (as root: sudo make setup), which installs the Debian chromium package (%v)", bin, err)
	}
	return bin
}

// nodeModules is playwright-core's node_modules, checked to be installed
// from this checkout's lockfile; anything else fails tb.
func nodeModules(tb testing.TB) string {
	tb.Helper()
	dir := PlaywrightDir(tb)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		tb.Fatalf("browser: playwright-core is not installed in %s: run `scripts/setup.sh test` (scripts/npm-apps.sh playwright) (%v)", dir, err)
	}
	want, err := os.ReadFile(filepath.Join(testenv.Root(tb), "testbed", "browser", "package-lock.json"))
	if err != nil {
		tb.Fatalf("browser: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "package-lock.json")); err != nil || !bytes.Equal(got, want) {
		tb.Fatalf("browser: playwright-core in %s is not the one testbed/browser/package-lock.json pins: run `scripts/setup.sh test` (scripts/npm-apps.sh playwright)", dir)
	}
	return filepath.Join(dir, "node_modules")
}

var (
	artifactsMu sync.Mutex
	artifacts   = map[string]string{} // by test name
)

// Artifacts is tb's folder for what its browser scripts save (shot(NAME)
// writes NAME.png there, a failed step failed-STEP.png):
// .cache/artifacts/TEST under the repository root, TEST being tb.Name()
// with every run of characters other than letters, digits, '.', '_' and
// '-' made one '_'. The first call in a test empties it; it outlives the
// test, for a person or CI to look at.
func Artifacts(tb testing.TB) string {
	tb.Helper()
	artifactsMu.Lock()
	defer artifactsMu.Unlock()
	name := tb.Name()
	if dir, ok := artifacts[name]; ok {
		return dir
	}
	dir := filepath.Join(testenv.Root(tb), ".cache", "artifacts", sanitize(name))
	if err := os.RemoveAll(dir); err != nil {
		tb.Fatalf("browser: clearing %s: %v", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("browser: %v", err)
	}
	artifacts[name] = dir
	tb.Cleanup(func() {
		artifactsMu.Lock()
		delete(artifacts, name)
		artifactsMu.Unlock()
	})
	return dir
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func sanitize(name string) string {
	s := unsafeChars.ReplaceAllString(name, "_")
	if strings.Trim(s, ".") == "" || strings.HasPrefix(s, ".") {
		s = "_" + s
	}
	return s
}

// Run runs `node script` (a path relative to the test's working
// directory, its package's directory, or absolute) until it exits, and
// fails tb unless it exits 0. The script's environment is this process's,
// less proxy settings, with
//
//	NODE_PATH        playwright-core's node_modules (launch.mjs loads it)
//	CHROMIUM         the browser executable (Chromium)
//	BROWSER_PROFILE  a fresh directory of tb's, for the browser's profile
//	ARTIFACTS        Artifacts(tb)
//	HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME, TMPDIR  directories of tb's, so
//	                 that the browser writes nothing outside them
//
// and then env, whose entries win. Each line the script prints goes to
// tb.Log; its stderr's tail is in the failure. A script still running at
// Timeout, or near tb's deadline, is stopped (SIGTERM, which closes the
// browser, then SIGKILL) and fails tb. So does a browser process that
// outlives the script.
func Run(tb testing.TB, script string, env map[string]string) {
	tb.Helper()
	chromium := Chromium(tb)
	modules := nodeModules(tb)
	node, err := exec.LookPath("node")
	if err != nil {
		tb.Fatalf("browser: node is required to run %s (scripts/setup.sh needs Node.js): %v", script, err)
	}
	abs, err := filepath.Abs(script)
	if err != nil {
		tb.Fatalf("browser: %v", err)
	}
	if _, err := os.Stat(abs); err != nil {
		tb.Fatalf("browser: script: %v", err)
	}

	tmp := tb.TempDir()
	profile := filepath.Join(tmp, "profile")
	home := filepath.Join(tmp, "home")
	tmpdir := filepath.Join(tmp, "tmp")
	for _, d := range []string{profile, home, tmpdir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			tb.Fatalf("browser: %v", err)
		}
	}
	vars := map[string]string{
		"NODE_PATH":       modules,
		"CHROMIUM":        chromium,
		"BROWSER_PROFILE": profile,
		"ARTIFACTS":       Artifacts(tb),
		"HOME":            home,
		"XDG_CONFIG_HOME": filepath.Join(home, ".config"),
		"XDG_CACHE_HOME":  filepath.Join(home, ".cache"),
		"TMPDIR":          tmpdir,
	}
	for k, v := range env {
		vars[k] = v
	}
	cmdEnv := make([]string, 0, len(vars)+32)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, set := vars[k]; set || isProxyVar(k) {
			continue
		}
		cmdEnv = append(cmdEnv, kv)
	}
	for k, v := range vars {
		cmdEnv = append(cmdEnv, k+"="+v)
	}

	limit := Timeout
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			left := time.Until(dl)
			left -= min(left/10, 10*time.Second) // time to report in
			limit = max(min(limit, left), time.Second)
		}
	}
	ctx, cancel := context.WithTimeout(tb.Context(), limit)
	defer cancel()

	stdout := &lineLogger{tb: tb, prefix: filepath.Base(script) + ": "}
	var stderr tail
	cmd := exec.CommandContext(ctx, node, abs)
	cmd.Env = cmdEnv
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	// SIGTERM first: Playwright closes the browser on it; SIGKILL 10 s
	// later if node has not gone.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err = cmd.Run()
	stdout.flush()
	reapBrowsers(tb, vars["BROWSER_PROFILE"])

	elapsed := time.Since(start).Round(time.Millisecond)
	switch {
	case err != nil && ctx.Err() != nil && tb.Context().Err() == nil:
		tb.Fatalf("browser: %s did not finish within %v (stopped):\n%s", script, limit.Round(time.Second), stderr.String())
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			tb.Fatalf("browser: %s failed after %v (%v); its stderr ends:\n%s", script, elapsed, ee, stderr.String())
		}
		tb.Fatalf("browser: running %s: %v\n%s", script, err, stderr.String())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		tb.Logf("browser: %s stderr:\n%s", script, s)
	}
}

func isProxyVar(k string) bool {
	switch strings.ToLower(k) {
	case "http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy":
		return true
	}
	return false
}

// reapBrowsers kills, and fails tb for, any process still running with a
// profile under profile on its command line: a browser the script left
// behind. Browsers that are just closing get a few seconds to go.
func reapBrowsers(tb testing.TB, profile string) {
	tb.Helper()
	needle := []byte("--user-data-dir=" + profile + string(filepath.Separator))
	find := func() []int {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return nil // not Linux: nothing to look at
		}
		var pids []int
		for _, e := range ents {
			var pid int
			if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && bytes.Contains(b, needle) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	var pids []int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if pids = find(); len(pids) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, pid := range pids {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	if len(pids) > 0 {
		tb.Errorf("browser: %d browser processes outlived the script (killed: %v); close the context (await context.close()) before the script ends", len(pids), pids)
	}
}

// lineLogger passes each line written to it to tb.Log, after prefix.
type lineLogger struct {
	tb     testing.TB
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.tb.Log(l.prefix + strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.tb.Log(l.prefix + string(l.buf))
		l.buf = nil
	}
}

// tail keeps the last tailSize bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
	cut bool
}

const tailSize = 8 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if n := len(t.buf); n > tailSize {
		t.buf = append(t.buf[:0:0], t.buf[n-tailSize:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return "[...]" + string(t.buf)
	}
	return string(t.buf)
}
