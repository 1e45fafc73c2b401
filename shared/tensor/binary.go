package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The binary tensor-list encoding carries tensors across the WASM
// processor boundary (see docs/wasm-abi.md). All integers are little
// endian:
//
//	magic   "EFT1"
//	count   u32
//	count × {
//	  name_len u16, name [name_len]byte
//	  dtype    u8   (index in Datatypes: BOOL=0 … FP64=7)
//	  rank     u8,  dims [rank]i64
//	  nbytes   u32, data [nbytes]byte (row-major, little endian)
//	}
const binaryMagic = "EFT1"

// Limits on what DecodeBinary accepts.
const (
	maxBinaryTensors = 1024
	maxBinaryRank    = 16
)

func dtypeCode(d Datatype) (byte, bool) {
	for i, x := range Datatypes {
		if x == d {
			return byte(i), true
		}
	}
	return 0, false
}

// AppendBinary appends the binary encoding of ts to dst.
func AppendBinary(dst []byte, ts []Tensor) ([]byte, error) {
	dst = append(dst, binaryMagic...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(ts)))
	for _, t := range ts {
		if err := t.Check(); err != nil {
			return nil, err
		}
		if len(t.Name) > math.MaxUint16 || len(t.Shape) > maxBinaryRank {
			return nil, fmt.Errorf("tensor %q: %w: name or rank too large", t.Name, ErrData)
		}
		code, _ := dtypeCode(t.Datatype)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(t.Name)))
		dst = append(dst, t.Name...)
		dst = append(dst, code, byte(len(t.Shape)))
		for _, d := range t.Shape {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(d))
		}
		nbytes := t.Len() * t.Datatype.Size()
		dst = binary.LittleEndian.AppendUint32(dst, uint32(nbytes))
		dst = AppendData(dst, t.Data)
	}
	return dst, nil
}

// AppendData appends the elements of data (a Tensor's Data) in the raw
// layout: row-major, little endian, BOOL one byte (0 or 1) each. It is
// the data part of EFT1 and of the Open Inference Protocol's binary
// tensor data extension.
func AppendData(dst []byte, data any) []byte {
	switch v := data.(type) {
	case []bool:
		for _, x := range v {
			if x {
				dst = append(dst, 1)
			} else {
				dst = append(dst, 0)
			}
		}
	case []uint8:
		dst = append(dst, v...)
	case []int8:
		for _, x := range v {
			dst = append(dst, byte(x))
		}
	case []int16:
		for _, x := range v {
			dst = binary.LittleEndian.AppendUint16(dst, uint16(x))
		}
	case []int32:
		for _, x := range v {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(x))
		}
	case []int64:
		for _, x := range v {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(x))
		}
	case []float32:
		for _, x := range v {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
		}
	case []float64:
		for _, x := range v {
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x))
		}
	}
	return dst
}

// DecodeBinary decodes a binary tensor list. It never panics on malformed
// input: every length is checked against what remains.
func DecodeBinary(b []byte) ([]Tensor, error) {
	r := reader{b: b}
	if string(r.next(4)) != binaryMagic {
		return nil, fmt.Errorf("%w: binary tensor list: bad magic", ErrData)
	}
	count := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	if count > maxBinaryTensors {
		return nil, fmt.Errorf("%w: binary tensor list: %d tensors (limit %d)", ErrData, count, maxBinaryTensors)
	}
	ts := make([]Tensor, 0, count)
	for i := uint32(0); i < count; i++ {
		name := string(r.next(int(r.u16())))
		code := r.u8()
		rank := r.u8()
		if r.err != nil {
			return nil, r.err
		}
		if int(code) >= len(Datatypes) {
			return nil, fmt.Errorf("tensor %q: %w: unknown datatype code %d", name, ErrDatatype, code)
		}
		if rank > maxBinaryRank {
			return nil, fmt.Errorf("tensor %q: %w: rank %d", name, ErrShape, rank)
		}
		dt := Datatypes[code]
		shape := make([]int64, rank)
		for j := range shape {
			shape[j] = int64(r.u64())
		}
		nbytes := r.u32()
		if r.err != nil {
			return nil, r.err
		}
		n := Elements(shape)
		if n < 0 || n > int64(nbytes) || n*int64(dt.Size()) != int64(nbytes) {
			return nil, fmt.Errorf("tensor %q: %w: shape %v of %s does not take %d bytes", name, ErrShape, shape, dt, nbytes)
		}
		raw := r.next(int(nbytes))
		if r.err != nil {
			return nil, r.err
		}
		if dt == Bool {
			for j, x := range raw {
				if x > 1 {
					return nil, fmt.Errorf("tensor %q: %w: BOOL element %d is %d, want 0 or 1", name, ErrData, j, x)
				}
			}
		}
		ts = append(ts, Tensor{Name: name, Datatype: dt, Shape: shape, Data: decodeData(dt, raw, int(n))})
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: binary tensor list: %d trailing bytes", ErrData, len(r.b))
	}
	return ts, nil
}

// DataFromBytes decodes raw, elements of dt in the layout AppendData
// writes, into a new typed slice (raw is not retained). Its length must be
// a whole number of elements.
func DataFromBytes(dt Datatype, raw []byte) (any, error) {
	size := dt.Size()
	if size == 0 {
		return nil, fmt.Errorf("%w: %q", ErrDatatype, dt)
	}
	if len(raw)%size != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of %s elements (%d bytes each)", ErrData, len(raw), dt, size)
	}
	return decodeData(dt, raw, len(raw)/size), nil
}

func decodeData(dt Datatype, raw []byte, n int) any {
	le := binary.LittleEndian
	switch dt {
	case Bool:
		return decodeEach(n, func(i int) bool { return raw[i] != 0 })
	case Uint8:
		return append([]uint8(nil), raw...)
	case Int8:
		return decodeEach(n, func(i int) int8 { return int8(raw[i]) })
	case Int16:
		return decodeEach(n, func(i int) int16 { return int16(le.Uint16(raw[2*i:])) })
	case Int32:
		return decodeEach(n, func(i int) int32 { return int32(le.Uint32(raw[4*i:])) })
	case Int64:
		return decodeEach(n, func(i int) int64 { return int64(le.Uint64(raw[8*i:])) })
	case FP32:
		return decodeEach(n, func(i int) float32 { return math.Float32frombits(le.Uint32(raw[4*i:])) })
	case FP64:
		return decodeEach(n, func(i int) float64 { return math.Float64frombits(le.Uint64(raw[8*i:])) })
	}
	return nil
}

// decodeEach returns n elements, element i decoded by at.
func decodeEach[T any](n int, at func(i int) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = at(i)
	}
	return out
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) next(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%w: binary tensor list truncated", ErrData)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() uint8 {
	b := r.next(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u16() uint16 {
	b := r.next(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *reader) u32() uint32 {
	b := r.next(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *reader) u64() uint64 {
	b := r.next(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}
