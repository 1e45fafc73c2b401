package api

// Decoding tensor data: a (nested) JSON array parsed straight into a
// typed slice of the datatype, without recursion, with the element at
// fault named in errors.

import (
	"math"
	"strconv"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// elems is decoded tensor data: v is a typed slice, len its length.
type elems struct {
	v   any
	len int
}

// data decodes tensor data, a possibly nested array of values of dt, into
// a typed slice. shape (if known) sizes the slice up front, bounded by what
// the remaining body can hold so a huge shape cannot force a huge
// allocation.
func (d *decoder) data(path jpath, dt tensor.Datatype, shape []int64) (*elems, error) {
	if null, err := d.null(path); null || err != nil {
		if err != nil {
			return nil, err
		}
		return nil, d.errorf(path, "%w: data is null", tensor.ErrData)
	}
	if d.peek() != '[' {
		return nil, d.wrongType(path, "%w: data must be an array", tensor.ErrData)
	}
	capHint := 0
	if shape != nil {
		if n := tensor.Elements(shape); n > 0 {
			room := int64(len(d.b)-d.i)/2 + 1
			capHint = int(min(n, room))
		}
	}
	switch dt {
	case tensor.FP32:
		return typed(parseData(d, path, make([]float32, 0, capHint), floating[float32](d, path, dt)))
	case tensor.FP64:
		return typed(parseData(d, path, make([]float64, 0, capHint), floating[float64](d, path, dt)))
	case tensor.Int64:
		return typed(parseData(d, path, make([]int64, 0, capHint), numeric(d, path, dt, parseInt[int64](math.MinInt64, math.MaxInt64))))
	case tensor.Int32:
		return typed(parseData(d, path, make([]int32, 0, capHint), numeric(d, path, dt, parseInt[int32](math.MinInt32, math.MaxInt32))))
	case tensor.Int16:
		return typed(parseData(d, path, make([]int16, 0, capHint), numeric(d, path, dt, parseInt[int16](math.MinInt16, math.MaxInt16))))
	case tensor.Int8:
		return typed(parseData(d, path, make([]int8, 0, capHint), numeric(d, path, dt, parseInt[int8](math.MinInt8, math.MaxInt8))))
	case tensor.Uint8:
		return typed(parseData(d, path, make([]uint8, 0, capHint), numeric(d, path, dt, parseInt[uint8](0, math.MaxUint8))))
	case tensor.Bool:
		return typed(parseData(d, path, make([]bool, 0, capHint), d.boolean(path)))
	}
	return nil, d.errorf(path, "%w: unknown datatype %q", tensor.ErrDatatype, dt)
}

func typed[T any](v []T, err error) (*elems, error) {
	if err != nil {
		return nil, err
	}
	return &elems{v, len(v)}, nil
}

type integer interface {
	~uint8 | ~int8 | ~int16 | ~int32 | ~int64
}

func parseInt[T integer](lo, hi int64) func([]byte) (T, bool) {
	return func(n []byte) (T, bool) {
		x, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || x < lo || x > hi {
			return 0, false
		}
		return T(x), true
	}
}

// parseData appends the scalars of a (nested) array to out, iterating
// rather than recursing; scalar parses one element that is neither '[' nor
// ']' (c is its first byte).
func parseData[T any](d *decoder, path jpath, out []T, scalar func(c byte, i int) (T, error)) ([]T, error) {
	const (
		valueOrClose = iota // after '['
		value               // after ','
		commaOrClose        // after a value or a closed array
	)
	d.i++ // the '[' checked by the caller
	depth, state := 1, valueOrClose
	for {
		d.ws()
		if d.i >= len(d.b) {
			return nil, d.syntax(path, "']'")
		}
		c := d.b[d.i]
		switch {
		case state == commaOrClose && c == ',':
			d.i++
			state = value
		case (state == commaOrClose || state == valueOrClose) && c == ']':
			d.i++
			depth--
			if depth == 0 {
				return out, nil
			}
			state = commaOrClose
		case state == commaOrClose:
			return nil, d.syntax(path, "',' or ']'")
		case c == '[':
			depth++
			if depth > maxDepth {
				return nil, d.errorf(path, "%w: data nested deeper than %d levels", tensor.ErrData, maxDepth)
			}
			d.i++
			state = valueOrClose
		default:
			x, err := scalar(c, len(out))
			if err != nil {
				return nil, err
			}
			out = append(out, x)
			state = commaOrClose
		}
	}
}

// numeric returns a scalar parser for numbers of dt.
func numeric[T any](d *decoder, path jpath, dt tensor.Datatype, parse func([]byte) (T, bool)) func(byte, int) (T, error) {
	return func(c byte, i int) (T, error) {
		var zero T
		if c != '-' && (c < '0' || c > '9') {
			return zero, d.badElement(path, c, i, dt)
		}
		n, err := d.number(path)
		if err != nil {
			return zero, err
		}
		x, ok := parse(n)
		if !ok {
			return zero, d.errorf(path, "%w: element %d: %s is not %s", tensor.ErrData, i, n, article(dt))
		}
		return x, nil
	}
}

// floating returns a scalar parser for FP32 or FP64 numbers.
func floating[T float32 | float64](d *decoder, path jpath, dt tensor.Datatype) func(byte, int) (T, error) {
	bits := 64
	if dt == tensor.FP32 {
		bits = 32
	}
	return func(c byte, i int) (T, error) {
		if c != '-' && (c < '0' || c > '9') {
			return 0, d.badElement(path, c, i, dt)
		}
		start := d.i
		f, ok, err := d.float(path, bits)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, d.errorf(path, "%w: element %d: %s is not %s", tensor.ErrData, i, d.b[start:d.i], article(dt))
		}
		return T(f), nil
	}
}

// boolean parses a BOOL element.
func (d *decoder) boolean(path jpath) func(byte, int) (bool, error) {
	return func(c byte, i int) (bool, error) {
		switch c {
		case 't':
			return true, d.literal("true", path)
		case 'f':
			return false, d.literal("false", path)
		}
		return false, d.badElement(path, c, i, tensor.Bool)
	}
}

// badElement explains an element that cannot be one of dt.
func (d *decoder) badElement(path jpath, c byte, i int, dt tensor.Datatype) error {
	var what string
	switch {
	case c == 't' || c == 'f':
		what = "boolean"
	case c == '-' || (c >= '0' && c <= '9'):
		what = "number"
	case c == '"':
		what = "string"
	case c == 'n':
		what = "null"
	case c == '{':
		return d.errorf(path, "%w: element %d: objects are not tensor data", tensor.ErrData, i)
	default:
		return d.syntax(path, "a value")
	}
	return d.errorf(path, "%w: element %d: %s in %s data", tensor.ErrData, i, what, dt)
}

func article(dt tensor.Datatype) string {
	switch dt {
	case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64, tensor.FP32, tensor.FP64:
		return "an " + string(dt)
	}
	return "a " + string(dt)
}
