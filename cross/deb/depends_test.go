package deb

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

func TestDepends(t *testing.T) {
	cache := testenv.CacheDir(t)
	ort := func(arch string) string {
		p := filepath.Join(cache, "onnxruntime", "linux-"+arch, "libonnxruntime.so.1")
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("ONNX Runtime for %s not found: run `make deps` first (%v)", arch, err)
		}
		return p
	}
	static := buildStatic(t, "amd64")
	for _, tc := range []struct {
		name  string
		paths []string
		want  []string
	}{
		// The pinned ONNX Runtime 1.24.1 libraries need GLIBC_2.27 and
		// GLIBCXX_3.4.22 (GCC 6) on both architectures.
		{"ort amd64", []string{ort("amd64")}, []string{"libc6 (>= 2.27)", "libstdc++6 (>= 6)", "libgcc-s1"}},
		{"ort arm64", []string{ort("arm64")}, []string{"libc6 (>= 2.27)", "libstdc++6 (>= 6)", "libgcc-s1"}},
		{"static", []string{static}, []string{"libc6"}},
		{"static and ort", []string{static, ort("amd64")}, []string{"libc6 (>= 2.27)", "libstdc++6 (>= 6)", "libgcc-s1"}},
	} {
		got, err := Depends(tc.paths...)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: Depends = %q, want %q", tc.name, got, tc.want)
		}
	}

	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Depends(notELF); err == nil {
		t.Errorf("Depends(%s): no error for a shell script", notELF)
	}
}

// buildStatic builds a Go program without cgo for goarch: a small,
// statically linked ELF.
func buildStatic(t *testing.T, goarch string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "static")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off", "GOOS=linux", "GOARCH="+goarch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build (static): %v\n%s", err, out)
	}
	return bin
}

func TestParseGlibc(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want [2]int
		ok   bool
	}{
		{"2.34", [2]int{2, 34}, true},
		{"2.3.4", [2]int{2, 3}, true},
		{"2", [2]int{}, false},
		{"2.x", [2]int{}, false},
		{"2.-1", [2]int{}, false},
		{"2.3.4.5", [2]int{}, false},
	} {
		got, ok := parseGlibc(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseGlibc(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestDependsUnknownLibrary: a needed library with no known package fails
// the build instead of producing a package that cannot start.
func TestDependsUnknownLibrary(t *testing.T) {
	// libsystemd.so.0 is not mapped; find any ELF on this machine that
	// needs a library outside the mapping.
	for _, p := range []string{"/usr/bin/systemctl", "/usr/bin/apt", "/usr/bin/dpkg"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		_, err := Depends(p)
		if !errors.Is(err, ErrLibrary) {
			t.Errorf("Depends(%s): error %v, want ErrLibrary", p, err)
		}
		return
	}
	t.Fatal("none of systemctl, apt, dpkg found: install apt and dpkg")
}
