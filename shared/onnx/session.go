package onnx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Execution provider names, as written in manifests and device settings.
const (
	ProviderTensorRT = "tensorrt"
	ProviderCUDA     = "cuda"
	ProviderOpenVINO = "openvino"
	ProviderCoreML   = "coreml"
	ProviderDirectML = "directml"
	ProviderQNN      = "qnn"
	ProviderXNNPACK  = "xnnpack"
	ProviderCPU      = "cpu"
)

// Providers lists every execution provider name this package knows, in no
// particular preference.
var Providers = []string{ProviderTensorRT, ProviderCUDA, ProviderOpenVINO, ProviderCoreML, ProviderDirectML, ProviderQNN, ProviderXNNPACK, ProviderCPU}

// CheckProviders reports the first unknown name in a preference list.
// Empty entries are ignored.
func CheckProviders(names []string) error {
	for _, n := range names {
		if n == "" {
			continue
		}
		if !knownProvider(n) {
			return fmt.Errorf("%w %q (known: %s)", ErrProvider, n, strings.Join(Providers, ", "))
		}
	}
	return nil
}

func knownProvider(name string) bool {
	for _, p := range Providers {
		if p == name {
			return true
		}
	}
	return false
}

// OptimizationLevel is ONNX Runtime's graph optimization level.
type OptimizationLevel int

// Graph optimization levels. The zero value enables all optimizations.
const (
	OptimizeAll OptimizationLevel = iota
	OptimizeExtended
	OptimizeBasic
	OptimizeDisabled
)

func (l OptimizationLevel) ort() (ort.GraphOptimizationLevel, error) {
	switch l {
	case OptimizeAll:
		return ort.GraphOptimizationLevelEnableAll, nil
	case OptimizeExtended:
		return ort.GraphOptimizationLevelEnableExtended, nil
	case OptimizeBasic:
		return ort.GraphOptimizationLevelEnableBasic, nil
	case OptimizeDisabled:
		return ort.GraphOptimizationLevelDisableAll, nil
	}
	return 0, fmt.Errorf("unknown graph optimization level %d", int(l))
}

// Options configure a session. The zero value is tuned for small models
// on small CPUs: min(2, NumCPU) intra-op threads, one inter-op thread,
// sequential execution, the CPU memory arena as ONNX Runtime defaults it,
// all graph optimizations, the CPU provider.
type Options struct {
	// IntraOpThreads parallelize work inside one operator; 0 => min(2, NumCPU).
	IntraOpThreads int
	// InterOpThreads run independent operators in parallel; 0 => 1.
	// Values above 1 only matter with ParallelExecution.
	InterOpThreads int
	// ParallelExecution runs independent branches of the graph in
	// parallel (ORT_PARALLEL) instead of sequentially.
	ParallelExecution bool
	// CPUMemArena enables or disables ONNX Runtime's CPU memory arena;
	// nil keeps ONNX Runtime's default (enabled).
	CPUMemArena *bool
	// GraphOptimization is the graph optimization level.
	GraphOptimization OptimizationLevel
	// Providers is the ordered execution-provider preference, e.g.
	// ["tensorrt", "cuda", "cpu"]. Empty entries are ignored; CPU is the
	// implicit last resort; an unknown name is an error.
	Providers []string
	// Logger receives provider fallbacks; nil discards.
	Logger *slog.Logger
}

// IntraOpThreads is the intra-op thread count a session gets for the
// Options.IntraOpThreads value n: n, or min(2, NumCPU) for 0.
func IntraOpThreads(n int) int {
	if n <= 0 {
		return min(2, runtime.NumCPU())
	}
	return n
}

// GoMaxProcs is the GOMAXPROCS that leaves room for ONNX Runtime beside
// the Go scheduler: NumCPU minus the intra-op worker threads a session
// with intraOpThreads (as in Options) starts besides the calling thread,
// at least 1. On a 2-core device the Go runtime's second thread and ONNX
// Runtime's spinning worker otherwise fight for the same core, and each
// request waits for the kernel to preempt one of them: measured with
// Silero VAD over the agent's socket, GOMAXPROCS 1 instead of 2 took the
// request from 260 to 170 µs and the p99 of two concurrent clients from
// 4.4 ms to 0.9 ms (docs/operations.md, "Performance").
func GoMaxProcs(intraOpThreads int) int {
	return max(1, runtime.NumCPU()-(IntraOpThreads(intraOpThreads)-1))
}

func (o Options) sessionOptions() (*ort.SessionOptions, error) {
	intra := IntraOpThreads(o.IntraOpThreads)
	inter := o.InterOpThreads
	if inter <= 0 {
		inter = 1
	}
	level, err := o.GraphOptimization.ort()
	if err != nil {
		return nil, err
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	mode := ort.ExecutionMode(ort.ExecutionModeSequential)
	if o.ParallelExecution {
		mode = ort.ExecutionModeParallel
	}
	steps := []func() error{
		func() error { return so.SetIntraOpNumThreads(intra) },
		func() error { return so.SetInterOpNumThreads(inter) },
		func() error { return so.SetExecutionMode(mode) },
		func() error { return so.SetGraphOptimizationLevel(level) },
	}
	if o.CPUMemArena != nil {
		arena := *o.CPUMemArena
		steps = append(steps, func() error { return so.SetCpuMemArena(arena) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			so.Destroy()
			return nil, err
		}
	}
	return so, nil
}

// appendProvider adds the named execution provider to so.
func appendProvider(so *ort.SessionOptions, name string) error {
	switch name {
	case ProviderCPU:
		return nil
	case ProviderCUDA:
		po, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return err
		}
		defer po.Destroy()
		return so.AppendExecutionProviderCUDA(po)
	case ProviderTensorRT:
		po, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return err
		}
		defer po.Destroy()
		return so.AppendExecutionProviderTensorRT(po)
	case ProviderOpenVINO:
		return so.AppendExecutionProviderOpenVINO(nil)
	case ProviderCoreML:
		return so.AppendExecutionProviderCoreMLV2(nil)
	case ProviderDirectML:
		return so.AppendExecutionProviderDirectML(0)
	case ProviderQNN:
		return so.AppendExecutionProvider("QNN", nil)
	case ProviderXNNPACK:
		return so.AppendExecutionProvider("XNNPACK", nil)
	}
	return fmt.Errorf("%w %q", ErrProvider, name)
}

// ProviderError records why an execution provider was passed over.
type ProviderError struct {
	Provider string
	Err      error
}

func (e ProviderError) Error() string { return e.Provider + ": " + e.Err.Error() }
func (e ProviderError) Unwrap() error { return e.Err }

// Session is a loaded model, created once and reused. Run is safe for
// concurrent use (ONNX Runtime sessions are thread-safe for Run).
type Session struct {
	path      string
	sess      *ort.DynamicAdvancedSession
	inputs    []tensor.Spec
	outputs   []tensor.Spec
	provider  string
	fallbacks []ProviderError

	shapes     shapeCache
	runOptions runOptionsPool

	mu     sync.RWMutex // held shared by Run, exclusively by Close
	closed bool
}

// NewSession loads the model at modelPath. It tries the execution
// providers in opts.Providers in order, falling down the list when a
// provider cannot be added or the session cannot be created with it
// (each reason is logged and kept in Fallbacks), and ends with CPU.
func NewSession(modelPath string, opts Options) (*Session, error) {
	if err := initialized(); err != nil {
		return nil, err
	}
	if err := CheckProviders(opts.Providers); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	inputs, outputs, err := Inspect(modelPath)
	if err != nil {
		return nil, err
	}
	if len(inputs) == 0 || len(outputs) == 0 {
		return nil, fmt.Errorf("%w: %s declares %d inputs and %d outputs", ErrModel, modelPath, len(inputs), len(outputs))
	}
	inNames := names(inputs)
	outNames := names(outputs)

	prefs := providerOrder(opts.Providers)
	s := &Session{path: modelPath, inputs: inputs, outputs: outputs}
	libDir := filepath.Dir(LibraryPath())
	for i, name := range prefs {
		// A provider that is not installed is passed over without asking
		// ONNX Runtime, which would print an error of its own for each
		// library it fails to load; the reason goes into the one log line
		// below.
		if err := providerInstalled(libDir, name); err != nil {
			s.fallbacks = append(s.fallbacks, ProviderError{Provider: name, Err: err})
			continue
		}
		sess, err := tryProvider(modelPath, name, inNames, outNames, opts)
		if err == nil {
			s.sess, s.provider = sess, name
			break
		}
		s.fallbacks = append(s.fallbacks, ProviderError{Provider: name, Err: err})
		if i+1 < len(prefs) {
			// Installed but failing (no GPU, a driver mismatch): worth a
			// warning.
			log.Warn("onnx: execution provider failed, falling back", "model", modelPath, "provider", name, "next", prefs[i+1], "err", err)
		}
	}
	if s.sess == nil {
		errs := make([]error, len(s.fallbacks))
		for i, f := range s.fallbacks {
			errs[i] = f
		}
		return nil, fmt.Errorf("%w: loading %s: %w", ErrModel, modelPath, errors.Join(errs...))
	}
	attrs := []any{"model", modelPath, "provider", s.provider}
	if len(s.fallbacks) > 0 {
		skipped := make([]string, len(s.fallbacks))
		for i, f := range s.fallbacks {
			skipped[i] = f.Error()
		}
		attrs = append(attrs, "skipped", strings.Join(skipped, "; "))
	}
	log.Info("onnx: session ready", attrs...)
	return s, nil
}

// ErrNotInstalled: an execution provider's libraries are not installed
// beside ONNX Runtime, or it does not exist on this operating system.
var ErrNotInstalled = errors.New("not installed")

// providerLibraries are the provider-bridge libraries ONNX Runtime loads
// from its own directory for the providers that ship as separate shared
// libraries (the CPU build of ONNX Runtime has none of them).
var providerLibraries = map[string][]string{
	ProviderCUDA:     {"libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"},
	ProviderTensorRT: {"libonnxruntime_providers_shared.so", "libonnxruntime_providers_tensorrt.so"},
	ProviderOpenVINO: {"libonnxruntime_providers_shared.so", "libonnxruntime_providers_openvino.so"},
}

// providerOS are the providers that exist on one operating system only.
var providerOS = map[string]string{ProviderCoreML: "darwin", ProviderDirectML: "windows"}

// providerInstalled reports, with ErrNotInstalled, a provider that cannot
// be created here without asking ONNX Runtime: one for another operating
// system, or one whose libraries are missing from libDir, the directory
// of the ONNX Runtime library in use. Built-in providers (QNN, XNNPACK in
// builds that have them) pass; ONNX Runtime answers for those quietly.
func providerInstalled(libDir, name string) error {
	if goos, ok := providerOS[name]; ok && goos != runtime.GOOS {
		return fmt.Errorf("%w: only on %s", ErrNotInstalled, goos)
	}
	if runtime.GOOS != "linux" {
		return nil
	}
	var missing []string
	for _, lib := range providerLibraries[name] {
		if _, err := os.Stat(filepath.Join(libDir, lib)); err != nil {
			missing = append(missing, lib)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: no %s in %s", ErrNotInstalled, strings.Join(missing, ", "), libDir)
	}
	return nil
}

// providerOrder is the preference without empty entries or duplicates,
// ending with CPU (anything after CPU is unreachable and dropped).
func providerOrder(prefs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range prefs {
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		if p == ProviderCPU {
			return out
		}
	}
	return append(out, ProviderCPU)
}

func tryProvider(modelPath, provider string, inNames, outNames []string, opts Options) (*ort.DynamicAdvancedSession, error) {
	so, err := opts.sessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	if err := appendProvider(so, provider); err != nil {
		return nil, fmt.Errorf("adding provider: %w", err)
	}
	sess, err := ort.NewDynamicAdvancedSession(modelPath, inNames, outNames, so)
	if err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	return sess, nil
}

func names(specs []tensor.Spec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Name
	}
	return out
}

// Provider is the execution provider the session runs on, e.g. "cpu".
func (s *Session) Provider() string { return s.provider }

// Fallbacks lists the preferred providers that were passed over, in
// order, with the reason for each.
func (s *Session) Fallbacks() []ProviderError { return append([]ProviderError(nil), s.fallbacks...) }

// Inputs are the model's input specs (as Inspect reports them).
func (s *Session) Inputs() []tensor.Spec { return s.inputs }

// Outputs are the model's output specs (as Inspect reports them).
func (s *Session) Outputs() []tensor.Spec { return s.outputs }

// Run runs the model. Every model input must be given exactly once, in
// any order, with the model's datatype and rank (a rank-0 input also
// takes a one-element [1] tensor); fixed dimensions must match. Input data
// is shared with ONNX Runtime, not copied, and must not be modified
// during the call. Outputs come back in the model's order. Cancelling ctx
// terminates the run.
func (s *Session) Run(ctx context.Context, inputs []tensor.Tensor) ([]tensor.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	values, shapes, err := s.inputValues(inputs)
	defer destroyAll(values)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	// Outputs: preallocated in Go memory when an earlier run with the same
	// input shapes told us their shapes (ONNX Runtime then writes into
	// them: no copy), else allocated by ONNX Runtime and copied out.
	var keyBuf [128]byte
	key := shapeKey(keyBuf[:0], shapes)
	outs := make([]ort.Value, len(s.outputs))
	defer func() { destroyAll(outs) }()
	outShapes, known := s.shapes.lookup(key)
	err = s.prepareOutputs(outs, outShapes)
	if err != nil {
		return nil, err
	}
	err = s.run(ctx, values, outs)
	if err != nil && known && ctx.Err() == nil {
		// The output shapes depend on more than the input shapes; run
		// again with outputs ONNX Runtime sizes, and stop guessing.
		s.shapes.forget(key)
		destroyAll(outs)
		clear(outs)
		if err = s.prepareOutputs(outs, nil); err == nil {
			err = s.run(ctx, values, outs)
		}
	}
	if err != nil {
		return nil, err
	}
	result := make([]tensor.Tensor, len(outs))
	for i, v := range outs {
		if result[i], err = fromValue(s.outputs[i].Name, v); err != nil {
			return nil, err
		}
	}
	if !known {
		s.shapes.learn(key, result)
	}
	return result, nil
}

// prepareOutputs fills outs with preallocated values where the shapes
// are known: rank-0 outputs always (onnxruntime_go cannot allocate
// them), every output when shapes is not nil.
func (s *Session) prepareOutputs(outs []ort.Value, shapes [][]int64) error {
	for i, spec := range s.outputs {
		var err error
		switch {
		case len(spec.Shape) == 0:
			outs[i], err = newOutput(spec.Datatype, true, nil)
		case shapes != nil:
			outs[i], err = newOutput(spec.Datatype, false, shapes[i])
		}
		if err != nil {
			return fmt.Errorf("%w: output %q: %w", ErrRun, spec.Name, err)
		}
	}
	return nil
}

func (s *Session) run(ctx context.Context, values, outs []ort.Value) error {
	if ctx.Done() == nil {
		if err := s.sess.Run(values, outs); err != nil {
			return fmt.Errorf("%w: %w", ErrRun, err)
		}
		return nil
	}
	ro, err := s.runOptions.get()
	if err != nil {
		return fmt.Errorf("%w: run options: %w", ErrRun, err)
	}
	terminated := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(terminated)
		_ = ro.Terminate()
	})
	err = s.sess.RunWithOptions(values, outs, ro)
	if stop() {
		s.runOptions.put(ro)
	} else {
		// Terminate ran (or is running): the options are spent.
		<-terminated
		ro.Destroy()
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("%w: %w", ErrRun, cerr)
		}
		return fmt.Errorf("%w: %w", ErrRun, err)
	}
	return nil
}

// inputValues orders inputs as the model declares them and wraps each in
// an ONNX Runtime value; shapes are the inputs' shapes in the same order.
// On error, the values made so far are returned for the caller to
// destroy.
func (s *Session) inputValues(inputs []tensor.Tensor) (values []ort.Value, shapes [][]int64, err error) {
	values = make([]ort.Value, len(s.inputs))
	shapes = make([][]int64, len(s.inputs))
	for _, t := range inputs {
		i := s.inputIndex(t.Name)
		if i < 0 {
			return values, nil, fmt.Errorf("%w: tensor %q: %w: the model has no such input (inputs: %s)", ErrInput, t.Name, tensor.ErrName, strings.Join(names(s.inputs), ", "))
		}
		if values[i] != nil {
			return values, nil, fmt.Errorf("%w: tensor %q: %w: given twice", ErrInput, t.Name, tensor.ErrName)
		}
		spec := s.inputs[i]
		if len(spec.Shape) == 0 && len(t.Shape) == 1 && t.Shape[0] == 1 {
			spec.Shape = []int64{1} // ONNX Runtime takes [1] for a scalar
		}
		if err := spec.Matches(t, true); err != nil {
			return values, nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		v, err := toValue(t)
		if err != nil {
			return values, nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		values[i], shapes[i] = v, t.Shape
	}
	for i, v := range values {
		if v == nil {
			return values, nil, fmt.Errorf("%w: tensor %q: %w: missing model input", ErrInput, s.inputs[i].Name, tensor.ErrName)
		}
	}
	return values, shapes, nil
}

func (s *Session) inputIndex(name string) int {
	for i, spec := range s.inputs {
		if spec.Name == name {
			return i
		}
	}
	return -1
}

func destroyAll(values []ort.Value) {
	for _, v := range values {
		if v != nil {
			_ = v.Destroy()
		}
	}
}

// Close releases the session. It waits for runs in flight and is
// idempotent; Run after Close returns ErrClosed.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.runOptions.close()
	if err := s.sess.Destroy(); err != nil {
		return fmt.Errorf("onnx: closing session for %s: %w", s.path, err)
	}
	return nil
}

// runOptionsPool keeps ONNX Runtime run options for reuse: creating them
// on every cancellable Run cost about 25 µs per call. Options whose run
// was terminated are destroyed, never returned to the pool.
type runOptionsPool struct {
	mu   sync.Mutex
	free []*ort.RunOptions
}

// maxPooledRunOptions bounds the pool to about the number of concurrent
// runs worth keeping warm on a small device.
const maxPooledRunOptions = 16

func (p *runOptionsPool) get() (*ort.RunOptions, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		ro := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return ro, nil
	}
	p.mu.Unlock()
	return ort.NewRunOptions()
}

func (p *runOptionsPool) put(ro *ort.RunOptions) {
	p.mu.Lock()
	if len(p.free) < maxPooledRunOptions {
		p.free = append(p.free, ro)
		ro = nil
	}
	p.mu.Unlock()
	if ro != nil {
		ro.Destroy()
	}
}

func (p *runOptionsPool) close() {
	p.mu.Lock()
	free := p.free
	p.free = nil
	p.mu.Unlock()
	for _, ro := range free {
		ro.Destroy()
	}
}
