// Package onnx runs ONNX models through ONNX Runtime (via
// github.com/yalue/onnxruntime_go): the once-per-process runtime
// environment, model inspection, and a reusable, concurrency-safe session
// with an ordered execution-provider preference and CPU fallback.
package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrLibrary: the ONNX Runtime shared library could not be found or
	// loaded, or a different one was requested after initialization.
	ErrLibrary = errors.New("onnx runtime library")
	// ErrNotInitialized: Init has not been called (successfully) yet.
	ErrNotInitialized = errors.New("onnx runtime not initialized: call onnx.Init first")
	// ErrModel: the model file cannot be loaded or uses something this
	// package does not support.
	ErrModel = errors.New("onnx model")
	// ErrProvider: an unknown execution provider name.
	ErrProvider = errors.New("unknown execution provider")
	// ErrInput: the tensors given to Run do not fit the model.
	ErrInput = errors.New("invalid model input")
	// ErrRun: ONNX Runtime failed while running the model.
	ErrRun = errors.New("onnx runtime run failed")
	// ErrClosed: the session was closed.
	ErrClosed = errors.New("onnx session closed")
)

// EnvLibraryPath is the environment variable that names the ONNX Runtime
// shared library explicitly; it takes precedence over every other place.
const EnvLibraryPath = "EDGEFLEET_ORT_LIB"

// SystemLibraryDir is where the edge-agent package installs ONNX Runtime.
const SystemLibraryDir = "/usr/lib/edge-agent"

// LibraryName is the file name of the ONNX Runtime shared library on this
// operating system.
func LibraryName() string {
	switch runtime.GOOS {
	case "darwin":
		return "libonnxruntime.dylib"
	case "windows":
		return "onnxruntime.dll"
	}
	return "libonnxruntime.so.1"
}

// DefaultLibraryPath finds the ONNX Runtime shared library when no path
// is configured (a configured one, e.g. the agent's runtime.ortLibrary, is
// given to Init and used as it is). It looks, in order, at
// $EDGEFLEET_ORT_LIB (which, when set, must exist: it is never silently
// ignored), next to the running executable, in /usr/lib/edge-agent (where
// the edge-agent package installs it), on the system library path
// (SystemLibraryDirs), and last in a checkout's dependency cache
// (.cache/deps/onnxruntime/GOOS-GOARCH/ under the directory holding go.mod,
// found by walking up from the working directory; what `make deps` fills).
// The error lists every place it looked.
func DefaultLibraryPath() (string, error) {
	name := LibraryName()
	if p := os.Getenv(EnvLibraryPath); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: $%s=%s: %w", ErrLibrary, EnvLibraryPath, p, err)
		}
		return p, nil
	}
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	dirs = append(dirs, SystemLibraryDir)
	dirs = append(dirs, SystemLibraryDirs()...)
	if root, ok := moduleRoot(); ok {
		dirs = append(dirs, filepath.Join(root, ".cache", "deps", "onnxruntime", runtime.GOOS+"-"+runtime.GOARCH))
	}
	var tried []string
	seen := map[string]bool{}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if seen[p] {
			continue
		}
		seen[p] = true
		tried = append(tried, p)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s not found: set runtime.ortLibrary or $%s, or install it in one of the places looked at: %s (in a checkout, `make deps` fetches it)",
		ErrLibrary, name, EnvLibraryPath, strings.Join(tried, ", "))
}

// SystemLibraryDirs is the system library path the dynamic linker
// searches, in its order: $LD_LIBRARY_PATH, the directories of
// /etc/ld.so.conf and the files it includes (one level of
// /etc/ld.so.conf.d/*.conf, as Debian ships it), then the multiarch and
// plain /usr/lib and /lib. Missing directories are kept: the list says
// where a library would be looked for.
func SystemLibraryDirs() []string {
	var dirs []string
	for d := range strings.SplitSeq(os.Getenv("LD_LIBRARY_PATH"), ":") {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	dirs = append(dirs, ldSoConf("/etc/ld.so.conf", 0)...)
	if triple := multiarch(); triple != "" {
		dirs = append(dirs, "/usr/lib/"+triple, "/lib/"+triple)
	}
	return append(dirs, "/usr/lib", "/lib")
}

// ldSoConf reads the directories of an ld.so.conf file, following its
// include lines (globs) one level deep.
func ldSoConf(path string, depth int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var dirs []string
	for line := range strings.SplitSeq(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "include "):
			if depth > 0 {
				continue
			}
			pattern := strings.TrimSpace(strings.TrimPrefix(line, "include "))
			if !filepath.IsAbs(pattern) {
				pattern = filepath.Join(filepath.Dir(path), pattern)
			}
			matches, _ := filepath.Glob(pattern)
			for _, m := range matches {
				dirs = append(dirs, ldSoConf(m, depth+1)...)
			}
		case filepath.IsAbs(line):
			dirs = append(dirs, line)
		}
	}
	return dirs
}

// multiarch is Debian's multiarch triple for this architecture.
func multiarch() string {
	if runtime.GOOS != "linux" {
		return ""
	}
	return map[string]string{
		"amd64": "x86_64-linux-gnu",
		"arm64": "aarch64-linux-gnu",
		"arm":   "arm-linux-gnueabihf",
		"386":   "i386-linux-gnu",
	}[runtime.GOARCH]
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// env is the process-wide ONNX Runtime environment. ONNX Runtime allows
// one environment per process and onnxruntime_go keeps it in a package
// global, so this is the one piece of package-level state here.
var env struct {
	mu   sync.Mutex
	path string // the library the environment was created with; "" if none
}

// Init loads the ONNX Runtime shared library at libPath ("" means
// DefaultLibraryPath) and creates the process-wide environment. It is
// idempotent and safe for concurrent callers: later calls with the same
// library (or "") return nil; a call naming a different library fails
// with ErrLibrary, since a process can hold only one. A failed Init may be
// retried.
func Init(libPath string) error {
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.path != "" && libPath == "" {
		return nil
	}
	if libPath == "" {
		p, err := DefaultLibraryPath()
		if err != nil {
			return err
		}
		libPath = p
	}
	abs, err := canonical(libPath)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrLibrary, libPath, err)
	}
	if env.path != "" {
		if env.path == abs {
			return nil
		}
		return fmt.Errorf("%w: already initialized with %s; cannot switch to %s in the same process", ErrLibrary, env.path, abs)
	}
	if ort.IsInitialized() {
		return fmt.Errorf("%w: onnxruntime_go was initialized outside package onnx", ErrLibrary)
	}
	ort.SetSharedLibraryPath(abs)
	if err := ort.InitializeEnvironment(); err != nil {
		return fmt.Errorf("%w: loading %s: %w", ErrLibrary, abs, err)
	}
	env.path = abs
	return nil
}

func canonical(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		return "", fmt.Errorf("is a directory")
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	return abs, nil
}

// LibraryPath returns the library the environment was initialized with,
// or "" before Init.
func LibraryPath() string {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.path
}

// Version returns the ONNX Runtime version, e.g. "1.24.1", or "" before
// Init.
func Version() string {
	if LibraryPath() == "" {
		return ""
	}
	return ort.GetVersion()
}

func initialized() error {
	if LibraryPath() == "" {
		return ErrNotInitialized
	}
	return nil
}
