// Package model runs a bundle's model: an optional WASM pre-processor,
// the ONNX model through ONNX Runtime, an optional WASM post-processor.
// The same code runs smoke vectors at build time (fleetctl) and at install
// time (edge-agent), and serves every prediction.
package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrInput: the caller's input is wrong (HTTP 4xx): a missing, extra
	// or malformed tensor, a non-finite value, raw bytes the
	// pre-processor refused.
	ErrInput = errors.New("invalid input")
	// ErrProcessor: a pre- or post-processor failed (trapped, timed out,
	// ran out of memory, produced the wrong tensors) or could not load.
	ErrProcessor = errors.New("processor failed")
	// ErrRuntime: ONNX Runtime could not load or run the model.
	ErrRuntime = errors.New("model runtime failed")
	// ErrManifest: the manifest does not describe the model file (Load,
	// Check).
	ErrManifest = errors.New("manifest does not match the model")
	// ErrSmoke: a smoke vector's output is not within tolerance.
	ErrSmoke = errors.New("smoke test failed")
	// ErrClosed: the model was closed.
	ErrClosed = errors.New("model closed")
)

// Options configure how a model is loaded. Zero values pick defaults
// tuned for small models on small CPUs.
type Options struct {
	// ORTLibrary is the ONNX Runtime shared library; "" means
	// onnx.DefaultLibraryPath(). A process holds one library.
	ORTLibrary string
	// Providers overrides the manifest's execution-provider preference
	// (a device setting); "" entries are ignored.
	Providers []string
	// IntraOpThreads and InterOpThreads size ONNX Runtime's thread
	// pools; 0 picks min(2, NumCPU) and 1.
	IntraOpThreads int
	InterOpThreads int
	// CPUMemArena enables or disables ONNX Runtime's CPU memory arena;
	// nil keeps the default.
	CPUMemArena *bool
	// WASM bounds the pre- and post-processors.
	WASM processor.Config
	// Logger receives load-time events (provider fallbacks, discarded
	// processor instances); nil discards.
	Logger *slog.Logger
}

// Input is one inference request: tensors for the model, or raw bytes for
// the pre-processor (not both).
type Input struct {
	Tensors []tensor.Tensor
	Raw     []byte
}

// Output is the model's answer.
type Output struct {
	// Tensors are the model's outputs (after the post-processor, if any).
	Tensors []tensor.Tensor
	// Features are the pre-processor's outputs that are not model inputs
	// (drift features); empty when the request carried tensors.
	Features []tensor.Tensor
	// Inputs are the tensors the model was fed: the pre-processor's
	// outputs named like model inputs for raw bytes, the request's
	// tensors otherwise (the same slices, not copies). The agent's data
	// sampling keeps them (docs/integrations.md).
	Inputs []tensor.Tensor
}

// Model is a loaded bundle model, safe for concurrent Infer.
type Model struct {
	dir       string
	man       *bundle.Manifest
	log       *slog.Logger
	sess      *onnx.Session
	pre, post *processor.Processor
	inputs    []tensor.Spec // the manifest's, checked against the model

	mu     sync.RWMutex // held shared by Infer, exclusively by Close
	closed bool
}

// Load loads the model of an unpacked bundle: the ONNX session (with the
// execution providers of opts.Providers if set, else the manifest's) and
// the optional pre- and post-processors. It fails with ErrManifest if the
// manifest's inputs and outputs do not describe the model file.
func Load(ctx context.Context, dir string, m *bundle.Manifest, opts Options) (*Model, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: no manifest", ErrManifest)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("bundle", m.Name+"@"+m.Version)
	modelPath, err := bundlePath(dir, "model", m.Runtime.Model)
	if err != nil {
		return nil, err
	}
	if err := onnx.Init(opts.ORTLibrary); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRuntime, err)
	}
	providers := nonEmpty(opts.Providers)
	if len(providers) == 0 {
		providers = nonEmpty(m.Runtime.ExecutionProviders)
	}
	sess, err := onnx.NewSession(modelPath, onnx.Options{
		IntraOpThreads: opts.IntraOpThreads,
		InterOpThreads: opts.InterOpThreads,
		CPUMemArena:    opts.CPUMemArena,
		Providers:      providers,
		Logger:         log,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRuntime, err)
	}
	md := &Model{dir: dir, man: m, log: log, sess: sess, inputs: m.Runtime.Inputs}
	fail := func(err error) (*Model, error) {
		md.Close()
		return nil, err
	}
	if err := compareIO(sess.Inputs(), m.Runtime.Inputs, "input", true); err != nil {
		return fail(err)
	}
	if err := compareIO(sess.Outputs(), m.Runtime.Outputs, "output", false); err != nil {
		return fail(err)
	}
	for _, pp := range []struct {
		kind string
		spec *bundle.Processor
		dst  **processor.Processor
	}{{"pre", m.Runtime.Pre, &md.pre}, {"post", m.Runtime.Post, &md.post}} {
		if pp.spec == nil {
			continue
		}
		path, err := bundlePath(dir, pp.kind+"-processor", pp.spec.Module)
		if err != nil {
			return fail(err)
		}
		p, err := processor.Load(ctx, path, opts.WASM, log)
		if err != nil {
			return fail(fmt.Errorf("%w: %s-processor: %w", ErrProcessor, pp.kind, err))
		}
		*pp.dst = p
	}
	log.Info("model: loaded", "provider", sess.Provider(), "pre", md.pre != nil, "post", md.post != nil)
	return md, nil
}

// bundlePath resolves a manifest path inside the bundle directory.
func bundlePath(dir, what, rel string) (string, error) {
	if rel == "" {
		return "", fmt.Errorf("%w: no %s path", ErrManifest, what)
	}
	p := filepath.FromSlash(rel)
	if !filepath.IsLocal(p) {
		return "", fmt.Errorf("%w: %s path %q leaves the bundle directory", ErrManifest, what, rel)
	}
	return filepath.Join(dir, p), nil
}

func nonEmpty(names []string) []string {
	var out []string
	for _, n := range names {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// Manifest is the manifest the model was loaded with.
func (m *Model) Manifest() *bundle.Manifest { return m.man }

// Provider is the execution provider in use, e.g. "cpu".
func (m *Model) Provider() string { return m.sess.Provider() }

// Close releases the session and the processors. It waits for Infer calls
// in flight and is idempotent.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if m.sess != nil {
		errs = append(errs, m.sess.Close())
	}
	for _, p := range []*processor.Processor{m.pre, m.post} {
		if p != nil {
			errs = append(errs, p.Close(context.Background()))
		}
	}
	return errors.Join(errs...)
}

// Check validates a bundle directory before it is shipped or activated:
// the manifest's declared inputs and outputs against the ONNX file itself
// (Load), then every smoke vector through the full pipeline.
func Check(ctx context.Context, dir string, m *bundle.Manifest, opts Options) error {
	md, err := Load(ctx, dir, m, opts)
	if err != nil {
		return err
	}
	err = md.Smoke(ctx)
	return errors.Join(err, md.Close())
}
