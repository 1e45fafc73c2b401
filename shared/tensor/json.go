package tensor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// MarshalJSON writes t in the Open Inference Protocol's form, with data as
// a flat JSON array (never base64, also for UINT8).
func (t Tensor) MarshalJSON() ([]byte, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(`{"name":`)
	name, _ := json.Marshal(t.Name)
	b.Write(name)
	b.WriteString(`,"datatype":"`)
	b.WriteString(string(t.Datatype))
	b.WriteString(`","shape":[`)
	for i, d := range t.Shape {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteString(`],"data":[`)
	buf := make([]byte, 0, 32)
	switch v := t.Data.(type) {
	case []bool:
		for i, x := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatBool(x))
		}
	case []uint8:
		writeInts(&b, buf, v)
	case []int8:
		writeInts(&b, buf, v)
	case []int16:
		writeInts(&b, buf, v)
	case []int32:
		writeInts(&b, buf, v)
	case []int64:
		writeInts(&b, buf, v)
	case []float32:
		for i, x := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeFloat(&b, buf, float64(x), 32); err != nil {
				return nil, fmt.Errorf("tensor %q element %d: %w", t.Name, i, err)
			}
		}
	case []float64:
		for i, x := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeFloat(&b, buf, x, 64); err != nil {
				return nil, fmt.Errorf("tensor %q element %d: %w", t.Name, i, err)
			}
		}
	}
	b.WriteString(`]}`)
	return b.Bytes(), nil
}

type integer interface {
	~uint8 | ~int8 | ~int16 | ~int32 | ~int64
}

func writeInts[T integer](b *bytes.Buffer, buf []byte, v []T) {
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(strconv.AppendInt(buf[:0], int64(x), 10))
	}
}

func writeFloat(b *bytes.Buffer, buf []byte, x float64, bits int) error {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return fmt.Errorf("%w: %v cannot be written as JSON", ErrNotFinite, x)
	}
	b.Write(strconv.AppendFloat(buf[:0], x, 'g', -1, bits))
	return nil
}

// rawTensor is the wire form before the data is typed.
type rawTensor struct {
	Name     string          `json:"name"`
	Datatype Datatype        `json:"datatype"`
	Shape    []int64         `json:"shape"`
	Data     json.RawMessage `json:"data"`
}

// UnmarshalJSON reads a tensor in the Open Inference Protocol's form. Data
// may be flat or nested (row-major); values must fit the datatype. The
// element count is checked against the shape.
func (t *Tensor) UnmarshalJSON(b []byte) error {
	var r rawTensor
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%w: %v", ErrData, err)
	}
	if r.Name == "" {
		return fmt.Errorf("%w: tensor without a name", ErrName)
	}
	if !r.Datatype.Valid() {
		return fmt.Errorf("tensor %q: %w: unknown datatype %q", r.Name, ErrDatatype, r.Datatype)
	}
	if r.Shape == nil {
		return fmt.Errorf("tensor %q: %w: missing shape", r.Name, ErrShape)
	}
	if len(r.Data) == 0 {
		return fmt.Errorf("tensor %q: %w: missing data", r.Name, ErrData)
	}
	n := Elements(r.Shape)
	if n < 0 {
		return fmt.Errorf("tensor %q: %w: invalid shape %v", r.Name, ErrShape, r.Shape)
	}
	vals, err := flatten(r.Data, r.Datatype)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", r.Name, err)
	}
	if int64(vals.len()) != n {
		return fmt.Errorf("tensor %q: %w: shape %v holds %d elements, data has %d", r.Name, ErrShape, r.Shape, n, vals.len())
	}
	data, err := vals.typed(r.Datatype)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", r.Name, err)
	}
	*t = Tensor{Name: r.Name, Datatype: r.Datatype, Shape: r.Shape, Data: data}
	return nil
}

// values collects decoded elements: numbers as json.Number, or booleans.
type values struct {
	nums  []json.Number
	bools []bool
}

func (v *values) len() int { return len(v.nums) + len(v.bools) }

// flatten decodes a (possibly nested) JSON array of scalars.
func flatten(raw json.RawMessage, dt Datatype) (*values, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v := &values{}
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if depth == 0 && v.len() > 0 {
				return v, nil
			}
			return nil, fmt.Errorf("%w: %v", ErrData, err)
		}
		switch x := tok.(type) {
		case json.Delim:
			switch x {
			case '[':
				depth++
			case ']':
				depth--
				if depth == 0 {
					if dec.More() {
						return nil, fmt.Errorf("%w: trailing data after array", ErrData)
					}
					return v, nil
				}
			default:
				return nil, fmt.Errorf("%w: objects are not tensor data", ErrData)
			}
		case json.Number:
			if depth == 0 {
				return nil, fmt.Errorf("%w: data must be an array", ErrData)
			}
			if dt == Bool {
				return nil, fmt.Errorf("%w: number %s in BOOL data", ErrData, x)
			}
			v.nums = append(v.nums, x)
		case bool:
			if depth == 0 {
				return nil, fmt.Errorf("%w: data must be an array", ErrData)
			}
			if dt != Bool {
				return nil, fmt.Errorf("%w: boolean in %s data", ErrData, dt)
			}
			v.bools = append(v.bools, x)
		default:
			return nil, fmt.Errorf("%w: unexpected %v in %s data", ErrData, tok, dt)
		}
	}
}

func (v *values) typed(dt Datatype) (any, error) {
	switch dt {
	case Bool:
		return v.bools, nil
	case FP32:
		return parseFloats[float32](v.nums, 32, dt)
	case FP64:
		return parseFloats[float64](v.nums, 64, dt)
	case Uint8:
		return parseInts[uint8](v.nums, 0, math.MaxUint8, dt)
	case Int8:
		return parseInts[int8](v.nums, math.MinInt8, math.MaxInt8, dt)
	case Int16:
		return parseInts[int16](v.nums, math.MinInt16, math.MaxInt16, dt)
	case Int32:
		return parseInts[int32](v.nums, math.MinInt32, math.MaxInt32, dt)
	case Int64:
		return parseInts[int64](v.nums, math.MinInt64, math.MaxInt64, dt)
	}
	return nil, fmt.Errorf("%w: unknown datatype %q", ErrDatatype, dt)
}

func parseInts[T integer](nums []json.Number, lo, hi int64, dt Datatype) ([]T, error) {
	out := make([]T, len(nums))
	for i, n := range nums {
		x, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || x < lo || x > hi {
			return nil, fmt.Errorf("%w: element %d: %s is not an %s", ErrData, i, n, dt)
		}
		out[i] = T(x)
	}
	return out, nil
}

func parseFloats[T float32 | float64](nums []json.Number, bits int, dt Datatype) ([]T, error) {
	out := make([]T, len(nums))
	for i, n := range nums {
		f, err := strconv.ParseFloat(string(n), bits)
		if err != nil {
			return nil, fmt.Errorf("%w: element %d: %s is not an %s", ErrData, i, n, dt)
		}
		out[i] = T(f)
	}
	return out, nil
}
