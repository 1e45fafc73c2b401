package testenv

import (
	"log/slog"
	"os"
	"strings"
	"testing"
)

// Logger is a debug-level text logger that writes each record to tb's
// log, for a component under test that takes a *slog.Logger. Like
// tb.Log, it must not be used after tb has ended.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tbWriter writes each record (one line) to its test's log.
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// RunWithTempDir runs m's tests with *dir set to a fresh temporary
// directory (pattern as os.MkdirTemp's), removed after them, and returns
// m.Run's exit code: for what the tests of one run share, a WASM
// compilation cache, say. From TestMain:
//
//	os.Exit(testenv.RunWithTempDir(m, "pkg-wasm-cache-", &cacheDir))
func RunWithTempDir(m *testing.M, pattern string, dir *string) int {
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		panic(err)
	}
	*dir = d
	defer os.RemoveAll(d)
	return m.Run()
}
