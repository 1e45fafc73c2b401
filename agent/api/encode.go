package api

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// appendResponse appends an $inference_response for outputs to b. It
// writes the same JSON as encoding/json with the shared/tensor codec, but
// straight into b: no intermediate buffers, no reflection. Outputs whose
// binary entry is true get "parameters": {"binary_data_size": n} instead
// of data (the binary tensor data extension; the caller appends their
// bytes after the JSON, with tensor.AppendData).
func appendResponse(b []byte, modelName, version, id string, outputs []tensor.Tensor, binary []bool) ([]byte, error) {
	b = append(b, `{"model_name":`...)
	b = appendString(b, modelName)
	if version != "" {
		b = append(b, `,"model_version":`...)
		b = appendString(b, version)
	}
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, id)
	}
	b = append(b, `,"outputs":[`...)
	for i, t := range outputs {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if i < len(binary) && binary[i] {
			b, err = appendBinaryTensor(b, t)
		} else {
			b, err = appendTensor(b, t)
		}
		if err != nil {
			return nil, err
		}
	}
	return append(b, "]}\n"...), nil
}

// appendBinaryTensor appends t as a $response_output whose data follows
// the JSON.
func appendBinaryTensor(b []byte, t tensor.Tensor) ([]byte, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	b = appendTensorHead(b, t)
	b = append(b, `],"parameters":{"binary_data_size":`...)
	b = strconv.AppendInt(b, int64(t.Len()*t.Datatype.Size()), 10)
	return append(b, "}}"...), nil
}

// appendTensorHead appends t's name, datatype and shape, up to the last
// dimension.
func appendTensorHead(b []byte, t tensor.Tensor) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, t.Name)
	b = append(b, `,"datatype":"`...)
	b = append(b, t.Datatype...)
	b = append(b, `","shape":[`...)
	for i, d := range t.Shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	return b
}

// appendTensor appends t as a $response_output with flat data.
func appendTensor(b []byte, t tensor.Tensor) ([]byte, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	b = appendTensorHead(b, t)
	b = append(b, `],"data":[`...)
	switch v := t.Data.(type) {
	case []bool:
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendBool(b, x)
		}
	case []uint8:
		b = appendInts(b, v)
	case []int8:
		b = appendInts(b, v)
	case []int16:
		b = appendInts(b, v)
	case []int32:
		b = appendInts(b, v)
	case []int64:
		b = appendInts(b, v)
	case []float32:
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			f := float64(x)
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, fmt.Errorf("output %q: %w: element %d is %v, which JSON cannot carry", t.Name, tensor.ErrNotFinite, i, x)
			}
			b = strconv.AppendFloat(b, f, 'g', -1, 32)
		}
	case []float64:
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("output %q: %w: element %d is %v, which JSON cannot carry", t.Name, tensor.ErrNotFinite, i, x)
			}
			b = strconv.AppendFloat(b, x, 'g', -1, 64)
		}
	}
	return append(b, "]}"...), nil
}

func appendInts[T integer](b []byte, v []T) []byte {
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(x), 10)
	}
	return b
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029
// escaped (as encoding/json does, minus its HTML escaping).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
