package api

import (
	"context"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
)

// newRegistry returns a Registry serving ps.
func newRegistry(ps ...Predictor) *Registry {
	r := NewRegistry()
	for _, p := range ps {
		r.Set(p)
	}
	return r
}

// drained removes the named models from r and fails the test unless every
// request released them.
func drained(t testing.TB, r *Registry, names ...string) {
	t.Helper()
	for _, n := range names {
		_, wait := r.Remove(n)
		if wait == nil {
			t.Errorf("model %s is not active", n)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := wait(ctx); err != nil {
			t.Errorf("acquired and never released: %v", err)
		}
		cancel()
	}
}

// stubPredictor exists only to drive the error paths the real model cannot
// be made to take on demand: a runtime failure, a blocked inference, a
// non-finite output. Every other test runs the real Silero model.
type stubPredictor struct {
	manifest *bundle.Manifest
	infer    func(ctx context.Context, in model.Input) (*model.Output, error)
}

func (p *stubPredictor) Infer(ctx context.Context, in model.Input) (*model.Output, error) {
	return p.infer(ctx, in)
}
func (p *stubPredictor) Manifest() *bundle.Manifest { return p.manifest }
func (p *stubPredictor) Provider() string           { return "cpu" }
