package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// sileroTwoSine is Silero VAD v5's output for the two-sine frame with zero
// state (shared/DESIGN.md §10).
const sileroTwoSine = 0.0690874

// sileroManifest describes the Silero VAD v5 model as a bundle would.
func sileroManifest(version string, inputs, outputs []tensor.Spec) *bundle.Manifest {
	return &bundle.Manifest{
		SchemaVersion: bundle.SchemaVersion,
		Name:          "silero-vad",
		Version:       version,
		Runtime:       bundle.Runtime{Model: "model.onnx", Inputs: inputs, Outputs: outputs},
	}
}

// sessionPredictor runs the real Silero model through ONNX Runtime.
type sessionPredictor struct {
	sess     *onnx.Session
	manifest *bundle.Manifest
}

func (p *sessionPredictor) Infer(ctx context.Context, in modelInput) (*modelOutput, error) {
	if in.Raw != nil {
		return nil, fmt.Errorf("%w: model %s has no pre-processor to take raw bytes", errModelInput, p.manifest.Name)
	}
	outs, err := p.sess.Run(ctx, in.Tensors)
	if errors.Is(err, onnx.ErrInput) {
		return nil, fmt.Errorf("%w: %w", errModelInput, err)
	}
	if err != nil {
		return nil, err
	}
	return &modelOutput{Tensors: outs}, nil
}

func (p *sessionPredictor) Manifest() *bundle.Manifest { return p.manifest }
func (p *sessionPredictor) Provider() string           { return p.sess.Provider() }
func (p *sessionPredictor) Close() error               { return p.sess.Close() }

// sileroPredictor loads the real Silero VAD v5 model (make deps) as
// bundle version.
func sileroPredictor(tb testing.TB, version string) *sessionPredictor {
	tb.Helper()
	if err := onnx.Init(testenv.ORTLibrary(tb)); err != nil {
		tb.Fatal(err)
	}
	sess, err := onnx.NewSession(testenv.SileroModel(tb), onnx.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sess.Close() })
	return &sessionPredictor{sess: sess, manifest: sileroManifest(version, sess.Inputs(), sess.Outputs())}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-5 }
