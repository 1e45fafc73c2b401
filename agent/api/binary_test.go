package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// wireTensor is a request input or response output as the binary
// extension writes it: data as JSON, or parameters with binary_data_size.
type wireTensor struct {
	Name       string          `json:"name"`
	Datatype   tensor.Datatype `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Data       json.RawMessage `json:"data,omitempty"`
	Parameters map[string]any  `json:"parameters,omitempty"`
}

// binaryBody builds a request of the binary tensor data extension the way
// a KServe or Triton client does: inputs named in binaryInputs carry
// "binary_data_size" and their bytes follow the JSON in input order; the
// others carry JSON data. params become the request's parameters and
// outputs (name to binary_data) its outputs. It returns the body and the
// JSON's length, for the Inference-Header-Content-Length header.
func binaryBody(tb testing.TB, inputs []tensor.Tensor, binaryInputs []string, params map[string]any, outputs map[string]bool, order ...string) ([]byte, int) {
	tb.Helper()
	type output struct {
		Name       string         `json:"name"`
		Parameters map[string]any `json:"parameters,omitempty"`
	}
	req := struct {
		Inputs     []wireTensor   `json:"inputs"`
		Outputs    []output       `json:"outputs,omitempty"`
		Parameters map[string]any `json:"parameters,omitempty"`
	}{Parameters: params}
	var raw []byte
	for _, t := range inputs {
		in := wireTensor{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape}
		if contains(binaryInputs, t.Name) {
			data := tensor.AppendData(nil, t.Data)
			in.Parameters = map[string]any{"binary_data_size": len(data)}
			raw = append(raw, data...)
		} else {
			b, err := json.Marshal(t)
			if err != nil {
				tb.Fatal(err)
			}
			var full struct{ Data json.RawMessage }
			if err := json.Unmarshal(b, &full); err != nil {
				tb.Fatal(err)
			}
			in.Data = full.Data
		}
		req.Inputs = append(req.Inputs, in)
	}
	for _, name := range order {
		o := output{Name: name}
		if outputs[name] {
			o.Parameters = map[string]any{"binary_data": true}
		}
		req.Outputs = append(req.Outputs, o)
	}
	head, err := json.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	return append(head, raw...), len(head)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// postBinary POSTs body with the extension's header (headerLen < 0 leaves
// it out) and the Content-Type Triton's client sends.
func (s *served) postBinary(t testing.TB, path string, body []byte, headerLen string) response {
	t.Helper()
	req, err := http.NewRequest("POST", "http://edge-agent"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if headerLen != "" {
		req.Header.Set(BinaryHeader, headerLen)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, buf.Bytes()}
}

// splitBinary decodes a binary-extension response: the JSON header, then
// each output's data from the bytes after it, in output order.
func splitBinary(t *testing.T, r response) inferResponse {
	t.Helper()
	n, err := strconv.Atoi(r.header.Get(BinaryHeader))
	if err != nil || n > len(r.body) {
		t.Fatalf("%s %q for a %d-byte body", BinaryHeader, r.header.Get(BinaryHeader), len(r.body))
	}
	var head struct {
		ModelName    string       `json:"model_name"`
		ModelVersion string       `json:"model_version"`
		Outputs      []wireTensor `json:"outputs"`
	}
	if err := strictDecode(r.body[:n], &head); err != nil {
		t.Fatalf("JSON header: %v\n%s", err, r.body[:n])
	}
	rest := r.body[n:]
	res := inferResponse{ModelName: head.ModelName, ModelVersion: head.ModelVersion}
	for _, o := range head.Outputs {
		tt := tensor.Tensor{Name: o.Name, Datatype: o.Datatype, Shape: o.Shape}
		if size, ok := o.Parameters["binary_data_size"].(float64); ok {
			if o.Data != nil {
				t.Fatalf("output %s has data and binary_data_size", o.Name)
			}
			if int(size) > len(rest) {
				t.Fatalf("output %s: binary_data_size %v, %d bytes left", o.Name, size, len(rest))
			}
			v, err := tensor.DataFromBytes(o.Datatype, rest[:int(size)])
			if err != nil {
				t.Fatal(err)
			}
			tt.Data, rest = v, rest[int(size):]
		} else {
			b, _ := json.Marshal(o)
			if err := json.Unmarshal(b, &tt); err != nil {
				t.Fatalf("output %s: %v", o.Name, err)
			}
		}
		res.Outputs = append(res.Outputs, tt)
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes after the last output", len(rest))
	}
	return res
}

// TestBinaryTensors: the same Silero inference sent as JSON and with the
// binary tensor data extension (inputs binary or mixed, outputs binary on
// request) gives the same answers.
func TestBinaryTensors(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	s := serve(t, Options{Backend: newRegistry(silero)})
	const path = "/v2/models/silero-vad/infer"
	in := sileroInputs()

	ref := s.do(t, "POST", path, "application/json", requestBody(t, "", in))
	if ref.code != 200 {
		t.Fatalf("JSON request: %d %s", ref.code, ref.body)
	}
	var want inferResponse
	if err := strictDecode(ref.body, &want); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name        string
		binaryIn    []string
		params      map[string]any
		outputs     map[string]bool
		order       []string
		binaryOut   bool // the response uses the extension
		wantOutputs []string
	}{
		{name: "inputs binary, outputs JSON", binaryIn: []string{"input", "state", "sr"}, wantOutputs: []string{"output", "stateN"}},
		{name: "mixed inputs", binaryIn: []string{"input", "sr"}, wantOutputs: []string{"output", "stateN"}},
		{name: "all outputs binary", binaryIn: []string{"input", "state", "sr"}, params: map[string]any{"binary_data_output": true}, binaryOut: true, wantOutputs: []string{"output", "stateN"}},
		{name: "one output binary, in the order asked", binaryIn: []string{"state"}, outputs: map[string]bool{"stateN": true}, order: []string{"stateN", "output"}, binaryOut: true, wantOutputs: []string{"stateN", "output"}},
		{name: "JSON header only", wantOutputs: []string{"output", "stateN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, n := binaryBody(t, in, tc.binaryIn, tc.params, tc.outputs, tc.order...)
			r := s.postBinary(t, path, body, strconv.Itoa(n))
			if r.code != 200 {
				t.Fatalf("%d %s", r.code, r.body)
			}
			var got inferResponse
			if tc.binaryOut {
				if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
					t.Errorf("Content-Type %q", ct)
				}
				got = splitBinary(t, r)
			} else {
				if h := r.header.Get(BinaryHeader); h != "" {
					t.Errorf("%s %q on a JSON response", BinaryHeader, h)
				}
				if err := strictDecode(r.body, &got); err != nil {
					t.Fatalf("%v\n%s", err, r.body)
				}
			}
			if len(got.Outputs) != len(tc.wantOutputs) {
				t.Fatalf("%d outputs, want %v", len(got.Outputs), tc.wantOutputs)
			}
			for i, o := range got.Outputs {
				if o.Name != tc.wantOutputs[i] {
					t.Errorf("output %d is %s, want %s", i, o.Name, tc.wantOutputs[i])
				}
				var ref tensor.Tensor
				for _, w := range want.Outputs {
					if w.Name == o.Name {
						ref = w
					}
				}
				// The JSON path writes the shortest decimal that reads
				// back as the same float32: the values are equal.
				if err := tensor.Close(o, ref, 0, 0); err != nil {
					t.Errorf("output %s differs from the JSON path's: %v", o.Name, err)
				}
			}
		})
	}
}

// TestBinaryTensorsRefused: each malformed binary request is a 400 that
// names what is wrong.
func TestBinaryTensorsRefused(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	s := serve(t, Options{Backend: newRegistry(silero)})
	const path = "/v2/models/silero-vad/infer"
	in := sileroInputs()
	body, n := binaryBody(t, in, []string{"input", "state", "sr"}, nil, nil)
	jsonOnly := requestBody(t, "", in)
	// withSize is body with one binary_data_size changed (the header
	// length given with it must grow by grow).
	withSize := func(from, to string) (b []byte, header string) {
		b = bytes.Replace(body, []byte(`"binary_data_size":`+from), []byte(`"binary_data_size":`+to), 1)
		return b, strconv.Itoa(n + len(to) - len(from))
	}
	badState, badStateLen := withSize("1024", "1000")
	badSr, badSrLen := withSize("8", "8.5")
	both := bytes.Replace(jsonOnly, []byte(`"name":"sr",`), []byte(`"name":"sr","parameters":{"binary_data_size":8},`), 1)
	for _, tc := range []struct {
		name   string
		body   []byte
		header string
		want   string
	}{
		{"header not a number", body, "lots", `Inference-Header-Content-Length "lots" is not a byte count`},
		{"header negative", body, "-1", "is not a byte count"},
		{"header past the body", body, strconv.Itoa(len(body) + 1), "the body has"},
		{"header cuts the JSON", body, strconv.Itoa(n - 5), "invalid inference request"},
		{"data cut short", body[:len(body)-4], strconv.Itoa(n), `input "sr" needs 8 bytes of binary data, 4 remain`},
		{"bytes left over", append(append([]byte(nil), body...), 1, 2, 3), strconv.Itoa(n), "3 bytes of binary data after the last input"},
		{"size disagrees with the shape", badState, badStateLen, `input "state": shape [2 1 128] of FP32 is 1024 bytes, binary_data_size says 1000`},
		{"size not a count", badSr, badSrLen, "binary_data_size 8.5 is not a byte count"},
		{"binary_data_size without the header", body[:n], "", "binary_data_size without the binary tensor data extension"},
		{"data and binary_data_size", both, strconv.Itoa(len(both)), `both data and binary_data_size`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r response
			if tc.header == "" {
				r = s.do(t, "POST", path, "application/json", tc.body)
			} else {
				r = s.postBinary(t, path, tc.body, tc.header)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(r.body, &e); err != nil {
				t.Fatalf("%d %s: %v", r.code, r.body, err)
			}
			if r.code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
				t.Errorf("%d %s; want 400 with %q", r.code, r.body, tc.want)
			}
		})
	}
}

func TestDecodeBinaryRequest(t *testing.T) {
	in := sileroInputs()
	body, n := binaryBody(t, in, []string{"input", "state", "sr"}, nil, nil)
	req, err := DecodeBinaryRequest(body, n)
	if err != nil {
		t.Fatal(err)
	}
	for i, got := range req.Inputs {
		if err := tensor.Close(got, in[i], 0, 0); err != nil {
			t.Errorf("input %s: %v", got.Name, err)
		}
	}
	if _, err := DecodeBinaryRequest(body, len(body)+1); !errors.Is(err, ErrRequest) {
		t.Errorf("header past the body: %v, want ErrRequest", err)
	}
}

// FuzzDecodeBinaryRequest: any body and header length gives a request or
// an ErrRequest, never a panic, and a request's binary inputs hold exactly
// the bytes after the header.
func FuzzDecodeBinaryRequest(f *testing.F) {
	body, n := binaryBody(f, sileroInputs(), []string{"input", "sr"}, nil, nil)
	f.Add(body, n)
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}}]}`+"\x01\x00"), 89)
	f.Add([]byte(`{}`), 2)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		req, err := DecodeBinaryRequest(b, n)
		if err != nil {
			if !errors.Is(err, ErrRequest) {
				t.Fatalf("error %v does not wrap ErrRequest", err)
			}
			return
		}
		total := 0
		for _, in := range req.Inputs {
			if _, ok := req.InputParameters[in.Name]["binary_data_size"]; ok {
				total += in.Len() * in.Datatype.Size()
			}
		}
		if total != len(b)-n {
			t.Fatalf("binary inputs hold %d bytes, the body has %d after the header", total, len(b)-n)
		}
	})
}
