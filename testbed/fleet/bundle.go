package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/processor"
)

// SileroOutput is Silero VAD v5's output for the two-sine frame with a
// zero state (shared/DESIGN.md §10).
const SileroOutput = 0.0690874

// Publisher holds a publisher's signing key pair (ECDSA P-256), as
// fleetctl keys generate writes it.
type Publisher struct {
	// PrivateKey and PublicKey are the PEM files.
	PrivateKey, PublicKey string
}

// NewPublisher generates a key pair into dir (created if needed).
func NewPublisher(dir string) (*Publisher, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fleet: publisher: %w", err)
	}
	if err := bundle.GenerateKey(dir, bundle.ECDSAP256); err != nil {
		return nil, fmt.Errorf("fleet: publisher: %w", err)
	}
	return &Publisher{PrivateKey: filepath.Join(dir, bundle.PrivateKeyFile), PublicKey: filepath.Join(dir, bundle.PublicKeyFile)}, nil
}

// TestPublisher is NewPublisher in a test's temporary directory.
func TestPublisher(tb testing.TB) *Publisher {
	tb.Helper()
	p, err := NewPublisher(filepath.Join(tb.TempDir(), "keys"))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// Sign writes the detached signature path.sig of the bundle at path.
func (p *Publisher) Sign(path string) error {
	s, err := bundle.LoadSigner(p.PrivateKey)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	sig, err := bundle.SignFile(path, s)
	if err != nil {
		return fmt.Errorf("fleet: signing %s: %w", path, err)
	}
	if err := bundle.WriteSignature(path+".sig", sig); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	return nil
}

// Bundle is a signed bundle on disk.
type Bundle struct {
	// Path is the .bundle file, Sig its detached signature.
	Path, Sig string
	Manifest  *bundle.Manifest
}

// ID is the bundle's "name@version".
func (b Bundle) ID() string { return b.Manifest.ID() }

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
// PCM through the pre-processor), execution providers [cpu].
func BuildSilero(ctx context.Context, dir, version string, o SileroOptions) (Bundle, error) {
	if o.Publisher == nil {
		return Bundle{}, errors.New("fleet: SileroOptions.Publisher is nil: a bundle must be signed")
	}
	if o.Artifacts.SileroModel == "" || o.Artifacts.PreWASM == "" || o.Artifacts.SmokeDir == "" {
		return Bundle{}, errors.New("fleet: SileroOptions.Artifacts: model, pre-processor and smoke directory are required (FindArtifacts)")
	}
	name := o.Name
	if name == "" {
		name = "silero-vad"
	}
	want := o.SmokeOutput
	check := want == 0 && !o.NoCheck
	if want == 0 {
		want = SileroOutput
	}
	spec := filepath.Join(dir, name+"-"+version+".spec")
	if err := os.MkdirAll(spec, 0o755); err != nil {
		return Bundle{}, fmt.Errorf("fleet: %w", err)
	}
	var y strings.Builder
	fmt.Fprintf(&y, "name: %s\nversion: %s\n", name, version)
	if o.MinAgentVersion != "" {
		fmt.Fprintf(&y, "minAgentVersion: %s\n", o.MinAgentVersion)
	}
	w := strconv.FormatFloat(want, 'g', -1, 64)
	fmt.Fprintf(&y, `model: %s
pre: %s
inputs:
  - {name: input, datatype: FP32, shape: [-1, 512]}
  - {name: state, datatype: FP32, shape: [2, -1, 128]}
  - {name: sr, datatype: INT64, shape: [1]}
outputs:
  - {name: output, datatype: FP32, shape: [-1, 1]}
  - {name: stateN, datatype: FP32, shape: [2, -1, 128]}
executionProviders: [cpu]
smoke:
  - name: two-sine-tensors
    inputsFile: %s
    expected: [{name: output, datatype: FP32, shape: [1, 1], data: [[%s]]}]
    tolerance: {abs: 1e-4}
  - name: two-sine-pcm
    rawFile: %s
    expected: [{name: output, datatype: FP32, shape: [1, 1], data: [[%s]]}]
    tolerance: {abs: 1e-4}
`, quote(o.Artifacts.SileroModel), quote(o.Artifacts.PreWASM), quote(filepath.Join(o.Artifacts.SmokeDir, "two-sine.inputs.json")), w,
		quote(filepath.Join(o.Artifacts.SmokeDir, "two-sine.pcm")), w)
	if err := os.WriteFile(filepath.Join(spec, bundle.SpecName), []byte(y.String()), 0o644); err != nil {
		return Bundle{}, fmt.Errorf("fleet: %w", err)
	}
	var opts bundle.BuildOptions
	if check {
		if o.Artifacts.ORTLibrary == "" {
			return Bundle{}, errors.New("fleet: SileroOptions.Artifacts.ORTLibrary is required for the build-time check (or set NoCheck)")
		}
		lib := o.Artifacts.ORTLibrary
		opts.Check = func(ctx context.Context, dir string, m *bundle.Manifest) error {
			// A generous per-call limit: the build-time check of a
			// deliberately slow pre-processor must not time out on a
			// loaded test machine (the agents keep their own limit).
			return model.Check(ctx, dir, m, model.Options{ORTLibrary: lib, WASM: processor.Config{Timeout: 30 * time.Second}})
		}
	}
	out := filepath.Join(dir, name+"-"+version+".bundle")
	m, err := bundle.Build(ctx, spec, out, opts)
	if err != nil {
		return Bundle{}, fmt.Errorf("fleet: building %s@%s: %w", name, version, err)
	}
	if err := o.Publisher.Sign(out); err != nil {
		return Bundle{}, err
	}
	return Bundle{Path: out, Sig: out + ".sig", Manifest: m}, nil
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

// quote makes a path a YAML double-quoted scalar.
func quote(s string) string { return strconv.Quote(s) }
