package fleet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// SileroOutput is Silero VAD v5's output for the two-sine frame with a
// zero state (shared/DESIGN.md §10).
const SileroOutput = testbundle.SileroOutput

// Publisher holds a publisher's signing key pair (ECDSA P-256), as
// fleetctl keys generate writes it (shared/testenv/testbundle's, which
// the agent's tests share).
type Publisher = testbundle.Publisher

// NewPublisher generates a key pair into dir (created if needed).
func NewPublisher(dir string) (*Publisher, error) { return testbundle.NewPublisher(dir) }

// TestPublisher is NewPublisher in a test's temporary directory.
func TestPublisher(tb testing.TB) *Publisher {
	tb.Helper()
	return testbundle.TestPublisher(tb)
}

// Bundle is a signed bundle on disk.
type Bundle = testbundle.Bundle

// SileroOptions vary a Silero VAD bundle.
type SileroOptions struct {
	// Publisher signs the bundle. Required.
	Publisher *Publisher
	// Artifacts are the model, the pre-processor and the ONNX Runtime
	// library (for the build-time check). SileroBundle fills in
	// TestArtifacts when Root is empty.
	Artifacts Artifacts
	// Name is the bundle name; default "silero-vad".
	Name string
	// MinAgentVersion is the manifest's minAgentVersion; default none.
	MinAgentVersion string
	// SmokeOutput is the output the smoke vectors expect; 0 means the
	// real one (SileroOutput). Another value makes a bundle whose smoke
	// test fails on the device (it is then built without the build-time
	// check, as a broken pipeline would be).
	SmokeOutput float64
	// NoCheck skips the build-time check (model.Check: the manifest
	// against the ONNX file, the smoke vectors through the pipeline),
	// which takes about a second.
	NoCheck bool
}

// BuildSilero builds and signs the Silero VAD bundle NAME-VERSION.bundle
// in dir: the model, the WASM pre-processor and both two-sine smoke
// vectors of testbed/bundles/silero-vad (tensors straight to the model,
// PCM through the pre-processor), execution providers [cpu]
// (testbundle.BuildSilero, with the build-time check of o).
func BuildSilero(ctx context.Context, dir, version string, o SileroOptions) (Bundle, error) {
	if o.Publisher == nil {
		return Bundle{}, errors.New("fleet: SileroOptions.Publisher is nil: a bundle must be signed")
	}
	if o.Artifacts.SileroModel == "" || o.Artifacts.PreWASM == "" || o.Artifacts.SmokeDir == "" {
		return Bundle{}, errors.New("fleet: SileroOptions.Artifacts: model, pre-processor and smoke directory are required (FindArtifacts)")
	}
	s := testbundle.Silero{
		Name: o.Name, Version: version, MinAgentVersion: o.MinAgentVersion,
		Model: o.Artifacts.SileroModel, Pre: o.Artifacts.PreWASM, SmokeDir: o.Artifacts.SmokeDir,
		SmokeOutput: o.SmokeOutput,
	}
	if o.SmokeOutput == 0 && !o.NoCheck {
		if o.Artifacts.ORTLibrary == "" {
			return Bundle{}, errors.New("fleet: SileroOptions.Artifacts.ORTLibrary is required for the build-time check (or set NoCheck)")
		}
		lib := o.Artifacts.ORTLibrary
		s.Check = func(ctx context.Context, dir string, m *bundle.Manifest) error {
			// A generous per-call limit: the build-time check of a
			// deliberately slow pre-processor must not time out on a
			// loaded test machine (the agents keep their own limit).
			return model.Check(ctx, dir, m, model.Options{ORTLibrary: lib, WASM: processor.Config{Timeout: 30 * time.Second}})
		}
	}
	b, err := o.Publisher.BuildSilero(ctx, dir, s)
	if err != nil {
		return Bundle{}, fmt.Errorf("fleet: %w", err)
	}
	return b, nil
}

// SileroBundle is BuildSilero for tests: it fails the test on an error
// and takes the artifacts from TestArtifacts unless o names them.
func SileroBundle(tb testing.TB, dir, version string, o SileroOptions) Bundle {
	tb.Helper()
	if o.Artifacts.Root == "" {
		o.Artifacts = TestArtifacts(tb)
	}
	b, err := BuildSilero(context.Background(), dir, version, o)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// quote makes a string a YAML double-quoted scalar.
func quote(s string) string { return strconv.Quote(s) }
