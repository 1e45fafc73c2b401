package testenv

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestEventually: it returns once cond holds, asking until then.
func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, "three calls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
	m := 0
	EventuallyState(t, "two calls", func() (bool, string) { m++; return m == 2, "not yet" })
	if m != 2 {
		t.Fatalf("cond called %d times, want 2", m)
	}
}

// TestEventuallyFails: a cond that fails the test itself ends the wait
// there (it runs on the test's goroutine).
func TestEventuallyFails(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(rec, "never", func() bool { rec.Fatalf("cond gave up"); return false })
	}()
	<-done
	if rec.msg != "cond gave up" {
		t.Fatalf("Fatalf got %q", rec.msg)
	}
}

// TestSyncBuffer: concurrent writes all land; Max drops what comes after
// the limit.
func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("%d bytes, want 800", got)
	}
	capped := SyncBuffer{Max: 4}
	for _, s := range []string{"abc", "de", "fg"} {
		if n, err := capped.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := capped.String(); got != "abcde" {
		t.Fatalf("capped holds %q, want %q", got, "abcde")
	}
}

// TestLogger: records reach the test's log, debug ones included.
func TestLogger(t *testing.T) {
	rec := &logRecorder{TB: t}
	Logger(rec).Debug("hello", "k", 1)
	if len(rec.lines) != 1 || !strings.Contains(rec.lines[0], "level=DEBUG msg=hello k=1") || strings.HasSuffix(rec.lines[0], "\n") {
		t.Fatalf("logged %q", rec.lines)
	}
}

// logRecorder is a testing.TB whose Log records the line.
type logRecorder struct {
	testing.TB
	lines []string
}

func (l *logRecorder) Log(args ...any) { l.lines = append(l.lines, fmt.Sprint(args...)) }
