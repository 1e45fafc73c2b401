package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// sileroInputs are the Silero VAD v5 inputs for one frame with a non-zero
// state (as a streaming caller would send after the first frame).
func sileroInputs() []tensor.Tensor {
	st := make([]float32, 256)
	for i := range st {
		st[i] = float32(math.Sin(float64(i))) * 0.3
	}
	return []tensor.Tensor{
		{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, 512}, Data: testbundle.TwoSine()},
		{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, 1, 128}, Data: st},
		{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}},
	}
}

// requestBody encodes an inference request with encoding/json and the
// shared/tensor codec, the way any client would.
func requestBody(tb testing.TB, id string, inputs []tensor.Tensor, outputs ...string) []byte {
	tb.Helper()
	type out struct {
		Name string `json:"name"`
	}
	r := struct {
		ID      string          `json:"id,omitempty"`
		Inputs  []tensor.Tensor `json:"inputs"`
		Outputs []out           `json:"outputs,omitempty"`
	}{ID: id, Inputs: inputs}
	for _, o := range outputs {
		r.Outputs = append(r.Outputs, out{o})
	}
	b, err := json.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestDecodeInferRequest(t *testing.T) {
	body := []byte(`{
	  "id": "42",
	  "parameters": {"priority": 2, "tag": "x", "flag": true},
	  "inputs": [
	    {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
	    {"data": [true, false, true], "datatype": "BOOL", "shape": [3], "name": "b",
	     "parameters": {"content_type": "np"}},
	    {"name": "c", "shape": [], "datatype": "FP64", "data": [1.5e-3]},
	    {"name": "d", "shape": [0], "datatype": "UINT8", "data": []},
	    {"name": "e\u00e9", "shape": [1], "datatype": "INT8", "data": [-128], "extension": {"x": [1, null]}}
	  ],
	  "outputs": [{"name": "y", "parameters": {"binary_data": false}}, {"name": "z"}],
	  "unknown": [1, {"a": null}]
	}`)
	got, err := DecodeInferRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	want := &InferRequest{
		ID:         "42",
		Parameters: Parameters{"priority": 2.0, "tag": "x", "flag": true},
		Inputs: []tensor.Tensor{
			{Name: "a", Datatype: tensor.Int32, Shape: []int64{2, 2}, Data: []int32{1, 2, 3, 4}},
			{Name: "b", Datatype: tensor.Bool, Shape: []int64{3}, Data: []bool{true, false, true}},
			{Name: "c", Datatype: tensor.FP64, Shape: []int64{}, Data: []float64{1.5e-3}},
			{Name: "d", Datatype: tensor.Uint8, Shape: []int64{0}, Data: []uint8{}},
			{Name: "eé", Datatype: tensor.Int8, Shape: []int64{1}, Data: []int8{-128}},
		},
		InputParameters: map[string]Parameters{"b": {"content_type": "np"}},
		Outputs: []RequestedOutput{
			{Name: "y", Parameters: Parameters{"binary_data": false}},
			{Name: "z"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
}

func TestDecodeInferRequestSilero(t *testing.T) {
	in := sileroInputs()
	got, err := DecodeInferRequest(requestBody(t, "frame-1", in, "output"))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "frame-1" || len(got.Outputs) != 1 || got.Outputs[0].Name != "output" {
		t.Errorf("got id %q outputs %v", got.ID, got.Outputs)
	}
	if !reflect.DeepEqual(got.Inputs, in) {
		t.Errorf("inputs differ after a round trip through JSON")
	}
}

func TestDecodeInferRequestErrors(t *testing.T) {
	const ok = `{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}`
	tests := []struct {
		name, body string
		sentinel   error  // besides ErrRequest
		want       string // in the message
	}{
		{"empty", ``, nil, "unexpected end of body"},
		{"not an object", `[1]`, nil, "expected a JSON object"},
		{"trailing", `{"inputs":[` + ok + `]} x`, nil, "end of body"},
		{"truncated", `{"inputs":[` + ok, nil, "unexpected end of body"},
		{"bad literal", `{"inputs":[` + ok + `],"x":tru}`, nil, "malformed JSON"},
		{"no inputs", `{"id":"1"}`, nil, "inputs: the request has no inputs"},
		{"empty inputs", `{"inputs":[]}`, nil, "no inputs"},
		{"inputs not array", `{"inputs":{}}`, nil, "inputs: must be an array"},
		{"id number", `{"id":1,"inputs":[` + ok + `]}`, nil, "id: must be a string"},
		{"duplicate key", `{"inputs":[` + ok + `],"inputs":[` + ok + `]}`, nil, "inputs: duplicate key"},
		{"folded key", `{"Inputs":[` + ok + `]}`, nil, `did you mean "inputs"`},
		{"duplicate input", `{"inputs":[` + ok + `,` + ok + `]}`, nil, `input "x" given twice`},
		{"no name", `{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}`, tensor.ErrName, "tensor without a name"},
		{"unsupported datatype", `{"inputs":[{"name":"x","shape":[1],"datatype":"UINT32","data":[1]}]}`, tensor.ErrDatatype, `unsupported datatype "UINT32"`},
		{"missing datatype", `{"inputs":[{"name":"x","shape":[1],"data":[1]}]}`, tensor.ErrDatatype, `unsupported datatype ""`},
		{"missing shape", `{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}`, tensor.ErrShape, "missing shape"},
		{"negative dim", `{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}`, tensor.ErrShape, "invalid shape [-1]"},
		{"fractional dim", `{"inputs":[{"name":"x","shape":[1.5],"datatype":"FP32","data":[1]}]}`, tensor.ErrShape, "inputs[0].shape[0]: shape mismatch: dimension 1.5 is not an integer"},
		{"missing data", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}`, tensor.ErrData, "missing data"},
		{"null data", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":null}]}`, tensor.ErrData, "data is null"},
		{"scalar data", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":1}]}`, tensor.ErrData, "data must be an array"},
		{"count", `{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}`, tensor.ErrShape, "shape [3] holds 3 elements, data has 2"},
		{"string element", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["1"]}]}`, tensor.ErrData, "element 0: string in FP32 data"},
		{"bool in float", `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,true]}]}`, tensor.ErrData, "element 1: boolean in FP32 data"},
		{"number in bool", `{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}]}`, tensor.ErrData, "element 0: number in BOOL data"},
		{"null element", `{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[null]}]}`, tensor.ErrData, "element 0: null in INT64 data"},
		{"object element", `{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[{}]}]}`, tensor.ErrData, "objects are not tensor data"},
		{"int overflow", `{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[128]}]}`, tensor.ErrData, "element 0: 128 is not an INT8"},
		{"fraction in int", `{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1.0]}]}`, tensor.ErrData, "1.0 is not an INT64"},
		{"fp32 overflow", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}]}`, tensor.ErrData, "1e39 is not an FP32"},
		{"NaN literal", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]}`, nil, "malformed JSON"},
		{"leading zero", `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[01]}]}`, nil, "malformed JSON"},
		{"trailing comma", `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2,]}]}`, nil, "expected a value"},
		{"missing comma", `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1 2]}]}`, nil, "expected ',' or ']'"},
		{"deep data", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":` + strings.Repeat("[", 70) + `1` + strings.Repeat("]", 70) + `}]}`, tensor.ErrData, "nested deeper than 64"},
		{"deep skip", `{"x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `,"inputs":[` + ok + `]}`, nil, "nested deeper than 64"},
		{"binary_data_size without the header", `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}`, nil, "binary_data_size without the binary tensor data extension"},
		{"parameter object", `{"parameters":{"a":{}},"inputs":[` + ok + `]}`, nil, "parameters.a: a parameter must be a string, number or boolean"},
		{"output without name", `{"inputs":[` + ok + `],"outputs":[{}]}`, nil, "outputs[0]: output without a name"},
		{"output twice", `{"inputs":[` + ok + `],"outputs":[{"name":"y"},{"name":"y"}]}`, nil, `output "y" requested twice`},
		{"control char", "{\"id\":\"a\x01\",\"inputs\":[" + ok + "]}", nil, "control characters must be escaped"},
		{"bad escape", `{"id":"\x","inputs":[` + ok + `]}`, nil, "malformed JSON string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeInferRequest([]byte(tt.body))
			if err == nil {
				t.Fatal("decoded, want an error")
			}
			if !errors.Is(err, ErrRequest) {
				t.Errorf("error %q does not wrap ErrRequest", err)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("error %q does not wrap %v", err, tt.sentinel)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// refRequest is the request decoded by encoding/json with the shared/tensor
// codec: the reference DecodeInferRequest must agree with.
type refRequest struct {
	ID         string          `json:"id"`
	Parameters map[string]any  `json:"parameters"`
	Inputs     []tensor.Tensor `json:"inputs"`
	Outputs    []struct {
		Name       string         `json:"name"`
		Parameters map[string]any `json:"parameters"`
	} `json:"outputs"`
}

type refInputParams struct {
	Inputs []struct {
		Parameters map[string]any `json:"parameters"`
	} `json:"inputs"`
}

// sameRequest reports how got (ours) differs from the reference decoding
// of the same body, or "" if it does not.
func sameRequest(got *InferRequest, ref *refRequest, refParams *refInputParams) string {
	if got.ID != ref.ID {
		return "id"
	}
	if !sameParams(got.Parameters, ref.Parameters) {
		return "parameters"
	}
	if len(got.Inputs) != len(ref.Inputs) || len(refParams.Inputs) != len(ref.Inputs) {
		return "input count"
	}
	for i, a := range got.Inputs {
		b := ref.Inputs[i]
		if a.Name != b.Name || a.Datatype != b.Datatype || !reflect.DeepEqual(a.Shape, b.Shape) {
			return "input " + a.Name + " header"
		}
		if a.Len() != b.Len() || (a.Len() > 0 && !reflect.DeepEqual(a.Data, b.Data)) {
			return "input " + a.Name + " data"
		}
		if !sameParams(got.InputParameters[a.Name], refParams.Inputs[i].Parameters) {
			return "input " + a.Name + " parameters"
		}
	}
	if len(got.Outputs) != len(ref.Outputs) {
		return "output count"
	}
	for i, o := range got.Outputs {
		if o.Name != ref.Outputs[i].Name || !sameParams(o.Parameters, ref.Outputs[i].Parameters) {
			return "output " + o.Name
		}
	}
	return ""
}

func sameParams(a Parameters, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func FuzzDecodeInferRequest(f *testing.F) {
	f.Add(requestBody(f, "1", sileroInputs(), "output"))
	f.Add([]byte(`{"inputs":[{"name":"a","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}`))
	f.Add([]byte(`{"inputs":[{"data":[true,false],"datatype":"BOOL","shape":[2],"name":"b","parameters":{"x":1}}],"outputs":[{"name":"y"}],"parameters":{"p":"q"}}`))
	f.Add([]byte(`{"id":"\u00e9\n","inputs":[{"name":"c","shape":[],"datatype":"FP64","data":[-0.5e+3]}],"z":[{},null,"",1]}`))
	f.Add([]byte(`{"inputs":[{"name":"d","shape":[0],"datatype":"UINT8","data":[[]]},{"name":"e","shape":[1],"datatype":"INT16","data":[[[-7]]]}]}`))
	f.Add([]byte(`{"Inputs":[],"inputs":null}`))
	f.Add([]byte(`{"inputs":[{"name":"f","shape":[6],"datatype":"FP32","data":[1e-7,-0.0,3.4028235e38,1.00000005960464477539062,123456789012345678901234,7e-46]},{"name":"g","shape":[2],"datatype":"FP64","data":[4.9e-324,1.7976931348623157e308]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := DecodeInferRequest(body)
		if err != nil {
			if !errors.Is(err, ErrRequest) {
				t.Fatalf("error %q does not wrap ErrRequest", err)
			}
			return
		}
		var ref refRequest
		if err := json.Unmarshal(body, &ref); err != nil {
			t.Fatalf("we accepted a body encoding/json refuses (%v):\n%q", err, body)
		}
		var refParams refInputParams
		if err := json.Unmarshal(body, &refParams); err != nil {
			t.Fatalf("reference input parameters: %v", err)
		}
		if diff := sameRequest(got, &ref, &refParams); diff != "" {
			t.Fatalf("%s differs from encoding/json's decoding of\n%q\nours: %#v\nref:  %#v", diff, body, got, ref)
		}
		for _, in := range got.Inputs {
			if err := in.Check(); err != nil {
				t.Fatalf("accepted an inconsistent tensor: %v", err)
			}
		}
	})
}

func BenchmarkDecodeInferRequest(b *testing.B) {
	body := requestBody(b, "1", sileroInputs())
	b.Run("ours", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeInferRequest(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var r refRequest
			if err := json.NewDecoder(bytes.NewReader(body)).Decode(&r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestJPath(t *testing.T) {
	in := top("inputs")
	first := in.at(0)
	shape := first.child("shape")
	var root jpath
	for _, c := range []struct {
		p    jpath
		want string
	}{
		{root, ""},
		{root.child("id"), "id"},
		{in, "inputs"},
		{first, "inputs[0]"},
		{shape.at(1), "inputs[0].shape[1]"},
		{first.child("parameters.binary_data_size"), "inputs[0].parameters.binary_data_size"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("path %q, want %q", got, c.want)
		}
		if c.p.isRoot() != (c.want == "") {
			t.Errorf("%q: isRoot %v", c.want, c.p.isRoot())
		}
	}
}
