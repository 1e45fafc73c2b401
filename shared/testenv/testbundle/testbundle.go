// Package testbundle builds and signs the bundles that tests and the
// testbed run: a publisher's key pair (Publisher), the Silero VAD bundle
// of testbed/bundles/silero-vad from the real components shared/testenv
// finds (BuildSilero, SileroFiles), and its unpacked layout for a test
// that loads the model without a bundle file (SileroDir,
// SileroManifest). It is the one implementation behind the agent's
// tests, shared/model's and testbed/fleet's (which the agent's tests may
// not import: docs/architecture.md, "Rooms and imports").
//
// It imports only shared/bundle, shared/tensor and shared/testenv, so
// that the internal tests of every shared package above them
// (shared/model's among them) may use it; a build-time model check
// (model.Check) is therefore the caller's, passed in Silero.Check.
package testbundle

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// SileroOutput is Silero VAD v5's output for the two-sine frame with a
// zero state (shared/DESIGN.md §10).
const SileroOutput = 0.0690874

// SileroPrePackage is the Silero pre-processor's source directory (C,
// built for wasm32-wasi), relative to the repository root.
const SileroPrePackage = "testbed/bundles/silero-vad/pre"

// Publisher holds a publisher's signing key pair (ECDSA P-256), as
// fleetctl keys generate writes it.
type Publisher struct {
	// PrivateKey and PublicKey are the PEM files.
	PrivateKey, PublicKey string
}

// NewPublisher generates a key pair into dir (created if needed).
func NewPublisher(dir string) (*Publisher, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("testbundle: publisher: %w", err)
	}
	if err := bundle.GenerateKey(dir, bundle.ECDSAP256); err != nil {
		return nil, fmt.Errorf("testbundle: publisher: %w", err)
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
		return fmt.Errorf("testbundle: %w", err)
	}
	sig, err := bundle.SignFile(path, s)
	if err != nil {
		return fmt.Errorf("testbundle: signing %s: %w", path, err)
	}
	if err := bundle.WriteSignature(path+".sig", sig); err != nil {
		return fmt.Errorf("testbundle: %w", err)
	}
	return nil
}

// MustSign is Sign for tests: it fails tb on an error.
func (p *Publisher) MustSign(tb testing.TB, path string) {
	tb.Helper()
	if err := p.Sign(path); err != nil {
		tb.Fatal(err)
	}
}

// Bundle is a signed bundle on disk.
type Bundle struct {
	// Path is the .bundle file, Sig its detached signature.
	Path, Sig string
	Manifest  *bundle.Manifest
}

// ID is the bundle's "name@version".
func (b Bundle) ID() string { return b.Manifest.ID() }

// Build builds the bundle of the spec directory spec into out with opts
// and signs it with p.
func (p *Publisher) Build(ctx context.Context, spec, out string, opts bundle.BuildOptions) (Bundle, error) {
	m, err := bundle.Build(ctx, spec, out, opts)
	if err != nil {
		return Bundle{}, fmt.Errorf("testbundle: building %s: %w", spec, err)
	}
	if err := p.Sign(out); err != nil {
		return Bundle{}, err
	}
	return Bundle{Path: out, Sig: out + ".sig", Manifest: m}, nil
}

// BuildFake builds and signs dir/NAME-VERSION.bundle around model, bytes
// no runtime ever runs (one input x FP32 [-1, 2], one output y FP32
// [-1, 1], no build-time check), with the reference drift profile file
// profile unless it is "": for a test of what stores, carries and
// verifies bundles, not of what runs them. The spec goes to
// dir/NAME-VERSION.spec; the same inputs build byte-identical bundles.
func (p *Publisher) BuildFake(ctx context.Context, dir, name, version string, model []byte, profile string) (Bundle, error) {
	spec := filepath.Join(dir, name+"-"+version+".spec")
	if err := os.MkdirAll(spec, 0o755); err != nil {
		return Bundle{}, fmt.Errorf("testbundle: %w", err)
	}
	var y strings.Builder
	fmt.Fprintf(&y, "name: %s\nversion: %s\nmodel: model.onnx\n", name, version)
	if profile != "" {
		fmt.Fprintf(&y, "profile: %s\n", quote(profile))
	}
	y.WriteString("inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]\n" +
		"outputs: [{name: \"y\", datatype: FP32, shape: [-1, 1]}]\n")
	if err := os.WriteFile(filepath.Join(spec, bundle.SpecName), []byte(y.String()), 0o644); err != nil {
		return Bundle{}, fmt.Errorf("testbundle: %w", err)
	}
	if err := os.WriteFile(filepath.Join(spec, "model.onnx"), model, 0o644); err != nil {
		return Bundle{}, fmt.Errorf("testbundle: %w", err)
	}
	return p.Build(ctx, spec, filepath.Join(dir, name+"-"+version+".bundle"), bundle.BuildOptions{})
}

// MustBuildFake is BuildFake for tests, in a temporary directory of tb:
// it fails tb on an error.
func (p *Publisher) MustBuildFake(tb testing.TB, name, version string, model []byte, profile string) Bundle {
	tb.Helper()
	b, err := p.BuildFake(context.Background(), tb.TempDir(), name, version, model, profile)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Smoke says which of the two-sine smoke vectors a Silero bundle ships.
type Smoke int

const (
	// SmokeBoth: the frame as tensors straight to the model
	// (two-sine-tensors) and as PCM through the pre-processor
	// (two-sine-pcm).
	SmokeBoth Smoke = iota
	// SmokePCM: only two-sine-pcm.
	SmokePCM
	// SmokeNone: no smoke vectors.
	SmokeNone
)

// Silero describes a Silero VAD bundle for BuildSilero.
type Silero struct {
	// Name is the bundle name; default "silero-vad". Version is
	// required.
	Name, Version string
	// MinAgentVersion is the manifest's minAgentVersion; default none.
	MinAgentVersion string
	// Model is the Silero VAD v5 ONNX file and Pre the pre-processor
	// module (.wasm). Required.
	Model, Pre string
	// Profile is a reference drift profile (profile.json); default none.
	Profile string
	// SmokeDir holds the two-sine frame (two-sine.inputs.json,
	// two-sine.pcm); required unless Smoke is SmokeNone.
	SmokeDir string
	// Smoke is which smoke vectors the bundle ships.
	Smoke Smoke
	// SmokeOutput is the output the smoke vectors expect; 0 means the
	// real one (SileroOutput). Another value makes a bundle whose smoke
	// test fails on the device (build it without Check, as a broken
	// pipeline would).
	SmokeOutput float64
	// Check is the build-time check (model.Check, say); nil: none.
	Check func(ctx context.Context, dir string, m *bundle.Manifest) error
	// Sampling, if set, is the spec's sampling policy as a YAML flow
	// mapping, e.g. "{rate: 1, maxBytesPerDay: 1MiB}".
	Sampling string
}

// SileroFiles is a Silero for tests with the real components: the model
// (make deps), the pre-processor built from SileroPrePackage and the
// smoke directory of testbed/bundles/silero-vad.
func SileroFiles(tb testing.TB) Silero {
	tb.Helper()
	return Silero{
		Model:    testenv.SileroModel(tb),
		Pre:      testenv.BuildWASM(tb, SileroPrePackage),
		SmokeDir: filepath.Join(testenv.Root(tb), "testbed", "bundles", "silero-vad", "smoke"),
	}
}

// BuildSilero writes the spec of s to dir/NAME-VERSION.spec, builds it
// into dir/NAME-VERSION.bundle (inputs input, state and sr; outputs
// output and stateN; execution providers [cpu]) and signs it with p.
func (p *Publisher) BuildSilero(ctx context.Context, dir string, s Silero) (Bundle, error) {
	if s.Name == "" {
		s.Name = "silero-vad"
	}
	if s.Version == "" || s.Model == "" || s.Pre == "" {
		return Bundle{}, errors.New("testbundle: Silero: version, model and pre-processor are required")
	}
	if s.Smoke != SmokeNone && s.SmokeDir == "" {
		return Bundle{}, errors.New("testbundle: Silero: smoke vectors need SmokeDir")
	}
	want := s.SmokeOutput
	if want == 0 {
		want = SileroOutput
	}
	spec := filepath.Join(dir, s.Name+"-"+s.Version+".spec")
	if err := os.MkdirAll(spec, 0o755); err != nil {
		return Bundle{}, fmt.Errorf("testbundle: %w", err)
	}
	var y strings.Builder
	fmt.Fprintf(&y, "name: %s\nversion: %s\n", s.Name, s.Version)
	if s.MinAgentVersion != "" {
		fmt.Fprintf(&y, "minAgentVersion: %s\n", s.MinAgentVersion)
	}
	fmt.Fprintf(&y, "model: %s\npre: %s\n", quote(s.Model), quote(s.Pre))
	if s.Profile != "" {
		fmt.Fprintf(&y, "profile: %s\n", quote(s.Profile))
	}
	if s.Sampling != "" {
		fmt.Fprintf(&y, "sampling: %s\n", s.Sampling)
	}
	y.WriteString(`inputs:
  - {name: input, datatype: FP32, shape: [-1, 512]}
  - {name: state, datatype: FP32, shape: [2, -1, 128]}
  - {name: sr, datatype: INT64, shape: [1]}
outputs:
  - {name: output, datatype: FP32, shape: [-1, 1]}
  - {name: stateN, datatype: FP32, shape: [2, -1, 128]}
executionProviders: [cpu]
`)
	w := strconv.FormatFloat(want, 'g', -1, 64)
	vector := func(name, field, file string) {
		fmt.Fprintf(&y, `  - name: %s
    %s: %s
    expected: [{name: output, datatype: FP32, shape: [1, 1], data: [[%s]]}]
    tolerance: {abs: 1e-4}
`, name, field, quote(filepath.Join(s.SmokeDir, file)), w)
	}
	switch s.Smoke {
	case SmokeBoth:
		y.WriteString("smoke:\n")
		vector("two-sine-tensors", "inputsFile", "two-sine.inputs.json")
		vector("two-sine-pcm", "rawFile", "two-sine.pcm")
	case SmokePCM:
		y.WriteString("smoke:\n")
		vector("two-sine-pcm", "rawFile", "two-sine.pcm")
	}
	if err := os.WriteFile(filepath.Join(spec, bundle.SpecName), []byte(y.String()), 0o644); err != nil {
		return Bundle{}, fmt.Errorf("testbundle: %w", err)
	}
	return p.Build(ctx, spec, filepath.Join(dir, s.Name+"-"+s.Version+".bundle"), bundle.BuildOptions{Check: s.Check})
}

// quote makes a path a YAML double-quoted scalar.
func quote(s string) string { return strconv.Quote(s) }

// SileroDir lays out an unpacked Silero VAD bundle in a temporary
// directory of tb: the real model (make deps, linked) as model.onnx and
// the pre-processor built from SileroPrePackage as pre.wasm;
// SileroManifest describes it.
func SileroDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.Symlink(testenv.SileroModel(tb), filepath.Join(dir, "model.onnx")); err != nil {
		tb.Fatal(err)
	}
	wasm, err := os.ReadFile(testenv.BuildWASM(tb, SileroPrePackage))
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pre.wasm"), wasm, 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// SileroManifest describes SileroDir's files as silero-vad@version:
// execution providers [cpu], no smoke vectors, no profile.
func SileroManifest(version string) *bundle.Manifest {
	return &bundle.Manifest{
		SchemaVersion: bundle.SchemaVersion,
		Name:          "silero-vad",
		Version:       version,
		Runtime: bundle.Runtime{
			Model: "model.onnx",
			Inputs: []tensor.Spec{
				{Name: "input", Datatype: tensor.FP32, Shape: []int64{-1, 512}},
				{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, -1, 128}},
				{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}},
			},
			Outputs: []tensor.Spec{
				{Name: "output", Datatype: tensor.FP32, Shape: []int64{-1, 1}},
				{Name: "stateN", Datatype: tensor.FP32, Shape: []int64{2, -1, 128}},
			},
			Pre:                &bundle.Processor{Module: "pre.wasm"},
			ExecutionProviders: []string{"cpu"},
		},
	}
}

// PCM quantizes samples in [-1, 1] to the Silero pre-processor's input,
// 16-bit little-endian PCM (x·32768, rounded, clamped).
func PCM(x []float32) []byte {
	b := make([]byte, 2*len(x))
	for i, v := range x {
		s := math.Round(float64(v) * 32768)
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(max(-32768, min(32767, s)))))
	}
	return b
}

// TwoSine is the Silero smoke frame of shared/DESIGN.md §10: 512 samples
// of 0.5·sin(2π·220·i/16000) + 0.1·sin(2π·1375·i/16000).
func TwoSine() []float32 {
	x := make([]float32, 512)
	for i := range x {
		t := float64(i) / 16000
		x[i] = float32(0.5*math.Sin(2*math.Pi*220*t) + 0.1*math.Sin(2*math.Pi*1375*t))
	}
	return x
}
