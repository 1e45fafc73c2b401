// Package cptest holds the test helpers the control plane's packages
// share.
package cptest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// JSON is v encoded as JSON; an error fails the test.
func JSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// ReadFile is the content of the file at path; an error fails the test.
func ReadFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// MinIOBinary is the pinned MinIO server scripts/tools.sh installs, in
// $EDGEFLEET_TOOLS or else the repository's .cache/tools/bin; a missing
// one fails the test.
func MinIOBinary(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("EDGEFLEET_TOOLS")
	if dir == "" {
		dir = filepath.Join(testenv.Root(tb), ".cache", "tools", "bin")
	}
	bin := filepath.Join(dir, "minio")
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("minio not found at %s: run scripts/tools.sh (%v)", bin, err)
	}
	return bin
}

// Clock is a clock a test sets and moves forward by hand. It is safe for
// concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock is a Clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the time the clock shows.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock d forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Set makes the clock show t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
