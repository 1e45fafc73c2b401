package api

// The gRPC form of an inference request and response (KServe's
// grpc_predict_v2.proto): a ModelInferRequest decoded into the same
// InferRequest the REST decoders give, with typed contents or
// raw_input_contents, and a ModelInferResponse built from the model's
// output tensors, typed or raw.

import (
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/agent/api/oipgrpc"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// DecodeGRPCRequest decodes a gRPC ModelInferRequest into the inference
// request REST requests decode to, with the same checks (names,
// datatypes, shapes, element counts); errors wrap ErrRequest and the
// shared/tensor sentinel that applies. Each input's data is either its
// typed contents (the field of its datatype: fp32_contents for FP32,
// int_contents for INT8, INT16 and INT32, uint_contents for UINT8, ...)
// or, for every input at once, raw_input_contents: one entry per input,
// in input order, row-major little-endian bytes (BOOL one byte each).
// raw reports which.
func DecodeGRPCRequest(m *oipgrpc.ModelInferRequest) (req *InferRequest, raw bool, err error) {
	req = &InferRequest{ID: m.GetId(), Parameters: grpcParameters(m.GetParameters())}
	ins := m.GetInputs()
	if len(ins) == 0 {
		return nil, false, fmt.Errorf("%w: inputs: the request has no inputs", ErrRequest)
	}
	rawContents := m.GetRawInputContents()
	raw = len(rawContents) > 0
	if raw && len(rawContents) != len(ins) {
		return nil, false, fmt.Errorf("%w: raw_input_contents has %d entries for %d inputs: it needs one per input, in input order", ErrRequest, len(rawContents), len(ins))
	}
	req.Inputs = make([]tensor.Tensor, 0, len(ins))
	for i, in := range ins {
		var rawData []byte
		if raw {
			rawData = rawContents[i]
		}
		t, err := grpcInput(in, raw, rawData)
		if err != nil {
			return nil, false, fmt.Errorf("%w: inputs[%d]: %w", ErrRequest, i, err)
		}
		for _, u := range req.Inputs {
			if u.Name == t.Name {
				return nil, false, fmt.Errorf("%w: inputs[%d]: input %q given twice", ErrRequest, i, t.Name)
			}
		}
		req.Inputs = append(req.Inputs, t)
		if p := in.GetParameters(); len(p) > 0 {
			if req.InputParameters == nil {
				req.InputParameters = map[string]Parameters{}
			}
			req.InputParameters[t.Name] = grpcParameters(p)
		}
	}
	for i, o := range m.GetOutputs() {
		if o.GetName() == "" {
			return nil, false, fmt.Errorf("%w: outputs[%d]: output without a name", ErrRequest, i)
		}
		for _, u := range req.Outputs {
			if u.Name == o.GetName() {
				return nil, false, fmt.Errorf("%w: outputs[%d]: output %q requested twice", ErrRequest, i, o.GetName())
			}
		}
		req.Outputs = append(req.Outputs, RequestedOutput{Name: o.GetName(), Parameters: grpcParameters(o.GetParameters())})
	}
	return req, raw, nil
}

// grpcParameters converts gRPC parameters to the REST form: int64 values
// become float64, as JSON numbers do. nil when there are none.
func grpcParameters(m map[string]*oipgrpc.InferParameter) Parameters {
	if len(m) == 0 {
		return nil
	}
	p := make(Parameters, len(m))
	for k, v := range m {
		switch c := v.GetParameterChoice().(type) {
		case *oipgrpc.InferParameter_BoolParam:
			p[k] = c.BoolParam
		case *oipgrpc.InferParameter_Int64Param:
			p[k] = float64(c.Int64Param)
		case *oipgrpc.InferParameter_StringParam:
			p[k] = c.StringParam
		}
	}
	return p
}

// grpcInput decodes one input tensor: from rawData when raw, else from
// its typed contents.
func grpcInput(in *oipgrpc.ModelInferRequest_InferInputTensor, raw bool, rawData []byte) (tensor.Tensor, error) {
	t := tensor.Tensor{Name: in.GetName(), Datatype: tensor.Datatype(in.GetDatatype()), Shape: in.GetShape()}
	if t.Name == "" {
		return t, fmt.Errorf("%w: tensor without a name", tensor.ErrName)
	}
	if !t.Datatype.Valid() {
		return t, fmt.Errorf("%w: input %q: unsupported datatype %q (supported: %v)", tensor.ErrDatatype, t.Name, t.Datatype, tensor.Datatypes)
	}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	n := tensor.Elements(t.Shape)
	if n < 0 {
		return t, fmt.Errorf("%w: input %q: invalid shape %v", tensor.ErrShape, t.Name, t.Shape)
	}
	c := in.GetContents()
	if raw {
		if field := contentsField(c); field != "" {
			return t, fmt.Errorf("%w: input %q has both contents.%s and raw_input_contents: a request uses one or the other for all inputs", tensor.ErrData, t.Name, field)
		}
		want := n * int64(t.Datatype.Size())
		if int64(len(rawData)) != want {
			return t, fmt.Errorf("%w: input %q: shape %v of %s is %d bytes, its raw_input_contents entry has %d", tensor.ErrShape, t.Name, t.Shape, t.Datatype, want, len(rawData))
		}
		v, err := tensor.DataFromBytes(t.Datatype, rawData)
		if err != nil {
			return t, fmt.Errorf("input %q: %w", t.Name, err)
		}
		t.Data = v
		return t, nil
	}
	want := wantField(t.Datatype)
	for _, field := range contentsFields(c) {
		if field != want {
			return t, fmt.Errorf("%w: input %q: contents.%s given; %s data goes in contents.%s", tensor.ErrDatatype, t.Name, field, t.Datatype, want)
		}
	}
	v, got, err := typedContents(t.Name, t.Datatype, c)
	if err != nil {
		return t, err
	}
	if int64(got) != n {
		if got == 0 {
			return t, fmt.Errorf("%w: input %q: missing data: shape %v holds %d elements; send them in contents.%s or raw_input_contents", tensor.ErrData, t.Name, t.Shape, n, want)
		}
		return t, fmt.Errorf("%w: input %q: shape %v holds %d elements, contents.%s has %d", tensor.ErrShape, t.Name, t.Shape, n, want, got)
	}
	t.Data = v
	return t, nil
}

// wantField is the InferTensorContents field of datatype dt.
func wantField(dt tensor.Datatype) string {
	switch dt {
	case tensor.Bool:
		return "bool_contents"
	case tensor.Int8, tensor.Int16, tensor.Int32:
		return "int_contents"
	case tensor.Int64:
		return "int64_contents"
	case tensor.Uint8:
		return "uint_contents"
	case tensor.FP32:
		return "fp32_contents"
	case tensor.FP64:
		return "fp64_contents"
	}
	return ""
}

// contentsFields names the non-empty fields of c.
func contentsFields(c *oipgrpc.InferTensorContents) []string {
	if c == nil {
		return nil
	}
	var fields []string
	for _, f := range []struct {
		name string
		n    int
	}{
		{"bool_contents", len(c.BoolContents)},
		{"int_contents", len(c.IntContents)},
		{"int64_contents", len(c.Int64Contents)},
		{"uint_contents", len(c.UintContents)},
		{"uint64_contents", len(c.Uint64Contents)},
		{"fp32_contents", len(c.Fp32Contents)},
		{"fp64_contents", len(c.Fp64Contents)},
		{"bytes_contents", len(c.BytesContents)},
	} {
		if f.n > 0 {
			fields = append(fields, f.name)
		}
	}
	return fields
}

// contentsField names the first non-empty field of c, "" if none is.
func contentsField(c *oipgrpc.InferTensorContents) string {
	if fs := contentsFields(c); len(fs) > 0 {
		return fs[0]
	}
	return ""
}

// typedContents takes the data of a dt tensor from c (checked by the
// caller to carry no other field), narrowing int_contents and
// uint_contents to the datatype's range. It returns the data and its
// element count.
func typedContents(name string, dt tensor.Datatype, c *oipgrpc.InferTensorContents) (any, int, error) {
	switch dt {
	case tensor.Bool:
		v := c.GetBoolContents()
		return v, len(v), nil
	case tensor.Int64:
		v := c.GetInt64Contents()
		return v, len(v), nil
	case tensor.FP32:
		v := c.GetFp32Contents()
		return v, len(v), nil
	case tensor.FP64:
		v := c.GetFp64Contents()
		return v, len(v), nil
	case tensor.Int32:
		v := c.GetIntContents()
		return v, len(v), nil
	case tensor.Int16:
		v, err := narrow[int16](name, dt, c.GetIntContents(), math.MinInt16, math.MaxInt16)
		return v, len(v), err
	case tensor.Int8:
		v, err := narrow[int8](name, dt, c.GetIntContents(), math.MinInt8, math.MaxInt8)
		return v, len(v), err
	case tensor.Uint8:
		v, err := narrow[uint8](name, dt, c.GetUintContents(), 0, math.MaxUint8)
		return v, len(v), err
	}
	return nil, 0, fmt.Errorf("%w: input %q: unsupported datatype %q", tensor.ErrDatatype, name, dt)
}

// narrow converts int_contents or uint_contents to a smaller integer
// type, refusing an element out of its range.
func narrow[T int8 | int16 | uint8, S int32 | uint32](name string, dt tensor.Datatype, v []S, lo, hi int64) ([]T, error) {
	if len(v) == 0 {
		return nil, nil
	}
	out := make([]T, len(v))
	for i, x := range v {
		if int64(x) < lo || int64(x) > hi {
			return nil, fmt.Errorf("%w: input %q: element %d: %d is %s", tensor.ErrData, name, i, x, "not "+article(dt))
		}
		out[i] = T(x)
	}
	return out, nil
}

// grpcResponse builds the ModelInferResponse of outputs: with
// raw_output_contents when raw, typed contents otherwise.
func grpcResponse(name, version, id string, outputs []tensor.Tensor, raw bool) (*oipgrpc.ModelInferResponse, error) {
	resp := &oipgrpc.ModelInferResponse{ModelName: name, ModelVersion: version, Id: id}
	resp.Outputs = make([]*oipgrpc.ModelInferResponse_InferOutputTensor, len(outputs))
	if raw {
		resp.RawOutputContents = make([][]byte, len(outputs))
	}
	for i, t := range outputs {
		if err := t.Check(); err != nil {
			return nil, fmt.Errorf("output %w", err)
		}
		o := &oipgrpc.ModelInferResponse_InferOutputTensor{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape}
		if raw {
			resp.RawOutputContents[i] = tensor.AppendData(make([]byte, 0, t.Len()*t.Datatype.Size()), t.Data)
		} else {
			o.Contents = outputContents(t.Data)
		}
		resp.Outputs[i] = o
	}
	return resp, nil
}

// outputContents is a checked tensor's data as typed contents.
func outputContents(data any) *oipgrpc.InferTensorContents {
	c := &oipgrpc.InferTensorContents{}
	switch v := data.(type) {
	case []bool:
		c.BoolContents = v
	case []uint8:
		c.UintContents = widen[uint32](v)
	case []int8:
		c.IntContents = widen[int32](v)
	case []int16:
		c.IntContents = widen[int32](v)
	case []int32:
		c.IntContents = v
	case []int64:
		c.Int64Contents = v
	case []float32:
		c.Fp32Contents = v
	case []float64:
		c.Fp64Contents = v
	}
	return c
}

func widen[T int32 | uint32, S int8 | int16 | uint8](v []S) []T {
	out := make([]T, len(v))
	for i, x := range v {
		out[i] = T(x)
	}
	return out
}

// rawOutputs says whether a gRPC response carries its outputs as
// raw_output_contents: the request parameter "binary_data_output" decides
// when given (as in REST); otherwise outputs go raw when the inputs came
// raw, as KServe's and Triton's servers answer.
func rawOutputs(req *InferRequest, rawInputs bool) bool {
	if v, ok := req.Parameters["binary_data_output"].(bool); ok {
		return v
	}
	return rawInputs
}
