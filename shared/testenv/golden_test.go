package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// errorRecorder is a testing.TB that records Errorf instead of failing.
type errorRecorder struct {
	testing.TB
	msgs []string
}

func (e *errorRecorder) Helper() {}

func (e *errorRecorder) Errorf(format string, args ...any) {
	e.msgs = append(e.msgs, fmt.Sprintf(format, args...))
}

func TestGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.golden")
	if err := os.WriteFile(path, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		got  string
		want string // "" when it matches
	}{
		{"a\nb\nc\n", ""},
		{"a\nB\nc\n", `line 2:` + "\n\tfile: \"b\"\n\tgot:  \"B\""},
		{"a\nb\n", `line 3:`},
		{"a\nb\nc\nd\n", `line 4:`},
	} {
		rec := &errorRecorder{TB: t}
		Golden(rec, path, []byte(c.got))
		switch {
		case c.want == "" && len(rec.msgs) != 0:
			t.Errorf("Golden(%q) failed on a match: %q", c.got, rec.msgs)
		case c.want != "" && (len(rec.msgs) != 1 || !strings.Contains(rec.msgs[0], c.want) || !strings.Contains(rec.msgs[0], "-run '^TestGolden$' -update")):
			t.Errorf("Golden(%q) = %q, want one error naming %q and the command that rewrites the file", c.got, rec.msgs, c.want)
		}
	}
}
