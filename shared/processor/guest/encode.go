//go:build wasip1

package guest

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// appendTensors is tensor.AppendBinary specialized for the guest: wasm is
// little endian, so numeric data is copied as bytes instead of element by
// element. The output is byte-for-byte the same.
func appendTensors(dst []byte, ts []tensor.Tensor) ([]byte, error) {
	dst = append(dst, "EFT1"...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(ts)))
	for _, t := range ts {
		if err := t.Check(); err != nil {
			return nil, err
		}
		if len(t.Name) > math.MaxUint16 || len(t.Shape) > 16 {
			return nil, fmt.Errorf("tensor %q: %w: name or rank too large", t.Name, tensor.ErrData)
		}
		code := -1
		for i, d := range tensor.Datatypes {
			if d == t.Datatype {
				code = i
			}
		}
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(t.Name)))
		dst = append(dst, t.Name...)
		dst = append(dst, byte(code), byte(len(t.Shape)))
		for _, d := range t.Shape {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(d))
		}
		raw := dataBytes(t.Data)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(raw)))
		dst = append(dst, raw...)
	}
	return dst, nil
}

// dataBytes views a tensor's data as its little-endian bytes (bools are
// one byte, 0 or 1, in Go as in the encoding).
func dataBytes(data any) []byte {
	switch v := data.(type) {
	case []uint8:
		return v
	case []bool:
		return view(v)
	case []int8:
		return view(v)
	case []int16:
		return view(v)
	case []int32:
		return view(v)
	case []int64:
		return view(v)
	case []float32:
		return view(v)
	case []float64:
		return view(v)
	}
	return nil
}

func view[T any](v []T) []byte {
	if len(v) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), len(v)*int(unsafe.Sizeof(zero)))
}
