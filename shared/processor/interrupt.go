package processor

import (
	"errors"
	"fmt"
	"strings"
)

// Interrupting a running module.
//
// wazero can stop a call on context cancellation only when the runtime is
// built WithCloseOnContextDone, which compiles a call out to the host into
// every loop iteration. Go-built modules run loops everywhere (every
// function is a dispatch loop), and those exits made the Silero
// pre-processor about ten times slower. Instead, before compiling, the
// host rewrites the module: it adds two mutable i32 globals, $interrupt
// (exported as interruptExport) and $fuel, and at the top of every loop
// inserts
//
//	global.get $fuel
//	i32.eqz
//	if
//	  i32.const 0
//	  memory.grow     ;; grows by nothing, but exits to the host
//	  drop
//	  global.get $interrupt
//	  if
//	    unreachable
//	  end
//	  i32.const fuelPerCheck
//	  global.set $fuel
//	end
//	global.get $fuel
//	i32.const 1
//	i32.sub
//	global.set $fuel
//
// To stop a call, the host sets $interrupt from another goroutine; the
// module traps within fuelPerCheck loop iterations (straight-line code
// ends by itself, and recursion by stack overflow). The periodic exit to
// the host matters as much as the flag: JIT code is not preemptible, so
// without it a spinning module would stall the Go runtime's
// stop-the-world phases, and with them the very goroutine that sets the
// flag. A module the rewriter cannot parse falls back to
// WithCloseOnContextDone.

// fuelPerCheck is how many loop iterations run between two checks.
const fuelPerCheck = 4096

const interruptExport = "__edgefleet_interrupt"

var errInstrument = errors.New("instrumenting module")

// Section ids of the WebAssembly binary format.
const (
	secCustom    = 0
	secImport    = 2
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
)

type section struct {
	id   byte
	body []byte
}

// instrument returns a copy of wasm with the interrupt global and the loop
// checks added. It validates what it walks only as far as it needs to: the
// result is compiled (and fully validated) by wazero afterwards.
func instrument(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || string(wasm[4:8]) != "\x01\x00\x00\x00" {
		return nil, fmt.Errorf("%w: not a WebAssembly 1.0 binary", errInstrument)
	}
	r := &reader{b: wasm[8:]}
	var secs []section
	for !r.done() {
		id := r.byte()
		n := r.u32()
		body := r.bytes(int(n))
		if r.err != nil {
			return nil, fmt.Errorf("%w: section %d: %w", errInstrument, id, r.err)
		}
		if id == secCustom && strings.HasPrefix(customName(body), ".debug_") {
			continue // DWARF addresses code offsets this rewrite moves
		}
		secs = append(secs, section{id, body})
	}

	importedGlobals, err := countImportedGlobals(secs)
	if err != nil {
		return nil, err
	}
	definedGlobals := 0
	gi := findSection(secs, secGlobal)
	if gi >= 0 {
		gr := &reader{b: secs[gi].body}
		definedGlobals = int(gr.u32())
		if gr.err != nil {
			return nil, fmt.Errorf("%w: global section: %w", errInstrument, gr.err)
		}
	}
	flag := uint32(importedGlobals + definedGlobals)
	fuel := flag + 1

	// The globals: mutable i32s initialized by (i32.const 0) and
	// (i32.const fuelPerCheck).
	globals := []byte{0x7f, 0x01, 0x41, 0x00, 0x0b, 0x7f, 0x01, 0x41}
	globals = appendS32(globals, fuelPerCheck)
	globals = append(globals, 0x0b)
	if gi >= 0 {
		secs[gi].body = appendToVec(secs[gi].body, 2, globals)
	} else {
		secs = insertSection(secs, section{secGlobal, append([]byte{2}, globals...)}, secExport, secStart, secElement, secDataCount, secCode, secData)
	}

	export := appendName(nil, interruptExport)
	export = append(export, 0x03) // global
	export = appendU32(export, flag)
	if ei := findSection(secs, secExport); ei >= 0 {
		if err := checkExportName(secs[ei].body); err != nil {
			return nil, err
		}
		secs[ei].body = appendToVec(secs[ei].body, 1, export)
	} else {
		secs = insertSection(secs, section{secExport, append([]byte{1}, export...)}, secStart, secElement, secDataCount, secCode, secData)
	}

	if ci := findSection(secs, secCode); ci >= 0 {
		body, err := instrumentCode(secs[ci].body, flag, fuel)
		if err != nil {
			return nil, err
		}
		secs[ci].body = body
	}

	out := make([]byte, 0, len(wasm)+len(wasm)/16+64)
	out = append(out, wasm[:8]...)
	for _, s := range secs {
		out = append(out, s.id)
		out = appendU32(out, uint32(len(s.body)))
		out = append(out, s.body...)
	}
	return out, nil
}

func customName(body []byte) string {
	r := &reader{b: body}
	n := r.u32()
	name := r.bytes(int(n))
	if r.err != nil {
		return ""
	}
	return string(name)
}

func findSection(secs []section, id byte) int {
	for i, s := range secs {
		if s.id == id {
			return i
		}
	}
	return -1
}

// insertSection inserts s before the first section whose id is in before
// (the binary format orders its known sections), or at the end.
func insertSection(secs []section, s section, before ...byte) []section {
	for i, x := range secs {
		for _, id := range before {
			if x.id == id {
				return append(secs[:i], append([]section{s}, secs[i:]...)...)
			}
		}
	}
	return append(secs, s)
}

// appendToVec adds k encoded entries to a vector (count-prefixed) body.
func appendToVec(body []byte, k uint32, entry []byte) []byte {
	r := &reader{b: body}
	n := r.u32()
	rest := r.b
	out := appendU32(make([]byte, 0, len(body)+len(entry)+5), n+k)
	out = append(out, rest...)
	return append(out, entry...)
}

func countImportedGlobals(secs []section) (int, error) {
	i := findSection(secs, secImport)
	if i < 0 {
		return 0, nil
	}
	r := &reader{b: secs[i].body}
	globals := 0
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		r.bytes(int(r.u32())) // module
		r.bytes(int(r.u32())) // name
		switch kind := r.byte(); kind {
		case 0x00: // function: type index
			r.leb()
		case 0x01: // table: reftype, limits
			r.byte()
			r.limits()
		case 0x02: // memory: limits
			r.limits()
		case 0x03: // global: valtype, mutability
			r.byte()
			r.byte()
			globals++
		case 0x04: // tag: attribute, type index
			r.byte()
			r.leb()
		default:
			r.fail(fmt.Errorf("unknown import kind %#x", kind))
		}
	}
	if r.err != nil {
		return 0, fmt.Errorf("%w: import section: %w", errInstrument, r.err)
	}
	return globals, nil
}

func checkExportName(body []byte) error {
	r := &reader{b: body}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		name := r.bytes(int(r.u32()))
		r.byte()
		r.leb()
		if string(name) == interruptExport {
			return fmt.Errorf("%w: the module already exports %q", errInstrument, interruptExport)
		}
	}
	if r.err != nil {
		return fmt.Errorf("%w: export section: %w", errInstrument, r.err)
	}
	return nil
}

// instrumentCode rewrites every function body of the code section.
func instrumentCode(body []byte, flag, fuel uint32) ([]byte, error) {
	check := loopCheck(flag, fuel)

	r := &reader{b: body}
	n := r.u32()
	out := appendU32(make([]byte, 0, len(body)+len(body)/8), n)
	var fn []byte
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		code := r.bytes(int(size))
		if r.err != nil {
			return nil, fmt.Errorf("%w: code section: %w", errInstrument, r.err)
		}
		var err error
		fn, err = instrumentFunc(fn[:0], code, check, flag)
		if err != nil {
			return nil, fmt.Errorf("%w: function body %d: %w", errInstrument, i, err)
		}
		out = appendU32(out, uint32(len(fn)))
		out = append(out, fn...)
	}
	if r.err != nil || !r.done() {
		return nil, fmt.Errorf("%w: code section: malformed", errInstrument)
	}
	return out, nil
}

// loopCheck is the code inserted at the top of every loop (see above).
func loopCheck(flag, fuel uint32) []byte {
	b := appendU32([]byte{0x23}, fuel)           // global.get $fuel
	b = append(b, 0x45, 0x04, 0x40)              // i32.eqz, if
	b = append(b, 0x41, 0x00, 0x40, 0x00)        // i32.const 0, memory.grow 0
	b = append(b, 0x1a, 0x23)                    // drop, global.get $interrupt
	b = appendU32(b, flag)                       //
	b = append(b, 0x04, 0x40, 0x00, 0x0b)        // if, unreachable, end
	b = appendS32(append(b, 0x41), fuelPerCheck) // i32.const fuelPerCheck
	b = appendU32(append(b, 0x24), fuel)         // global.set $fuel
	b = append(b, 0x0b)                          // end
	b = appendU32(append(b, 0x23), fuel)         // global.get $fuel
	b = append(b, 0x41, 0x01, 0x6b)              // i32.const 1, i32.sub
	return appendU32(append(b, 0x24), fuel)      // global.set $fuel
}

// instrumentFunc copies one function body to dst, inserting check after
// every loop's block type. It refuses global indices at or beyond flag:
// such code was invalid before the rewrite and must not reach the
// interrupt global after it.
func instrumentFunc(dst, code, check []byte, flag uint32) ([]byte, error) {
	r := &reader{b: code}
	for n := r.u32(); n > 0 && r.err == nil; n-- { // local declarations
		r.u32()
		r.leb() // value type
	}
	dst = append(dst, code[:len(code)-len(r.b)]...)
	for !r.done() && r.err == nil {
		start := len(code) - len(r.b)
		op := r.byte()
		switch {
		case op == 0x03: // loop
			r.leb()
			dst = append(dst, code[start:len(code)-len(r.b)]...)
			dst = append(dst, check...)
			continue
		case op == 0x23 || op == 0x24: // global.get, global.set
			if idx := r.u32(); r.err == nil && idx >= flag {
				return nil, fmt.Errorf("global index %d out of range", idx)
			}
		default:
			r.immediates(op)
		}
		dst = append(dst, code[start:len(code)-len(r.b)]...)
	}
	if r.err != nil {
		return nil, r.err
	}
	return dst, nil
}

// immediates skips the immediates of the instruction op.
func (r *reader) immediates(op byte) {
	switch {
	case op <= 0x01, op == 0x05, op == 0x0a, op == 0x0b, op == 0x0f, op == 0x19, op == 0x1a, op == 0x1b:
		// unreachable, nop, else, throw_ref, end, return, catch_all, drop, select
	case op == 0x02 || op == 0x04 || op == 0x06: // block, if, try: block type
		r.leb()
	case op >= 0x07 && op <= 0x09, op == 0x18: // catch, throw, rethrow, delegate
		r.leb()
	case op == 0x0c || op == 0x0d: // br, br_if
		r.leb()
	case op == 0x0e: // br_table
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			r.leb()
		}
		r.leb()
	case op == 0x10 || op == 0x12 || op == 0x14 || op == 0x15: // call, return_call, call_ref, return_call_ref
		r.leb()
	case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
		r.leb()
		r.leb()
	case op == 0x1c: // select t*
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			r.leb()
		}
	case op == 0x1f: // try_table
		r.leb()
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			switch kind := r.byte(); kind {
			case 0x00, 0x01:
				r.leb()
				r.leb()
			case 0x02, 0x03:
				r.leb()
			default:
				r.fail(fmt.Errorf("unknown catch kind %#x", kind))
			}
		}
	case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
		r.leb()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memarg()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		r.leb()
	case op == 0x41 || op == 0x42: // i32.const, i64.const
		r.leb()
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op >= 0x45 && op <= 0xc4: // numeric, sign extension
	case op == 0xd0 || op == 0xd2: // ref.null, ref.func
		r.leb()
	case op == 0xd1: // ref.is_null
	case op == 0xfc:
		r.miscImmediates(r.u32())
	case op == 0xfd:
		r.simdImmediates(r.u32())
	case op == 0xfe: // threads
		if sub := r.u32(); sub == 0x03 {
			r.byte() // atomic.fence
		} else {
			r.memarg()
		}
	default:
		r.fail(fmt.Errorf("unknown opcode %#x", op))
	}
}

func (r *reader) miscImmediates(sub uint32) {
	switch {
	case sub <= 7: // saturating truncations
	case sub == 8, sub == 10, sub == 12, sub == 14: // memory.init, memory.copy, table.init, table.copy
		r.leb()
		r.leb()
	case sub == 9, sub == 11, sub == 13, sub >= 15 && sub <= 17: // data.drop, memory.fill, elem.drop, table.grow/size/fill
		r.leb()
	default:
		r.fail(fmt.Errorf("unknown 0xfc opcode %d", sub))
	}
}

func (r *reader) simdImmediates(sub uint32) {
	switch {
	case sub <= 11, sub == 92, sub == 93: // loads, stores
		r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract/replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load/store lane
		r.memarg()
		r.byte()
	case sub <= 0x113: // the rest, relaxed SIMD included, take none
	default:
		r.fail(fmt.Errorf("unknown 0xfd opcode %d", sub))
	}
}

// reader decodes the WebAssembly binary format; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) done() bool { return len(r.b) == 0 }

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail(errors.New("unexpected end"))
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.fail(errors.New("unexpected end"))
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// leb skips one LEB128 number of up to 64 bits.
func (r *reader) leb() {
	for i := 0; i < 10; i++ {
		if r.byte()&0x80 == 0 {
			return
		}
	}
	r.fail(errors.New("LEB128 number too long"))
}

// u32 decodes an unsigned LEB128 number of up to 32 bits.
func (r *reader) u32() uint32 {
	var v uint32
	for shift := uint(0); shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 28 && c > 0x0f {
			break
		}
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail(errors.New("u32 LEB128 out of range"))
	return 0
}

func (r *reader) memarg() {
	align := r.u32()
	if align&0x40 != 0 { // multi-memory: memory index follows
		r.leb()
	}
	r.leb()
}

func (r *reader) limits() {
	flags := r.byte()
	r.leb()
	if flags&0x01 != 0 {
		r.leb()
	}
}

func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendS32 appends v as a signed LEB128 number.
func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	return append(appendU32(b, uint32(len(s))), s...)
}
