package api

// Decoding one input tensor ($request_input): its name, datatype, shape,
// parameters and data in any key order, checked for consistency.

import (
	"strconv"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// tensor decodes one $request_input.
func (d *decoder) tensor(path string) (tensor.Tensor, Parameters, error) {
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
		kp := join(path, key)
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
	if _, ok := params["binary_data_size"]; ok {
		return tensor.Tensor{}, nil, d.errorf(path, "input %q: the binary tensor data extension is not supported; send the data as JSON, or raw bytes with Content-Type: application/octet-stream", t.Name)
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
	if data == nil && dataAt >= 0 {
		end := d.i
		d.i = dataAt
		e, err := d.data(join(path, "data"), t.Datatype, t.Shape)
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

// shape decodes a shape array of non-negative int64 dimensions.
func (d *decoder) shape(path string) ([]int64, error) {
	if d.peek() != '[' {
		return nil, d.wrongType(path, "%w: must be an array of integers", tensor.ErrShape)
	}
	s := make([]int64, 0, 4)
	err := d.array(path, func(i int) error {
		ip := index(path, i)
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
