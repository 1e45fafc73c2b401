// Package processor runs WASM pre- and post-processors in a sandbox
// (wazero): compiled once, instantiated into a pool of module instances,
// each call bounded in time and memory. The ABI is in docs/wasm-abi.md:
// the module exports memory, ef_alloc and ef_process (and optionally
// ef_abi_version), and tensors cross the boundary in the binary
// tensor-list encoding of package tensor.
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// ABIVersion is the processor ABI version this host implements. A module
// that exports ef_abi_version must return it.
const ABIVersion = guest.ABIVersion

// RawName is the name of the UINT8 tensor that carries raw bytes (for
// example a request body) into a pre-processor.
const RawName = "raw"

// Defaults for the zero Config.
const (
	DefaultMemoryLimit = 64 << 20 // bytes of linear memory per instance
	DefaultTimeout     = time.Second
	DefaultStderrLimit = 4 << 10
	maxPoolSize        = 4
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrModule: the module is not a usable processor (it does not
	// compile, lacks an export, imports something the sandbox does not
	// grant, has another ABI version, fails to initialize, or returns a
	// malformed result).
	ErrModule = errors.New("invalid processor module")
	// ErrTrap: the module trapped or exited during a call (a Go panic, an
	// unreachable instruction, an out-of-bounds access...).
	ErrTrap = errors.New("processor trapped")
	// ErrTimeout: a call ran past the per-call timeout.
	ErrTimeout = errors.New("processor timed out")
	// ErrMemory: the module tried to grow its memory past the limit.
	ErrMemory = errors.New("processor memory limit exceeded")
	// ErrRejected: the module refused the input and said why.
	ErrRejected = errors.New("processor rejected the input")
	// ErrClosed: the processor was closed.
	ErrClosed = errors.New("processor closed")
)

// Config bounds the processors. The zero value is usable: no on-disk
// cache, 64 MiB of memory and 1 s per call, a pool of min(GOMAXPROCS, 4)
// instances.
type Config struct {
	// CacheDir holds compiled modules across processes
	// (wazero.NewCompilationCacheWithDir); "" compiles in memory only.
	CacheDir string `json:"cacheDir,omitempty"`
	// MemoryLimit caps each instance's linear memory, in bytes (rounded
	// down to 64 KiB pages); 0 => DefaultMemoryLimit.
	MemoryLimit uint64 `json:"memoryLimit,omitempty"`
	// Timeout bounds each call; 0 => DefaultTimeout.
	Timeout time.Duration `json:"timeout,omitempty"`
	// PoolSize is the most instances alive at once (calls beyond it
	// wait); 0 => min(GOMAXPROCS, 4).
	PoolSize int `json:"poolSize,omitempty"`
	// StderrLimit is how much of a call's stderr is kept for error
	// messages; 0 => DefaultStderrLimit. Stdout is discarded.
	StderrLimit int `json:"stderrLimit,omitempty"`
	// Interpreter forces wazero's interpreter even where its compiler is
	// supported.
	Interpreter bool `json:"interpreter,omitempty"`
}

func (c Config) withDefaults() Config {
	if c.MemoryLimit == 0 {
		c.MemoryLimit = DefaultMemoryLimit
	}
	c.MemoryLimit &^= pageSize - 1
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.PoolSize <= 0 {
		c.PoolSize = min(runtime.GOMAXPROCS(0), maxPoolSize)
	}
	if c.StderrLimit <= 0 {
		c.StderrLimit = DefaultStderrLimit
	}
	return c
}

const pageSize = 1 << 16

// Processor is a compiled module with a pool of instances. It is safe for
// concurrent use; each instance serves one call at a time.
type Processor struct {
	name  string
	cfg   Config
	log   *slog.Logger
	rt    wazero.Runtime
	cache wazero.CompilationCache
	cm    wazero.CompiledModule
	// interruptible: the module was instrumented with the interrupt
	// global; otherwise the runtime closes modules on context done.
	interruptible bool

	slots chan struct{}  // one token per live instance
	idle  chan *instance // instances ready for a call

	mu     sync.RWMutex // held shared by calls, exclusively by Close
	closed bool
}

// Load reads and compiles the module at path. See New.
func Load(ctx context.Context, path string, cfg Config, log *slog.Logger) (*Processor, error) {
	wasm, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModule, err)
	}
	return New(ctx, path, wasm, cfg, log)
}

// New compiles a processor module (name is used in errors and logs),
// checks its exports and imports against the ABI, and instantiates one
// instance to run its initialization and check its ABI version, so that a
// broken module fails here rather than on the first request.
func New(ctx context.Context, name string, wasm []byte, cfg Config, log *slog.Logger) (*Processor, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Processor{
		name:  name,
		cfg:   cfg,
		log:   log.With("processor", name),
		slots: make(chan struct{}, cfg.PoolSize),
		idle:  make(chan *instance, cfg.PoolSize),
	}
	if cfg.CacheDir != "" {
		cache, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("processor %s: compilation cache %s: %w", name, cfg.CacheDir, err)
		}
		p.cache = cache
	}
	fail := func(err error) (*Processor, error) {
		if p.rt != nil {
			p.rt.Close(ctx)
		}
		if p.cache != nil {
			p.cache.Close(ctx)
		}
		return nil, err
	}
	// Prefer the instrumented module (see interrupt.go); fall back to
	// wazero's own termination checks if the rewriter cannot parse the
	// module or wazero refuses what it produced.
	instrumented, ierr := instrument(wasm)
	if ierr == nil {
		if err := p.compile(ctx, instrumented, false); err == nil {
			p.interruptible = true
		} else {
			ierr = err
		}
	}
	if !p.interruptible {
		if err := p.compile(ctx, wasm, true); err != nil {
			return fail(fmt.Errorf("%w %s: compiling: %w", ErrModule, name, err))
		}
		p.log.Warn("processor: interrupt instrumentation unavailable; using wazero's slower termination checks", "err", ierr)
	}
	if err := p.checkModule(); err != nil {
		return fail(fmt.Errorf("%w %s: %w", ErrModule, name, err))
	}
	// The first instance checks initialization and the ABI version, then
	// waits in the pool for the first call.
	p.slots <- struct{}{}
	inst, err := p.instantiate(ctx)
	if err != nil {
		return fail(err)
	}
	p.idle <- inst
	return p, nil
}

// compile makes the runtime (with WASI) and compiles wasm in it,
// replacing any previous attempt.
func (p *Processor) compile(ctx context.Context, wasm []byte, closeOnDone bool) error {
	if p.rt != nil {
		p.rt.Close(ctx)
		p.rt, p.cm = nil, nil
	}
	rc := wazero.NewRuntimeConfig()
	if p.cfg.Interpreter {
		rc = wazero.NewRuntimeConfigInterpreter()
	}
	rc = rc.WithCloseOnContextDone(closeOnDone)
	if p.cache != nil {
		rc = rc.WithCompilationCache(p.cache)
	}
	p.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, p.rt); err != nil {
		return fmt.Errorf("wasi: %w", err)
	}
	cm, err := p.rt.CompileModule(ctx, wasm)
	if err != nil {
		return err
	}
	p.cm = cm
	return nil
}

// checkModule checks the compiled module's exports and imports against
// the ABI.
func (p *Processor) checkModule() error {
	for _, f := range p.cm.ImportedFunctions() {
		mod, fn, _ := f.Import()
		if mod != wasi_snapshot_preview1.ModuleName {
			return fmt.Errorf("imports %s.%s: the sandbox grants only %s", mod, fn, wasi_snapshot_preview1.ModuleName)
		}
	}
	for _, m := range p.cm.ImportedMemories() {
		mod, n, _ := m.Import()
		return fmt.Errorf("imports memory %s.%s: a processor must define and export its own memory", mod, n)
	}
	mem, ok := p.cm.ExportedMemories()["memory"]
	if !ok {
		return errors.New(`missing export "memory"`)
	}
	if min := uint64(mem.Min()) * pageSize; min > p.cfg.MemoryLimit {
		return fmt.Errorf("%w: the module's initial memory is %d bytes, the limit %d", ErrMemory, min, p.cfg.MemoryLimit)
	}
	fns := p.cm.ExportedFunctions()

	if _, ok := fns["_start"]; ok {
		return errors.New("the module is a WASI command (exports _start); build it as a reactor (Go: -buildmode=c-shared)")
	}
	want := []struct {
		name     string
		params   []api.ValueType
		results  []api.ValueType
		optional bool
	}{
		{"ef_alloc", []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}, false},
		{"ef_process", []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, []api.ValueType{api.ValueTypeI64}, false},
		{"ef_abi_version", nil, []api.ValueType{api.ValueTypeI32}, true},
		{"_initialize", nil, nil, true},
	}
	for _, w := range want {
		def, ok := fns[w.name]
		if !ok {
			if w.optional {
				continue
			}
			return fmt.Errorf("missing export %q (the ABI needs memory, ef_alloc and ef_process)", w.name)
		}
		if !sameTypes(def.ParamTypes(), w.params) || !sameTypes(def.ResultTypes(), w.results) {
			return fmt.Errorf("export %q has type %s, want %s", w.name, signature(def.ParamTypes(), def.ResultTypes()), signature(w.params, w.results))
		}
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func signature(params, results []api.ValueType) string {
	s := "("
	for i, t := range params {
		if i > 0 {
			s += ", "
		}
		s += api.ValueTypeName(t)
	}
	s += ") -> ("
	for i, t := range results {
		if i > 0 {
			s += ", "
		}
		s += api.ValueTypeName(t)
	}
	return s + ")"
}

// Name is the name the processor was loaded with.
func (p *Processor) Name() string { return p.name }

// Process runs the module on a tensor list. A failed call (trap, timeout,
// memory limit) discards the instance it ran on; the next call gets a new
// one. Errors wrap ErrRejected, ErrTrap, ErrTimeout, ErrMemory, ErrModule
// or ErrClosed, or the context's error.
func (p *Processor) Process(ctx context.Context, in []tensor.Tensor) ([]tensor.Tensor, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, ErrClosed
	}
	inst, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	out, err := inst.call(ctx, in)
	p.put(inst)
	if err != nil {
		return nil, fmt.Errorf("processor %s: %w", p.name, err)
	}
	return out, nil
}

// ProcessRaw runs the module on raw bytes, passed as a UINT8 tensor named
// "raw" of shape [len(raw)].
func (p *Processor) ProcessRaw(ctx context.Context, raw []byte) ([]tensor.Tensor, error) {
	return p.Process(ctx, []tensor.Tensor{RawTensor(raw)})
}

// RawTensor wraps raw bytes as the "raw" UINT8 tensor (without copying).
func RawTensor(raw []byte) tensor.Tensor {
	if raw == nil {
		raw = []byte{}
	}
	return tensor.Tensor{Name: RawName, Datatype: tensor.Uint8, Shape: []int64{int64(len(raw))}, Data: raw}
}

// get takes an idle instance or, while the pool has room, makes one.
func (p *Processor) get(ctx context.Context) (*instance, error) {
	select {
	case inst := <-p.idle:
		return inst, nil
	default:
	}
	select {
	case inst := <-p.idle:
		return inst, nil
	case p.slots <- struct{}{}:
		inst, err := p.instantiate(ctx)
		if err != nil {
			<-p.slots
			return nil, err
		}
		return inst, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put returns an instance to the pool, or discards a broken one and frees
// its slot.
func (p *Processor) put(inst *instance) {
	if inst.broken == nil {
		p.idle <- inst
		return
	}
	p.log.Warn("processor: discarding instance", "reason", inst.broken, "detail", inst.detail)
	inst.close()
	<-p.slots
}

// Close releases every instance and the compiled module. It waits for
// calls in flight; it is idempotent.
func (p *Processor) Close(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	for len(p.idle) > 0 {
		(<-p.idle).close()
	}
	err := p.rt.Close(ctx)
	if p.cache != nil {
		err = errors.Join(err, p.cache.Close(ctx))
	}
	return err
}
