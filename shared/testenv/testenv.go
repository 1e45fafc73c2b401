// Package testenv finds the real components tests run against: the
// repository root, the pinned ONNX Runtime library and Silero VAD model
// fetched by `make deps` and WASM modules built from source (Go with the
// Go toolchain, C with clang); it also runs the Debian mosquitto broker
// (Mosquitto, StartMosquitto). A missing component fails the test with
// the command that provides it; it is never skipped.
//
// It is also the one home of the small helpers every room's tests need
// (it imports nothing of the module, so shared/, agent/ and
// controlplane/ tests may all use it): Eventually and EventuallyState
// wait for a condition, SyncBuffer collects a process's or a logger's
// output, CutWriter cuts or stalls a download, CA issues TLS
// certificates, HelperProcess starts the child a crash test kills, Golden
// holds output to a golden file (-update rewrites it). Package testbundle
// below it builds and signs test bundles.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Root returns the repository root (the directory holding go.mod).
func Root(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// CacheDir is where `make deps` puts pinned artifacts.
func CacheDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("EDGEFLEET_CACHE"); d != "" {
		return d
	}
	return filepath.Join(Root(tb), ".cache", "deps")
}

func mustExist(tb testing.TB, path, what string) string {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("testenv: %s not found at %s: run `make deps` first (%v)", what, path, err)
	}
	return path
}

// ORTLibrary is the ONNX Runtime shared library for this machine.
func ORTLibrary(tb testing.TB) string {
	tb.Helper()
	return mustExist(tb, filepath.Join(CacheDir(tb), "onnxruntime", "linux-"+runtime.GOARCH, "libonnxruntime.so.1"), "ONNX Runtime library")
}

// SileroModel is the Silero VAD v5 ONNX model.
func SileroModel(tb testing.TB) string {
	tb.Helper()
	return mustExist(tb, filepath.Join(CacheDir(tb), "models", "silero_vad_v5.onnx"), "Silero VAD model")
}

var (
	wasmMu    sync.Mutex
	wasmBuilt = map[string]string{}
)

// BuildWASM builds the processor at pkgDir (relative to the repository
// root) into a WASI reactor module and returns the .wasm path. A directory
// holding C sources (*.c) is compiled with clang for wasm32-wasi
// (WASMCFlags; $WASM_CC names another clang; Debian packages
// WASMPackages); any other is a Go package, built with GOOS=wasip1
// GOARCH=wasm -buildmode=c-shared. Results are cached per process (and
// Go's in the Go build cache).
func BuildWASM(tb testing.TB, pkgDir string) string {
	tb.Helper()
	wasmMu.Lock()
	defer wasmMu.Unlock()
	if p, ok := wasmBuilt[pkgDir]; ok {
		return p
	}
	root := Root(tb)
	// Modules go to a fixed place per package under the repository's
	// ignored build cache, so test runs leave nothing behind in /tmp. Each
	// process builds once into a temporary file and renames it into
	// place: concurrent test binaries never see a partial module.
	outDir := filepath.Join(root, ".cache", "build", "wasm")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	out := filepath.Join(outDir, strings.ReplaceAll(filepath.ToSlash(pkgDir), "/", "_")+".wasm")
	tmp, err := os.CreateTemp(outDir, ".build-*.wasm")
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tmp.Close()
	built := false
	defer func() {
		if !built { // tb.Fatalf ends the goroutine; the deferred call still runs
			os.Remove(tmp.Name())
		}
	}()
	csrc, err := filepath.Glob(filepath.Join(root, pkgDir, "*.c"))
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	if len(csrc) > 0 {
		buildC(tb, root, pkgDir, csrc, tmp.Name())
	} else {
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", tmp.Name(), "./"+filepath.ToSlash(pkgDir))
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("testenv: building %s for wasip1: %v\n%s", pkgDir, err, b)
		}
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	built = true
	wasmBuilt[pkgDir] = out
	return out
}

// WASMCFlags returns the clang flags that build a C processor into a WASI
// reactor (docs/wasm-abi.md, "Writing a processor in C"); the Makefile's
// WASM_CFLAGS are the same.
func WASMCFlags() []string {
	return []string{
		"--target=wasm32-wasi", "-O2", "-msimd128", "-std=c11", "-Wall", "-Wextra", "-Werror",
		"-mexec-model=reactor", "-Wl,--stack-first", "-Wl,-z,stack-size=16384", "-Wl,--strip-debug",
	}
}

// WASMPackages are the Debian packages that provide clang for wasm32-wasi.
const WASMPackages = "clang lld wasi-libc libclang-rt-dev-wasm32"

// buildC compiles the C sources of the processor at pkgDir with clang.
func buildC(tb testing.TB, root, pkgDir string, srcs []string, out string) {
	tb.Helper()
	cc := os.Getenv("WASM_CC")
	if cc == "" {
		cc = "clang"
	}
	if _, err := exec.LookPath(cc); err != nil {
		tb.Fatalf("testenv: building %s needs clang for wasm32-wasi: %v (apt-get install %s)", pkgDir, err, WASMPackages)
	}
	args := append(WASMCFlags(), "-o", out)
	cmd := exec.Command(cc, append(args, srcs...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("testenv: building %s with %s: %v\n%s\n(clang for wasm32-wasi needs the Debian packages %s)", pkgDir, cmd, err, b, WASMPackages)
	}
}

// Command builds the main package pkg (a path from the repository root,
// such as "./controlplane/cmd/fleetctl") into a directory of tb's and
// returns the binary's path, so that a test runs what a user runs.
func Command(tb testing.TB, pkg string) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	if err := Build(tb, pkg, bin); err != nil {
		tb.Fatal(err)
	}
	return bin
}

// Build builds the main package pkg (a path from the repository root) into
// the file bin, for a test package that builds a binary once for all its
// tests.
func Build(tb testing.TB, pkg, bin string) error {
	tb.Helper()
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = Root(tb)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: go build %s: %v\n%s", pkg, err, out)
	}
	return nil
}

// Run runs the program bin with args, its environment this process's plus
// env, until it exits or tb ends, and returns what it wrote and its exit
// code. Failing to start it at all fails tb.
func Run(tb testing.TB, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(tb.Context(), bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		tb.Fatalf("running %s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// HelperProcess starts this test binary again, running only
// TestHelperProcess, with env added to the environment: the child a
// crash test kills. It returns the running command, a pipe of the
// child's stdout (read it before Wait) and its stderr.
func HelperProcess(tb testing.TB, env ...string) (*exec.Cmd, io.Reader, *SyncBuffer) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	stderr := new(SyncBuffer)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	return cmd, stdout, stderr
}
