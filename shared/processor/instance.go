package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// initTimeout bounds a module's initialization when the per-call timeout
// is shorter: initialization runs once, at load.
const initTimeout = 10 * time.Second

// instance is one module instance. It is used by one goroutine at a time.
type instance struct {
	mod     api.Module
	mem     *linearMemory
	stderr  *boundedBuffer
	alloc   api.Function
	process api.Function
	// interrupt is the instrumented interrupt global (nil when the
	// runtime closes modules on context done instead).
	interrupt api.MutableGlobal
	stack     [2]uint64

	inPtr, inCap uint32 // the ef_alloc buffer, reused while inputs fit
	enc          []byte // scratch for the encoded input

	timeout time.Duration

	broken error  // why the instance must be discarded, if it must
	detail string // the full error and stderr of the failure, for the log
}

// instantiate makes a new instance: it runs the module's initialization
// and checks its ABI version. The sandbox grants no filesystem, network,
// environment or arguments; clocks and randomness are wazero's
// deterministic fakes; stdout is discarded and stderr kept (bounded) for
// error messages.
func (p *Processor) instantiate(ctx context.Context) (*instance, error) {
	inst := &instance{
		mem:     &linearMemory{limit: p.cfg.MemoryLimit},
		stderr:  &boundedBuffer{limit: p.cfg.StderrLimit},
		timeout: p.cfg.Timeout,
	}
	mc := wazero.NewModuleConfig().
		WithName("").
		WithStdout(io.Discard).
		WithStderr(inst.stderr).
		WithStartFunctions()
	ictx := experimental.WithMemoryAllocator(ctx, inst.mem)
	mod, err := p.rt.InstantiateModule(ictx, p.cm, mc)
	if err != nil {
		return nil, fmt.Errorf("%w %s: instantiating: %w", ErrModule, p.name, err)
	}
	inst.mod = mod
	if p.interruptible {
		g, ok := mod.ExportedGlobal(interruptExport).(api.MutableGlobal)
		if !ok {
			inst.close()
			return nil, fmt.Errorf("%w %s: the interrupt global is missing", ErrModule, p.name)
		}
		inst.interrupt = g
	}
	if init := mod.ExportedFunction("_initialize"); init != nil {
		if err := inst.callBounded(ctx, "_initialize", init, nil); err != nil {
			inst.close()
			return nil, fmt.Errorf("%w %s: %w", ErrModule, p.name, err)
		}
	}
	if v := mod.ExportedFunction("ef_abi_version"); v != nil {
		var stack [1]uint64
		if err := inst.callBounded(ctx, "ef_abi_version", v, stack[:]); err != nil {
			inst.close()
			return nil, fmt.Errorf("%w %s: %w", ErrModule, p.name, err)
		}
		if got := api.DecodeU32(stack[0]); got != ABIVersion {
			inst.close()
			return nil, fmt.Errorf("%w %s: ABI version %d, this host implements version %d", ErrModule, p.name, got, ABIVersion)
		}
	}
	inst.alloc = mod.ExportedFunction("ef_alloc")
	inst.process = mod.ExportedFunction("ef_process")
	return inst, nil
}

func (inst *instance) close() {
	if inst.mod != nil {
		_ = inst.mod.Close(context.Background())
	}
}

// call runs ef_process on one tensor list. Any failure other than a
// rejection marks the instance broken.
func (inst *instance) call(ctx context.Context, in []tensor.Tensor) ([]tensor.Tensor, error) {
	var err error
	inst.enc, err = tensor.AppendBinary(inst.enc[:0], in)
	if err != nil {
		// The caller's tensors are inconsistent; the instance is fine.
		return nil, fmt.Errorf("%w: encoding input: %w", ErrRejected, err)
	}
	if uint64(len(inst.enc)) > uint64(inst.mem.limit) {
		return nil, fmt.Errorf("%w: input of %d bytes exceeds the memory limit of %d", ErrMemory, len(inst.enc), inst.mem.limit)
	}
	n := uint32(len(inst.enc))
	err = inst.bounded(ctx, inst.timeout, func(ctx context.Context) error {
		if n > inst.inCap {
			inst.stack[0] = api.EncodeU32(n)
			if err := inst.alloc.CallWithStack(ctx, inst.stack[:]); err != nil {
				return fmt.Errorf("ef_alloc: %w", err)
			}
			inst.inPtr, inst.inCap = api.DecodeU32(inst.stack[0]), n
		}
		if !inst.mod.Memory().Write(inst.inPtr, inst.enc) {
			inst.inCap = 0
			return fmt.Errorf("%w: ef_alloc(%d) returned %d, outside the module's memory", ErrModule, n, inst.inPtr)
		}
		inst.stack[0], inst.stack[1] = api.EncodeU32(inst.inPtr), api.EncodeU32(n)
		if err := inst.process.CallWithStack(ctx, inst.stack[:]); err != nil {
			return fmt.Errorf("ef_process: %w", err)
		}
		return nil
	})
	if err != nil {
		inst.broken = err
		return nil, err
	}
	res := inst.stack[0]
	ptr, size := uint32(res>>32), uint32(res)
	isErr := size&guest.ErrorFlag != 0
	size &^= guest.ErrorFlag
	region, ok := inst.mod.Memory().Read(ptr, size)
	if !ok {
		inst.broken = fmt.Errorf("%w: ef_process returned region [%d, +%d) outside the module's memory", ErrModule, ptr, size)
		return nil, inst.broken
	}
	if isErr {
		return nil, fmt.Errorf("%w: %s", ErrRejected, truncate(region, 1024))
	}
	out, err := tensor.DecodeBinary(region)
	if err != nil {
		inst.broken = fmt.Errorf("%w: ef_process output: %w", ErrModule, err)
		return nil, inst.broken
	}
	return out, nil
}

// callBounded calls fn with the instance's time bound.
func (inst *instance) callBounded(ctx context.Context, name string, fn api.Function, stack []uint64) error {
	return inst.bounded(ctx, max(inst.timeout, initTimeout), func(ctx context.Context) error {
		if err := fn.CallWithStack(ctx, stack); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

// bounded runs calls into the module under the per-call timeout and the
// caller's context. It interrupts the module through the instrumented
// global when either ends (or, for modules that could not be
// instrumented, lets wazero close the module). A failure is classified
// (see classify).
func (inst *instance) bounded(ctx context.Context, timeout time.Duration, calls func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	inst.stderr.Reset()
	interrupted := false
	var err error
	if inst.interrupt == nil {
		err = calls(ctx)
	} else {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			inst.interrupt.Set(1)
			close(fired)
		})
		err = calls(ctx)
		if !stop() {
			<-fired
			interrupted = true
			if err == nil {
				// The calls finished before the interrupt took effect.
				inst.interrupt.Set(0)
			}
		}
	}
	if err == nil || errors.Is(err, ErrModule) {
		return err
	}
	return inst.classify(ctx, err, timeout, interrupted)
}

// classify maps a wazero call error to the package's sentinels. The
// message keeps the first line of the runtime's error and the first
// paragraph of what the module wrote to stderr (a Go panic message, for
// one); the full text goes to the log when the instance is discarded.
func (inst *instance) classify(ctx context.Context, err error, timeout time.Duration, interrupted bool) error {
	if interrupted {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w (limit %v): %w", ErrTimeout, timeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("call abandoned: %w", context.Cause(ctx))
	}
	stderr := inst.stderr.String()
	inst.detail = err.Error()
	if stderr != "" {
		inst.detail += "\nstderr:\n" + stderr
	}
	brief := firstLine(err.Error())
	if s := summary(stderr); s != "" {
		brief += ": " + s
	}
	if inst.mem.exceeded {
		return fmt.Errorf("%w (limit %d bytes, %d requested): %s", ErrMemory, inst.mem.limit, inst.mem.requested, brief)
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("%w (limit %v): %w", ErrTimeout, timeout, context.DeadlineExceeded)
		case sys.ExitCodeContextCanceled:
			return fmt.Errorf("call abandoned: %w", context.Cause(ctx))
		}
		return fmt.Errorf("%w: module exited with code %d: %s", ErrTrap, exit.ExitCode(), brief)
	}
	return fmt.Errorf("%w: %s", ErrTrap, brief)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// summary is the first paragraph of a module's stderr on one line, at most
// 512 bytes: for a Go module, the panic or fatal error message without the
// goroutine dump.
func summary(stderr string) string {
	para, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n\n")
	s := strings.Join(strings.Fields(strings.ReplaceAll(para, "\n", " ; ")), " ")
	return truncate([]byte(s), 512)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// linearMemory backs an instance's linear memory and enforces the memory
// limit itself, so that a refused memory.grow is known to the host (and
// reported as ErrMemory) rather than only seen by the module.
type linearMemory struct {
	limit     uint64
	buf       []byte
	exceeded  bool
	requested uint64
}

// Allocate implements experimental.MemoryAllocator; an instance's
// allocator serves its one memory.
func (m *linearMemory) Allocate(_, max uint64) experimental.LinearMemory {
	if max < m.limit {
		m.limit = max
	}
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.exceeded, m.requested = true, size
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	// Grow geometrically (within the limit) to keep repeated small grows
	// cheap.
	c := max(size, min(2*uint64(cap(m.buf)), m.limit))
	buf := make([]byte, size, c)
	copy(buf, m.buf)
	m.buf = buf
	return buf
}

// Free implements experimental.LinearMemory.
func (m *linearMemory) Free() { m.buf = nil }

// boundedBuffer keeps the first limit bytes written to it.
type boundedBuffer struct {
	limit int
	buf   []byte
	lost  bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	room := b.limit - len(b.buf)
	if len(p) > room {
		b.buf = append(b.buf, p[:max(room, 0)]...)
		b.lost = true
	} else {
		b.buf = append(b.buf, p...)
	}
	return len(p), nil
}

func (b *boundedBuffer) Reset() { b.buf, b.lost = b.buf[:0], false }

func (b *boundedBuffer) String() string {
	s := string(b.buf)
	if b.lost {
		s += "…"
	}
	return s
}
