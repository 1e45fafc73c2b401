package registry

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckObjectsFolder: a folder for other objects may not be, or hold,
// the registry's own folders, nor leave the registry.
func TestCheckObjectsFolder(t *testing.T) {
	tests := []struct {
		sub, want string // want: "" accepted, else part of the error
	}{
		{"samples", ""},
		{"lake/edge", ""},
		{"tmpfiles", ""},
		{"", "relative folder"},
		{".", "relative folder"},
		{"..", "relative folder"},
		{"../x", "relative folder"},
		{"/abs", "relative folder"},
		{"a//b", "relative folder"},
		{"a/", "relative folder"},
		{`a\b`, "relative folder"},
		{"tmp", "tmp/ is the registry's own"},
		{"tmp/samples", "tmp/ is the registry's own"},
		{"bundles", "bundles/ is the registry's own"},
		{"bundles/vad", "bundles/ is the registry's own"},
	}
	for _, tc := range tests {
		err := CheckObjectsFolder(tc.sub)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.sub, err)
		case tc.want != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want ErrInvalid with %q", tc.sub, err, tc.want)
		}
	}
	f := &FS{cfg: FSConfig{Dir: t.TempDir()}}
	if _, err := f.Objects("tmp"); !errors.Is(err, ErrInvalid) {
		t.Errorf("FS.Objects(tmp): %v", err)
	}
}
