package fleet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// Artifacts are the files of the checkout a Silero fleet runs on.
type Artifacts struct {
	// Root is the repository root.
	Root string
	// ORTLibrary is the ONNX Runtime library (make deps).
	ORTLibrary string
	// SileroModel is the Silero VAD v5 ONNX model (make deps).
	SileroModel string
	// PreWASM is the Silero pre-processor module (make wasm, or built
	// from source by TestArtifacts).
	PreWASM string
	// SmokeDir holds the two-sine frame: two-sine.inputs.json (tensors)
	// and two-sine.pcm (16-bit PCM for the pre-processor).
	SmokeDir string
	// Tools holds the pinned tools of scripts/tools.sh (minio).
	Tools string
}

// ErrArtifact is wrapped by FindArtifacts' errors: a file the fleet needs
// is missing, with the make target that provides it named.
var ErrArtifact = errors.New("fleet: missing artifact")

// SileroPrePackage is the source directory of the Silero pre-processor,
// relative to the repository root.
const SileroPrePackage = testbundle.SileroPrePackage

// FindArtifacts locates the artifacts from the working directory (which
// must be inside the checkout) without a testing.TB, for commands: the
// repository root above it, $EDGEFLEET_CACHE or .cache/deps (make deps),
// testbed/bundles/silero-vad/pre.wasm (make wasm), and $EDGEFLEET_TOOLS or
// .cache/tools/bin (make tools; only MinIO needs it).
func FindArtifacts() (Artifacts, error) {
	dir, err := os.Getwd()
	if err != nil {
		return Artifacts{}, fmt.Errorf("fleet: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return Artifacts{}, fmt.Errorf("%w: no go.mod above the working directory: run from inside the checkout", ErrArtifact)
		}
		dir = parent
	}
	cache := os.Getenv("EDGEFLEET_CACHE")
	if cache == "" {
		cache = filepath.Join(dir, ".cache", "deps")
	}
	a := Artifacts{
		Root:        dir,
		ORTLibrary:  filepath.Join(cache, "onnxruntime", "linux-"+runtime.GOARCH, "libonnxruntime.so.1"),
		SileroModel: filepath.Join(cache, "models", "silero_vad_v5.onnx"),
		PreWASM:     filepath.Join(dir, "testbed", "bundles", "silero-vad", "pre.wasm"),
		SmokeDir:    filepath.Join(dir, "testbed", "bundles", "silero-vad", "smoke"),
		Tools:       toolsDir(dir),
	}
	for _, f := range []struct{ path, what, make string }{
		{a.ORTLibrary, "ONNX Runtime library", "make deps"},
		{a.SileroModel, "Silero VAD model", "make deps"},
		{a.PreWASM, "Silero pre-processor", "make wasm"},
		{filepath.Join(a.SmokeDir, "two-sine.pcm"), "smoke frame", "git checkout"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			return Artifacts{}, fmt.Errorf("%w: %s not found at %s: run `%s` first", ErrArtifact, f.what, f.path, f.make)
		}
	}
	return a, nil
}

// TestArtifacts is FindArtifacts for tests, through shared/testenv: a
// missing artifact fails the test naming `make deps`, and the
// pre-processor is built from source.
func TestArtifacts(tb testing.TB) Artifacts {
	tb.Helper()
	root := testenv.Root(tb)
	return Artifacts{
		Root:        root,
		ORTLibrary:  testenv.ORTLibrary(tb),
		SileroModel: testenv.SileroModel(tb),
		PreWASM:     testenv.BuildWASM(tb, SileroPrePackage),
		SmokeDir:    filepath.Join(root, "testbed", "bundles", "silero-vad", "smoke"),
		Tools:       toolsDir(root),
	}
}

func toolsDir(root string) string {
	if d := os.Getenv("EDGEFLEET_TOOLS"); d != "" {
		return d
	}
	return filepath.Join(root, ".cache", "tools", "bin")
}
