package api

// Decoding one input tensor ($request_input): its name, datatype, shape,
// parameters and data in any key order, checked for consistency.

import (
	"math"
	"strconv"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// tensor decodes one $request_input.
func (d *decoder) tensor(path jpath) (tensor.Tensor, Parameters, error) {
	if d.peek() != '{' {
		return tensor.Tensor{}, nil, d.wrongType(path, "%w: must be a tensor object", tensor.ErrData)
	}
	var (
		t         tensor.Tensor
		params    Parameters
		shapeSeen bool
		dtSeen    bool
		data      *elems
		dataAt    = -1 // offset of data seen before the datatype
	)
	err := d.object(path, []string{"name", "datatype", "shape", "data", "parameters"}, func(key string) error {
		kp := path.child(key)
		switch key {
		case "name":
			if null, err := d.null(kp); null || err != nil {
				t.Name = ""
				return err
			}
			s, err := d.str(kp)
			t.Name = s
			return err
		case "datatype":
			if null, err := d.null(kp); null || err != nil {
				t.Datatype, dtSeen = "", false
				return err
			}
			s, err := d.str(kp)
			t.Datatype, dtSeen = tensor.Datatype(s), true
			return err
		case "shape":
			if null, err := d.null(kp); null || err != nil {
				t.Shape, shapeSeen = nil, false
				return err
			}
			s, err := d.shape(kp)
			t.Shape, shapeSeen = s, true
			return err
		case "data":
			if dtSeen && t.Datatype.Valid() {
				e, err := d.data(kp, t.Datatype, t.Shape)
				data = e
				return err
			}
			// The datatype comes later (or is invalid, which is reported
			// below): validate now, parse once the datatype is known.
			dataAt = d.i
			data = nil
			return d.skip(kp, 2)
		case "parameters":
			p, err := d.parameters(kp)
			params = p
			return err
		}
		return d.skip(kp, 2)
	})
	if err != nil {
		return tensor.Tensor{}, nil, err
	}
	if t.Name == "" {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: tensor without a name", tensor.ErrName)
	}
	binSize, binary := params["binary_data_size"]
	if binary && !d.binary {
		return tensor.Tensor{}, nil, d.errorf(path, "input %q: binary_data_size without the binary tensor data extension: send the JSON's length in the %s header and the raw data after it", t.Name, BinaryHeader)
	}
	if binary && (data != nil || dataAt >= 0) {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q has both data and binary_data_size", tensor.ErrData, t.Name)
	}
	if !t.Datatype.Valid() {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: unsupported datatype %q (supported: %v)", tensor.ErrDatatype, t.Name, t.Datatype, tensor.Datatypes)
	}
	if !shapeSeen {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: missing shape", tensor.ErrShape, t.Name)
	}
	n := tensor.Elements(t.Shape)
	if n < 0 {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: invalid shape %v", tensor.ErrShape, t.Name, t.Shape)
	}
	if binary {
		raw, err := d.binaryData(path, t, n, binSize)
		if err != nil {
			return tensor.Tensor{}, nil, err
		}
		t.Data = raw
		return t, params, nil
	}
	if data == nil && dataAt >= 0 {
		end := d.i
		d.i = dataAt
		e, err := d.data(path.child("data"), t.Datatype, t.Shape)
		if err != nil {
			return tensor.Tensor{}, nil, err
		}
		d.i = end
		data = e
	}
	if data == nil {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: missing data", tensor.ErrData, t.Name)
	}
	if int64(data.len) != n {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: shape %v holds %d elements, data has %d", tensor.ErrShape, t.Name, t.Shape, n, data.len)
	}
	t.Data = data.v
	return t, params, nil
}

// binaryData takes input t's n elements, binary_data_size (size) bytes,
// from the binary part of the request.
func (d *decoder) binaryData(path jpath, t tensor.Tensor, n int64, size any) (any, error) {
	// The element's path is built only for an error (it allocates).
	fail := func(format string, args ...any) error {
		return d.errorf(path.child("parameters.binary_data_size"), format, args...)
	}
	f, ok := size.(float64)
	if !ok || f < 0 || f != math.Trunc(f) || f > math.MaxInt32 {
		return nil, fail("input %q: binary_data_size %v is not a byte count", t.Name, size)
	}
	want := n * int64(t.Datatype.Size())
	if int64(f) != want {
		return nil, fail("%w: input %q: shape %v of %s is %d bytes, binary_data_size says %d", tensor.ErrShape, t.Name, t.Shape, t.Datatype, want, int64(f))
	}
	if int64(len(d.bin)) < want {
		return nil, fail("%w: input %q needs %d bytes of binary data, %d remain in the body", tensor.ErrData, t.Name, want, len(d.bin))
	}
	v, err := tensor.DataFromBytes(t.Datatype, d.bin[:want])
	if err != nil {
		return nil, fail("input %q: %w", t.Name, err)
	}
	d.bin = d.bin[want:]
	return v, nil
}

// shape decodes a shape array of non-negative int64 dimensions.
func (d *decoder) shape(path jpath) ([]int64, error) {
	if d.peek() != '[' {
		return nil, d.wrongType(path, "%w: must be an array of integers", tensor.ErrShape)
	}
	s := make([]int64, 0, 4)
	err := d.array(path, func(i int) error {
		ip := path.at(i)
		if c := d.peek(); c != '-' && (c < '0' || c > '9') {
			return d.wrongType(ip, "%w: a dimension must be an integer", tensor.ErrShape)
		}
		n, err := d.number(ip)
		if err != nil {
			return err
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return d.errorf(ip, "%w: dimension %s is not an integer", tensor.ErrShape, n)
		}
		s = append(s, v)
		return nil
	})
	return s, err
}
