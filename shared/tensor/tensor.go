// Package tensor holds the typed tensors that cross every boundary of the
// system: the Open Inference Protocol's JSON bodies, the bundle manifest's
// smoke vectors, the WASM processor ABI and ONNX Runtime calls.
//
// Datatype names follow the Open Inference Protocol (v2): FP32, INT64, ...
// The data of a tensor is a flat, row-major Go slice whose element type
// matches the datatype ([]float32 for FP32, []int64 for INT64, ...).
package tensor

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Datatype is an Open Inference Protocol tensor datatype.
type Datatype string

// The datatypes the system supports.
const (
	Bool  Datatype = "BOOL"
	Uint8 Datatype = "UINT8"
	Int8  Datatype = "INT8"
	Int16 Datatype = "INT16"
	Int32 Datatype = "INT32"
	Int64 Datatype = "INT64"
	FP32  Datatype = "FP32"
	FP64  Datatype = "FP64"
)

// Datatypes lists every supported datatype, in a stable order.
var Datatypes = []Datatype{Bool, Uint8, Int8, Int16, Int32, Int64, FP32, FP64}

// Valid reports whether d is a supported datatype.
func (d Datatype) Valid() bool {
	for _, x := range Datatypes {
		if d == x {
			return true
		}
	}
	return false
}

// Size is the size in bytes of one element of d (0 for an unknown type).
func (d Datatype) Size() int {
	switch d {
	case Bool, Uint8, Int8:
		return 1
	case Int16:
		return 2
	case Int32, FP32:
		return 4
	case Int64, FP64:
		return 8
	}
	return 0
}

// Sentinel errors callers branch on. Errors returned by this package wrap
// one of these, so errors.Is works; the message names the tensor and what
// was wrong with it.
var (
	ErrDatatype  = errors.New("datatype mismatch")
	ErrShape     = errors.New("shape mismatch")
	ErrData      = errors.New("invalid tensor data")
	ErrNotFinite = errors.New("non-finite value")
	ErrName      = errors.New("unknown or missing tensor")
)

// Tensor is a named, typed, shaped tensor. Data is a flat row-major slice:
// []bool, []uint8, []int8, []int16, []int32, []int64, []float32 or []float64
// matching Datatype.
type Tensor struct {
	Name     string   `json:"name"`
	Datatype Datatype `json:"datatype"`
	Shape    []int64  `json:"shape"`
	Data     any      `json:"data"`
}

// Spec describes a tensor a model takes or gives. A dimension of -1 is
// dynamic and accepts any positive size.
type Spec struct {
	Name     string   `json:"name"`
	Datatype Datatype `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// Elements is the number of elements a shape holds (1 for a scalar).
// It returns -1 if any dimension is negative or the product overflows.
func Elements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return -1
		}
		if d != 0 && n > math.MaxInt64/d {
			return -1
		}
		n *= d
	}
	return n
}

// Len is the number of elements in t.Data, or -1 if Data's type does not
// match Datatype.
func (t Tensor) Len() int {
	var dt Datatype
	var n int
	switch v := t.Data.(type) {
	case []bool:
		dt, n = Bool, len(v)
	case []uint8:
		dt, n = Uint8, len(v)
	case []int8:
		dt, n = Int8, len(v)
	case []int16:
		dt, n = Int16, len(v)
	case []int32:
		dt, n = Int32, len(v)
	case []int64:
		dt, n = Int64, len(v)
	case []float32:
		dt, n = FP32, len(v)
	case []float64:
		dt, n = FP64, len(v)
	default:
		return -1
	}
	if dt != t.Datatype {
		return -1
	}
	return n
}

// Check reports whether t is internally consistent: a known datatype, data
// of the matching Go type and an element count equal to the shape's.
func (t Tensor) Check() error {
	if !t.Datatype.Valid() {
		return fmt.Errorf("tensor %q: %w: unknown datatype %q", t.Name, ErrDatatype, t.Datatype)
	}
	n := t.Len()
	if n < 0 {
		return fmt.Errorf("tensor %q: %w: data of type %T does not hold %s", t.Name, ErrData, t.Data, t.Datatype)
	}
	want := Elements(t.Shape)
	if want < 0 {
		return fmt.Errorf("tensor %q: %w: invalid shape %v", t.Name, ErrShape, t.Shape)
	}
	if int64(n) != want {
		return fmt.Errorf("tensor %q: %w: shape %v holds %d elements, data has %d", t.Name, ErrShape, t.Shape, want, n)
	}
	return nil
}

// Matches checks t against a spec: name, datatype and shape (rank equal,
// every fixed dimension equal, dynamic dimensions positive), and that the
// data is consistent. Float data must be finite unless allowNonFinite.
func (s Spec) Matches(t Tensor, allowNonFinite bool) error {
	if t.Name != s.Name {
		return fmt.Errorf("tensor %q: %w: expected %q", t.Name, ErrName, s.Name)
	}
	if t.Datatype != s.Datatype {
		return fmt.Errorf("tensor %q: %w: got %s, model expects %s", t.Name, ErrDatatype, t.Datatype, s.Datatype)
	}
	if len(t.Shape) != len(s.Shape) {
		return fmt.Errorf("tensor %q: %w: got shape %v (rank %d), model expects %v (rank %d)", t.Name, ErrShape, t.Shape, len(t.Shape), s.Shape, len(s.Shape))
	}
	for i, d := range s.Shape {
		got := t.Shape[i]
		if got <= 0 || (d >= 0 && got != d) {
			return fmt.Errorf("tensor %q: %w: got shape %v, model expects %v (dimension %d)", t.Name, ErrShape, t.Shape, s.Shape, i)
		}
	}
	if err := t.Check(); err != nil {
		return err
	}
	if !allowNonFinite {
		if i, ok := firstNonFinite(t.Data); ok {
			return fmt.Errorf("tensor %q: %w at element %d", t.Name, ErrNotFinite, i)
		}
	}
	return nil
}

func firstNonFinite(data any) (int, bool) {
	switch v := data.(type) {
	case []float32:
		for i, x := range v {
			f := float64(x)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return i, true
			}
		}
	case []float64:
		for i, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return i, true
			}
		}
	}
	return 0, false
}

// Float64s returns t's data converted to float64, for comparisons and
// statistics. Booleans become 0 or 1.
func (t Tensor) Float64s() ([]float64, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	switch v := t.Data.(type) {
	case []float64:
		return append([]float64(nil), v...), nil
	case []float32:
		return convert(v), nil
	case []int64:
		return convert(v), nil
	case []int32:
		return convert(v), nil
	case []int16:
		return convert(v), nil
	case []int8:
		return convert(v), nil
	case []uint8:
		return convert(v), nil
	case []bool:
		out := make([]float64, len(v))
		for i, b := range v {
			if b {
				out[i] = 1
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q: %w: data of type %T", t.Name, ErrData, t.Data)
}

type number interface {
	~float32 | ~float64 | ~int64 | ~int32 | ~int16 | ~int8 | ~uint8
}

func convert[T number](v []T) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// Close reports whether got is within tolerance of want: same name,
// datatype and shape, and every element within atol + rtol*|want|.
func Close(got, want Tensor, atol, rtol float64) error {
	if got.Datatype != want.Datatype {
		return fmt.Errorf("tensor %q: %w: got %s, want %s", want.Name, ErrDatatype, got.Datatype, want.Datatype)
	}
	if !slices.Equal(got.Shape, want.Shape) {
		return fmt.Errorf("tensor %q: %w: got %v, want %v", want.Name, ErrShape, got.Shape, want.Shape)
	}
	g, err := got.Float64s()
	if err != nil {
		return err
	}
	w, err := want.Float64s()
	if err != nil {
		return err
	}
	for i := range w {
		if math.IsNaN(g[i]) || math.Abs(g[i]-w[i]) > atol+rtol*math.Abs(w[i]) {
			return fmt.Errorf("tensor %q: element %d is %g, want %g (atol %g, rtol %g)", want.Name, i, g[i], w[i], atol, rtol)
		}
	}
	return nil
}

// Zeros returns a tensor of the given spec's datatype filled with zeros;
// dynamic dimensions must have been resolved in shape.
func Zeros(name string, dt Datatype, shape []int64) (Tensor, error) {
	n := Elements(shape)
	if n < 0 {
		return Tensor{}, fmt.Errorf("tensor %q: %w: invalid shape %v", name, ErrShape, shape)
	}
	var data any
	switch dt {
	case Bool:
		data = make([]bool, n)
	case Uint8:
		data = make([]uint8, n)
	case Int8:
		data = make([]int8, n)
	case Int16:
		data = make([]int16, n)
	case Int32:
		data = make([]int32, n)
	case Int64:
		data = make([]int64, n)
	case FP32:
		data = make([]float32, n)
	case FP64:
		data = make([]float64, n)
	default:
		return Tensor{}, fmt.Errorf("tensor %q: %w: unknown datatype %q", name, ErrDatatype, dt)
	}
	return Tensor{Name: name, Datatype: dt, Shape: append([]int64(nil), shape...), Data: data}, nil
}
