package deb

import (
	"errors"
	"os/exec"
	"regexp"
	"testing"
)

func TestDebianVersion(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"0.1.0", "0.1.0", nil},
		{"0.1.0+87ce2c3", "0.1.0+87ce2c3", nil},
		{"0.1.0+87ce2c3-dirty", "0.1.0+87ce2c3.dirty", nil},
		{"0.1.0+v0.1.0-3-g87ce2c3", "0.1.0+v0.1.0.3.g87ce2c3", nil},
		{"0.2.0-rc.1", "0.2.0~rc.1", nil},
		{"1.2.3-alpha-2+build.5", "1.2.3~alpha.2+build.5", nil},
		{"", "", ErrVersion},
		{"v0.1.0", "", ErrVersion},
		{"0.1", "", ErrVersion},
		{"1.2.3.4", "", ErrVersion},
		{"01.2.3", "", ErrVersion},
		{"0.1.0+", "", ErrVersion},
		{"0.1.0+a_b", "", ErrVersion},
		{"dev", "", ErrVersion},
	} {
		got, err := DebianVersion(tc.in)
		if !errors.Is(err, tc.err) {
			t.Errorf("DebianVersion(%q): error %v, want %v", tc.in, err, tc.err)
			continue
		}
		if got != tc.want {
			t.Errorf("DebianVersion(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestDebianVersionOrder asks dpkg itself that the converted versions sort
// as their semantic versions do.
func TestDebianVersionOrder(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Fatalf("dpkg not found (apt-get install dpkg): %v", err)
	}
	// Each is lower than the next.
	order := []string{"0.1.0", "0.2.0-rc.1", "0.2.0-rc.2", "0.2.0", "0.2.0+87ce2c3", "0.2.0+87ce2c3-dirty", "0.10.0"}
	for i := 1; i < len(order); i++ {
		a, err := DebianVersion(order[i-1])
		if err != nil {
			t.Fatal(err)
		}
		b, err := DebianVersion(order[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := exec.Command(dpkg, "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg --compare-versions %s lt %s: %v (from %s < %s)", a, b, err, order[i-1], order[i])
		}
	}
}

// debianVersion is the syntax of a native Debian version (no epoch, no
// revision), from deb-version(7).
var debianVersion = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)

func FuzzDebianVersion(f *testing.F) {
	for _, s := range []string{"0.1.0", "0.1.0+87ce2c3-dirty", "0.2.0-rc.1", "1.2.3-a-b+c-d", "v1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := DebianVersion(s)
		if err != nil {
			if !errors.Is(err, ErrVersion) {
				t.Fatalf("DebianVersion(%q): error %v is not ErrVersion", s, err)
			}
			return
		}
		if !debianVersion.MatchString(v) {
			t.Fatalf("DebianVersion(%q) = %q, not a native Debian version", s, v)
		}
	})
}
