// Package model runs a bundle's model: an optional WASM pre-processor,
// the ONNX model through ONNX Runtime, an optional WASM post-processor.
// The same code runs smoke vectors at build time (fleetctl) and at install
// time (edge-agent), and serves every prediction.
package model

import (
	"context"
	"errors"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// Options configure how a model is loaded. Zero values pick defaults
// tuned for small models on small CPUs.
type Options struct{}

// Check validates a bundle directory before it is shipped or activated:
// the model's declared inputs and outputs against the ONNX file itself,
// then every smoke vector through the full pipeline.
func Check(ctx context.Context, dir string, m *bundle.Manifest, opts Options) error {
	return errors.New("model.Check: not implemented yet")
}
