// Package npy reads NumPy .npy files holding a two-dimensional array of
// little-endian float32 or float64 (descr '<f4' or '<f8'), in C or Fortran
// order: the form in which publishers usually have their pre-processed
// model inputs. The reader is strict: anything else (other dtypes, big
// endian, object arrays, other ranks, a header that is not exactly the
// dictionary NumPy writes, missing or trailing data) is an error, and a
// header that promises more data than the file holds cannot make it
// allocate more than it reads.
package npy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ErrFormat is wrapped by every error about the file's content.
var ErrFormat = errors.New("npy: invalid file")

// magic starts every .npy file.
const magic = "\x93NUMPY"

// MaxHeader bounds the header length (NumPy writes under 200 bytes; files
// with huge shapes stay far below this).
const MaxHeader = 1 << 16

// Array is a two-dimensional array in row-major order.
type Array struct {
	Rows, Cols int
	// Data holds Rows·Cols values, row after row; float32 values are
	// converted exactly.
	Data []float64
	// Float32 says the file held float32.
	Float32 bool
}

// At returns the element at row i, column j.
func (a *Array) At(i, j int) float64 { return a.Data[i*a.Cols+j] }

// Column returns a copy of column j.
func (a *Array) Column(j int) []float64 {
	out := make([]float64, a.Rows)
	for i := range out {
		out[i] = a.Data[i*a.Cols+j]
	}
	return out
}

// Read reads one .npy array from r. maxElements (> 0) bounds Rows·Cols.
func Read(r io.Reader, maxElements int) (*Array, error) {
	br := bufio.NewReader(r)
	var pre [8]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return nil, fmt.Errorf("%w: reading the magic and version: %w", ErrFormat, err)
	}
	if string(pre[:6]) != magic {
		return nil, fmt.Errorf("%w: no \\x93NUMPY magic at the start", ErrFormat)
	}
	major, minor := pre[6], pre[7]
	var hlen int
	switch major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, fmt.Errorf("%w: reading the header length: %w", ErrFormat, err)
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, fmt.Errorf("%w: reading the header length: %w", ErrFormat, err)
		}
		n := binary.LittleEndian.Uint32(b[:])
		if n > MaxHeader {
			return nil, fmt.Errorf("%w: header of %d bytes (at most %d)", ErrFormat, n, MaxHeader)
		}
		hlen = int(n)
	default:
		return nil, fmt.Errorf("%w: format version %d.%d (want 1.0, 2.0 or 3.0)", ErrFormat, major, minor)
	}
	if minor != 0 {
		return nil, fmt.Errorf("%w: format version %d.%d (want 1.0, 2.0 or 3.0)", ErrFormat, major, minor)
	}
	header := make([]byte, hlen)
	if _, err := io.ReadFull(br, header); err != nil {
		return nil, fmt.Errorf("%w: reading the %d-byte header: %w", ErrFormat, hlen, err)
	}
	h, err := parseHeader(header)
	if err != nil {
		return nil, err
	}
	if len(h.shape) != 2 {
		return nil, fmt.Errorf("%w: shape %v has %d dimensions, want 2 (rows, columns)", ErrFormat, h.shape, len(h.shape))
	}
	rows, cols := h.shape[0], h.shape[1]
	if cols == 0 || rows == 0 {
		return nil, fmt.Errorf("%w: shape %v is empty", ErrFormat, h.shape)
	}
	if maxElements <= 0 || rows > maxElements/cols {
		return nil, fmt.Errorf("%w: shape %v has more than %d elements", ErrFormat, h.shape, maxElements)
	}
	size := 8
	if h.float32 {
		size = 4
	}
	n := rows * cols
	// Read in chunks so that a header promising more than the file
	// holds costs no more memory than the file.
	raw, err := readUpTo(br, int64(n)*int64(size))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %d×%d %s values: %w", ErrFormat, rows, cols, h.descr, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			return nil, fmt.Errorf("%w: data continues after the %d×%d array", ErrFormat, rows, cols)
		}
		return nil, fmt.Errorf("npy: reading past the array: %w", err)
	}
	a := &Array{Rows: rows, Cols: cols, Data: make([]float64, n), Float32: h.float32}
	for k := range n {
		// File order is row-major (C) or column-major (Fortran).
		i, j := k/cols, k%cols
		if h.fortran {
			i, j = k%rows, k/rows
		}
		var v float64
		if h.float32 {
			v = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*k:])))
		} else {
			v = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*k:]))
		}
		a.Data[i*cols+j] = v
	}
	return a, nil
}

func readUpTo(r io.Reader, n int64) ([]byte, error) {
	const chunk = 1 << 20
	buf := make([]byte, 0, min(n, chunk))
	for int64(len(buf)) < n {
		want := min(n-int64(len(buf)), chunk)
		start := len(buf)
		buf = append(buf, make([]byte, want)...)
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("the file ends early (%d of %d bytes): %w", start, n, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
	}
	return buf, nil
}

type header struct {
	descr   string
	float32 bool
	fortran bool
	shape   []int
}

// parseHeader parses the Python dict literal NumPy writes, e.g.
// {'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }
// padded with spaces and ending in a newline. Exactly the keys descr,
// fortran_order and shape, each once.
func parseHeader(b []byte) (*header, error) {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%w: header does not end with a newline", ErrFormat)
	}
	for _, c := range b {
		if c >= 0x80 || (c < 0x20 && c != '\n') {
			return nil, fmt.Errorf("%w: header is not printable ASCII", ErrFormat)
		}
	}
	p := &parser{s: string(bytes.TrimRight(b, " \n"))}
	var h header
	seen := map[string]bool{}
	if !p.eat('{') {
		return nil, p.fail("'{'")
	}
	for {
		p.space()
		if p.eat('}') {
			break
		}
		key, ok := p.str()
		if !ok {
			return nil, p.fail("a quoted key or '}'")
		}
		if seen[key] {
			return nil, fmt.Errorf("%w: header key %q repeated", ErrFormat, key)
		}
		seen[key] = true
		p.space()
		if !p.eat(':') {
			return nil, p.fail("':'")
		}
		p.space()
		switch key {
		case "descr":
			d, ok := p.str()
			if !ok {
				return nil, p.fail("a quoted descr")
			}
			switch d {
			case "<f8":
			case "<f4":
				h.float32 = true
			default:
				return nil, fmt.Errorf("%w: dtype %q (want '<f4' or '<f8': little-endian float32 or float64)", ErrFormat, d)
			}
			h.descr = d
		case "fortran_order":
			switch {
			case p.word("True"):
				h.fortran = true
			case p.word("False"):
			default:
				return nil, p.fail("True or False")
			}
		case "shape":
			s, err := p.tuple()
			if err != nil {
				return nil, err
			}
			h.shape = s
		default:
			return nil, fmt.Errorf("%w: unexpected header key %q", ErrFormat, key)
		}
		p.space()
		if p.eat(',') {
			continue
		}
		p.space()
		if p.eat('}') {
			break
		}
		return nil, p.fail("',' or '}'")
	}
	if p.i != len(p.s) {
		return nil, p.fail("the end of the header")
	}
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return nil, fmt.Errorf("%w: header lacks %q", ErrFormat, k)
		}
	}
	return &h, nil
}

type parser struct {
	s string
	i int
}

func (p *parser) fail(want string) error {
	got := p.s[p.i:]
	if len(got) > 20 {
		got = got[:20] + "..."
	}
	return fmt.Errorf("%w: header: want %s at offset %d, found %q", ErrFormat, want, p.i, got)
}

func (p *parser) space() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *parser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *parser) word(w string) bool {
	if strings.HasPrefix(p.s[p.i:], w) {
		p.i += len(w)
		return true
	}
	return false
}

// str parses a single- or double-quoted string without escapes.
func (p *parser) str() (string, bool) {
	if p.i >= len(p.s) || (p.s[p.i] != '\'' && p.s[p.i] != '"') {
		return "", false
	}
	q := p.s[p.i]
	end := strings.IndexByte(p.s[p.i+1:], q)
	if end < 0 {
		return "", false
	}
	v := p.s[p.i+1 : p.i+1+end]
	if strings.ContainsRune(v, '\\') {
		return "", false
	}
	p.i += end + 2
	return v, true
}

// tuple parses (), (n,) or (n, m, ...) of non-negative integers.
func (p *parser) tuple() ([]int, error) {
	if !p.eat('(') {
		return nil, p.fail("'(' starting the shape")
	}
	var out []int
	for {
		p.space()
		if p.eat(')') {
			return out, nil
		}
		start := p.i
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		if start == p.i {
			return nil, p.fail("a dimension")
		}
		if p.i-start > 1 && p.s[start] == '0' {
			return nil, fmt.Errorf("%w: header: dimension %q has a leading zero", ErrFormat, p.s[start:p.i])
		}
		n, err := strconv.Atoi(p.s[start:p.i])
		if err != nil || n > math.MaxInt32 {
			return nil, fmt.Errorf("%w: header: dimension %q out of range", ErrFormat, p.s[start:p.i])
		}
		out = append(out, n)
		if len(out) > 32 {
			return nil, fmt.Errorf("%w: header: more than 32 dimensions", ErrFormat)
		}
		p.space()
		if p.eat(',') {
			continue
		}
		p.space()
		if p.eat(')') {
			return out, nil
		}
		return nil, p.fail("',' or ')' in the shape")
	}
}

// Write writes a as a version 1.0 .npy file of little-endian float64 (or
// float32 when a.Float32), C order: for tests and tools.
func Write(w io.Writer, a *Array) error {
	if a.Rows*a.Cols != len(a.Data) {
		return fmt.Errorf("npy: %d×%d array with %d values", a.Rows, a.Cols, len(a.Data))
	}
	descr, size := "<f8", 8
	if a.Float32 {
		descr, size = "<f4", 4
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }", descr, a.Rows, a.Cols)
	// Pad so that the data starts on a 64-byte boundary, like NumPy.
	total := len(magic) + 2 + 2 + len(h) + 1
	h += strings.Repeat(" ", (64-total%64)%64) + "\n"
	buf := make([]byte, 0, len(magic)+4+len(h)+size*len(a.Data))
	buf = append(buf, magic...)
	buf = append(buf, 1, 0)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(h)))
	buf = append(buf, h...)
	for _, v := range a.Data {
		if a.Float32 {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(float32(v)))
		} else {
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
		}
	}
	_, err := w.Write(buf)
	return err
}
