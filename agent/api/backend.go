package api

// The models the server serves: the Backend and Predictor interfaces, the
// sentinel errors a Backend returns, and resolving a request's model (and
// version) through it.

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
)

// Sentinel errors a Backend returns (possibly wrapped).
var (
	// ErrModelNotFound: no model of that name is installed (HTTP 404).
	ErrModelNotFound = errors.New("model not found")
	// ErrNotReady: the model (or the server) cannot serve yet, e.g. while
	// it loads (HTTP 503).
	ErrNotReady = errors.New("not ready")
)

// Predictor is one loaded model. *model.Model satisfies it.
type Predictor interface {
	// Infer runs the model; errors wrapping model.ErrInput are the
	// caller's fault. It must not keep in.Raw after it returns.
	Infer(ctx context.Context, in model.Input) (*model.Output, error)
	// Manifest describes the bundle: name, version, inputs, outputs.
	Manifest() *bundle.Manifest
	// Provider is the execution provider in use, e.g. "cpu".
	Provider() string
}

// A *model.Model is a Predictor.
var _ Predictor = (*model.Model)(nil)

// Backend gives the server the models it serves. The agent's slot manager
// implements it; it must be safe for concurrent use.
type Backend interface {
	// Model returns the active model of the bundle named name and a
	// release function the server calls once it no longer uses the
	// model (after Infer returns). A backend that swaps models must not
	// close one before every release of it. An unknown name gives an
	// error wrapping ErrModelNotFound, a model that is not loaded
	// ErrNotReady; release is nil whenever the error is not.
	Model(name string) (p Predictor, release func(), err error)
	// Models lists the active models, for metrics.
	Models() []ModelInfo
	// Ready reports whether the agent can serve predictions (the
	// Open Inference Protocol's server readiness).
	Ready() bool
}

// ModelInfo describes an active model.
type ModelInfo struct {
	Name     string
	Version  string
	Provider string
}

// resolved is a model the server found for a request.
type resolved struct {
	name, version, provider string
	bundle                  []string // BundleHeader value
	manifest                *bundle.Manifest
}

// lookup finds the model for name (and version, if not "") and releases
// it at once: enough to answer metadata and to refuse requests early.
func (s *Server) lookup(name, version string) (*resolved, error) {
	p, release, err := s.acquire(name, version)
	if err != nil {
		return nil, err
	}
	defer release()
	return describe(p), nil
}

// acquire returns the model for name (and version, if not "").
func (s *Server) acquire(name, version string) (Predictor, func(), error) {
	p, release, err := s.backend.Model(name)
	if err != nil {
		return nil, nil, err
	}
	if version != "" {
		if v := p.Manifest().Version; v != version {
			release()
			return nil, nil, fmt.Errorf("%w: model %q has no version %q (serving %s)", ErrModelNotFound, name, version, v)
		}
	}
	return p, release, nil
}

func describe(p Predictor) *resolved {
	m := p.Manifest()
	return &resolved{
		name:     m.Name,
		version:  m.Version,
		provider: p.Provider(),
		bundle:   []string{m.Name + "@" + m.Version},
		manifest: m,
	}
}
