package onnx

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// datatypeOf maps an ONNX tensor element type to the tensor package's.
func datatypeOf(t ort.TensorElementDataType) (tensor.Datatype, bool) {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return tensor.FP32, true
	case ort.TensorElementDataTypeDouble:
		return tensor.FP64, true
	case ort.TensorElementDataTypeUint8:
		return tensor.Uint8, true
	case ort.TensorElementDataTypeInt8:
		return tensor.Int8, true
	case ort.TensorElementDataTypeInt16:
		return tensor.Int16, true
	case ort.TensorElementDataTypeInt32:
		return tensor.Int32, true
	case ort.TensorElementDataTypeInt64:
		return tensor.Int64, true
	case ort.TensorElementDataTypeBool:
		return tensor.Bool, true
	}
	return "", false
}

// newValue wraps data in an ONNX Runtime value without copying it: the
// OrtValue points at the Go slice, which must stay alive (and unchanged)
// until the value is destroyed. A rank-0 shape becomes an ONNX scalar.
func newValue[T ort.TensorData](shape []int64, data []T) (ort.Value, error) {
	if len(shape) == 0 {
		return ort.NewScalar(data[0])
	}
	return ort.NewTensor(ort.Shape(shape), data)
}

// toValue converts t (already checked for consistency) to an ONNX Runtime
// value sharing t's data.
func toValue(t tensor.Tensor) (ort.Value, error) {
	for i, d := range t.Shape {
		if d == 0 {
			// Empty tensors cannot cross the onnxruntime_go boundary
			// reliably (it refuses zero dimensions for outputs).
			return nil, fmt.Errorf("tensor %q: %w: shape %v has a zero-size dimension %d; empty tensors are not supported", t.Name, tensor.ErrShape, t.Shape, i)
		}
	}
	switch v := t.Data.(type) {
	case []float32:
		return newValue(t.Shape, v)
	case []float64:
		return newValue(t.Shape, v)
	case []int64:
		return newValue(t.Shape, v)
	case []int32:
		return newValue(t.Shape, v)
	case []int16:
		return newValue(t.Shape, v)
	case []int8:
		return newValue(t.Shape, v)
	case []uint8:
		return newValue(t.Shape, v)
	case []bool:
		return newValue(t.Shape, v)
	}
	return nil, fmt.Errorf("tensor %q: %w: data of type %T", t.Name, tensor.ErrData, t.Data)
}

// fromValue converts an ONNX Runtime output to a tensor. onnxruntime_go
// has already copied auto-allocated outputs into Go memory, so the data
// slice is taken over as is (no further copy) and stays valid after the
// value is destroyed. The caller destroys v.
func fromValue(name string, v ort.Value) (tensor.Tensor, error) {
	t := tensor.Tensor{Name: name, Shape: []int64(v.GetShape())}
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		t.Datatype, t.Data = tensor.FP32, x.GetData()
	case *ort.Tensor[float64]:
		t.Datatype, t.Data = tensor.FP64, x.GetData()
	case *ort.Tensor[int64]:
		t.Datatype, t.Data = tensor.Int64, x.GetData()
	case *ort.Tensor[int32]:
		t.Datatype, t.Data = tensor.Int32, x.GetData()
	case *ort.Tensor[int16]:
		t.Datatype, t.Data = tensor.Int16, x.GetData()
	case *ort.Tensor[int8]:
		t.Datatype, t.Data = tensor.Int8, x.GetData()
	case *ort.Tensor[uint8]:
		t.Datatype, t.Data = tensor.Uint8, x.GetData()
	case *ort.Tensor[bool]:
		t.Datatype, t.Data = tensor.Bool, x.GetData()
	case *ort.Scalar[float32]:
		t.Datatype, t.Data, t.Shape = tensor.FP32, []float32{x.GetData()}, []int64{}
	case *ort.Scalar[float64]:
		t.Datatype, t.Data, t.Shape = tensor.FP64, []float64{x.GetData()}, []int64{}
	case *ort.Scalar[int64]:
		t.Datatype, t.Data, t.Shape = tensor.Int64, []int64{x.GetData()}, []int64{}
	case *ort.Scalar[int32]:
		t.Datatype, t.Data, t.Shape = tensor.Int32, []int32{x.GetData()}, []int64{}
	case *ort.Scalar[int16]:
		t.Datatype, t.Data, t.Shape = tensor.Int16, []int16{x.GetData()}, []int64{}
	case *ort.Scalar[int8]:
		t.Datatype, t.Data, t.Shape = tensor.Int8, []int8{x.GetData()}, []int64{}
	case *ort.Scalar[uint8]:
		t.Datatype, t.Data, t.Shape = tensor.Uint8, []uint8{x.GetData()}, []int64{}
	case *ort.Scalar[bool]:
		t.Datatype, t.Data, t.Shape = tensor.Bool, []bool{x.GetData()}, []int64{}
	default:
		return tensor.Tensor{}, fmt.Errorf("%w: output %q has unsupported ONNX value %T", ErrModel, name, v)
	}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	return t, nil
}

// newOutput preallocates a Go-backed output of dt that ONNX Runtime
// writes into: an ONNX scalar when scalar is set (rank-0 outputs, which
// onnxruntime_go cannot allocate itself), else a tensor of shape.
func newOutput(dt tensor.Datatype, scalar bool, shape []int64) (ort.Value, error) {
	switch dt {
	case tensor.FP32:
		return newEmpty[float32](scalar, shape)
	case tensor.FP64:
		return newEmpty[float64](scalar, shape)
	case tensor.Int64:
		return newEmpty[int64](scalar, shape)
	case tensor.Int32:
		return newEmpty[int32](scalar, shape)
	case tensor.Int16:
		return newEmpty[int16](scalar, shape)
	case tensor.Int8:
		return newEmpty[int8](scalar, shape)
	case tensor.Uint8:
		return newEmpty[uint8](scalar, shape)
	case tensor.Bool:
		return newEmpty[bool](scalar, shape)
	}
	if scalar {
		return nil, fmt.Errorf("%w: unsupported scalar output type %s", ErrModel, dt)
	}
	return nil, ErrModel
}

// newEmpty allocates the scalar or tensor newOutput describes.
func newEmpty[T ort.TensorData](scalar bool, shape []int64) (ort.Value, error) {
	if scalar {
		return ort.NewEmptyScalar[T]()
	}
	return ort.NewEmptyTensor[T](ort.Shape(shape))
}
