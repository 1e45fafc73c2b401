package deb

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// testPackage is an arm64 package of real files: the pinned arm64 ONNX
// Runtime library, the repository's unit and default configuration, and a
// small static arm64 Go program standing in for the agent (the agent
// itself is packaged and run by the tests in ./cross).
func testPackage(t *testing.T) Package {
	t.Helper()
	root := testenv.Root(t)
	ort := filepath.Join(testenv.CacheDir(t), "onnxruntime", "linux-arm64", "libonnxruntime.so.1")
	if _, err := os.Stat(ort); err != nil {
		t.Fatalf("arm64 ONNX Runtime not found: run `make deps` first (%v)", err)
	}
	return Package{
		Arch:       "arm64",
		Version:    "0.1.0+87ce2c3-dirty",
		Binary:     buildStatic(t, "arm64"),
		ORTLibrary: ort,
		Unit:       filepath.Join(root, "firmware", "edge-agent.service"),
		Config:     filepath.Join(root, "firmware", "edge-agent.yaml"),
		MTime:      time.Unix(1700000000, 0),
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestBuild(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Fatalf("dpkg-deb not found (apt-get install dpkg): %v", err)
	}
	p := testPackage(t)
	out := t.TempDir()
	path, err := Build(discard(), p, out)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(out, "edge-agent_0.1.0+87ce2c3.dirty_arm64.deb"); path != want {
		t.Errorf("path = %s, want %s", path, want)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 {
		t.Errorf("%s holds %d entries, want only the package (no temporary files)", out, len(entries))
	}

	// Control fields, as dpkg reads them. The stand-in binary is static:
	// the library dependencies are ONNX Runtime's.
	for field, want := range map[string]string{
		"Package":      "edge-agent",
		"Version":      "0.1.0+87ce2c3.dirty",
		"Architecture": "arm64",
		"Depends":      "libc6 (>= 2.27), libstdc++6 (>= 6), libgcc-s1, systemd | adduser",
		"Priority":     "optional",
	} {
		if got := strings.TrimSpace(dpkgDeb(t, "--field", path, field)); got != want {
			t.Errorf("%s: %q, want %q", field, got, want)
		}
	}

	// Contents: path, mode and owner of every file.
	var files []string
	for line := range strings.Lines(dpkgDeb(t, "--contents", path)) {
		f := strings.Fields(line)
		if len(f) < 6 || strings.HasSuffix(f[5], "/") && !strings.HasPrefix(f[5], "./etc/edge-agent/") {
			continue // implicit parent directories
		}
		files = append(files, f[0]+" "+f[1]+" "+f[5])
	}
	want := []string{
		"drwxr-x--- root/root ./etc/edge-agent/",
		"-rw-r--r-- root/root ./etc/edge-agent/config.yaml",
		"drwxr-xr-x root/root ./etc/edge-agent/trust/",
		"-rw-r--r-- root/root ./lib/systemd/system/edge-agent.service",
		"-rwxr-xr-x root/root ./usr/bin/edge-agent",
		"-rw-r--r-- root/root ./usr/lib/edge-agent/libonnxruntime.so.1",
		"-rw-r--r-- root/root ./usr/lib/sysusers.d/edge-agent.conf",
		"-rw-r--r-- root/root ./usr/share/doc/edge-agent/copyright",
	}
	if !slices.Equal(files, want) {
		t.Errorf("contents:\n%s\nwant:\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}

	// The files are the inputs, byte for byte.
	root := t.TempDir()
	dpkgDeb(t, "--extract", path, root)
	for src, dst := range map[string]string{
		p.Binary: BinaryPath, p.ORTLibrary: LibraryPath, p.Unit: UnitPath, p.Config: ConfigPath,
	} {
		a, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(root, dst))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s", dst, src)
		}
	}

	// Control members: the config is a conffile; scripts are valid sh.
	ctrl := t.TempDir()
	dpkgDeb(t, "--control", path, ctrl)
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil || string(conffiles) != ConfigPath+"\n" {
		t.Errorf("conffiles = %q, %v; want %q", conffiles, err, ConfigPath+"\n")
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		fi, err := os.Stat(filepath.Join(ctrl, s))
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755", s, fi.Mode().Perm())
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(ctrl, s)).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", s, err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(ctrl, "preinst")); err == nil {
		t.Errorf("unexpected preinst")
	}
}

func TestBuildReproducible(t *testing.T) {
	t.Parallel()
	p := testPackage(t)
	a, err := Build(discard(), p, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(discard(), p, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Errorf("two builds with the same inputs and MTime differ (%d and %d bytes)", len(ab), len(bb))
	}
}

func TestBuildErrors(t *testing.T) {
	good := testPackage(t)
	text := filepath.Join(t.TempDir(), "edge-agent")
	if err := os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Package)
		err    error
		msg    string
	}{
		{"amd64 package of arm64 files", func(p *Package) { p.Arch = "amd64" }, ErrArch, "built for EM_AARCH64, the package is for EM_X86_64"},
		{"unsupported arch", func(p *Package) { p.Arch = "riscv64" }, ErrArch, `"riscv64" is not supported`},
		{"bad version", func(p *Package) { p.Version = "latest" }, ErrVersion, `"latest"`},
		{"no binary", func(p *Package) { p.Binary = "" }, ErrInput, "no agent binary"},
		{"missing binary", func(p *Package) { p.Binary = "/nonexistent/edge-agent" }, ErrInput, "/nonexistent/edge-agent"},
		{"binary not ELF", func(p *Package) { p.Binary = text }, ErrInput, "agent binary"},
		{"library not ELF", func(p *Package) { p.ORTLibrary = text }, ErrInput, "ONNX Runtime library"},
		{"missing unit", func(p *Package) { p.Unit = "/nonexistent.service" }, ErrInput, "systemd unit"},
		{"config is a directory", func(p *Package) { p.Config = t.TempDir() }, ErrInput, "not a regular file"},
	} {
		p := good
		tc.change(&p)
		out := t.TempDir()
		_, err := Build(discard(), p, out)
		if !errors.Is(err, tc.err) || err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want %v mentioning %q", tc.name, err, tc.err, tc.msg)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("%s: a failed build left %d files in %s", tc.name, len(entries), out)
		}
	}
}

// TestLibraryFoundAsInstalled: the agent's configuration leaves
// runtime.ortLibrary empty, so the package must put ONNX Runtime where the
// agent's search looks.
func TestLibraryFoundAsInstalled(t *testing.T) {
	if filepath.Dir(LibraryPath) != onnx.SystemLibraryDir || filepath.Base(LibraryPath) != onnx.LibraryName() {
		t.Fatalf("the package installs %s; the agent searches %s for %s", LibraryPath, onnx.SystemLibraryDir, onnx.LibraryName())
	}
}
