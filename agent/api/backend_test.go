package api

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// testBackend is a Backend over a fixed set of predictors, the way the
// agent's slot manager presents its active models: concurrent lookups,
// a release per use, models swapped while requests run.
type testBackend struct {
	mu       sync.RWMutex
	models   map[string]Predictor
	notReady map[string]bool
	ready    atomic.Bool
	inUse    atomic.Int64 // acquired and not yet released
}

func newTestBackend(ps ...Predictor) *testBackend {
	b := &testBackend{models: map[string]Predictor{}, notReady: map[string]bool{}}
	for _, p := range ps {
		b.models[p.Manifest().Name] = p
	}
	b.ready.Store(true)
	return b
}

func (b *testBackend) set(p Predictor) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.models[p.Manifest().Name] = p
}

func (b *testBackend) setNotReady(name string, v bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notReady[name] = v
}

func (b *testBackend) Model(name string) (Predictor, func(), error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.notReady[name] {
		return nil, nil, fmt.Errorf("model %q: %w: loading", name, ErrNotReady)
	}
	p, ok := b.models[name]
	if !ok {
		return nil, nil, fmt.Errorf("%w: no model named %q is installed", ErrModelNotFound, name)
	}
	b.inUse.Add(1)
	var once sync.Once
	return p, func() { once.Do(func() { b.inUse.Add(-1) }) }, nil
}

func (b *testBackend) Models() []ModelInfo {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []ModelInfo
	for _, p := range b.models {
		m := p.Manifest()
		out = append(out, ModelInfo{Name: m.Name, Version: m.Version, Provider: p.Provider()})
	}
	return out
}

func (b *testBackend) Ready() bool { return b.ready.Load() }

// stubPredictor exists only to drive the error paths the real model cannot
// be made to take on demand: a runtime failure, a blocked inference, a
// non-finite output. Every other test runs the real Silero model.
type stubPredictor struct {
	manifest *bundle.Manifest
	infer    func(ctx context.Context, in modelInput) (*modelOutput, error)
}

func (p *stubPredictor) Infer(ctx context.Context, in modelInput) (*modelOutput, error) {
	return p.infer(ctx, in)
}
func (p *stubPredictor) Manifest() *bundle.Manifest { return p.manifest }
func (p *stubPredictor) Provider() string           { return "cpu" }
