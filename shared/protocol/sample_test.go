package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

func validSample() *SampleRecord {
	return &SampleRecord{
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Model: "silero-vad@5.0.0", RequestID: "r1",
		Labels: map[string]string{"site": "berlin"},
		Inputs: []SampleTensor{
			NewSampleTensor(tensor.Tensor{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, 2}, Data: []float32{0.5, -1}}),
			NewSampleTensor(tensor.Tensor{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}}),
		},
		Outputs: []SampleTensor{NewSampleTensor(tensor.Tensor{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{0.25}})},
	}
}

func TestSampleRecordRoundTrip(t *testing.T) {
	r := validSample()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSampleRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	in, err := got.Inputs[0].Tensor()
	if err != nil {
		t.Fatal(err)
	}
	if f := in.Data.([]float32); len(f) != 2 || f[0] != 0.5 || f[1] != -1 {
		t.Errorf("input data %v", f)
	}
	sr, err := got.Inputs[1].Tensor()
	if err != nil || sr.Data.([]int64)[0] != 16000 {
		t.Errorf("sr %v, %v", sr.Data, err)
	}
	if got.Labels["site"] != "berlin" || !got.Time.Equal(r.Time) || got.RequestID != "r1" {
		t.Errorf("decoded %+v", got)
	}
}

func TestSampleRecordRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(r *SampleRecord)
		raw  []byte
		want error
		msg  string
	}{
		{name: "not an object", raw: []byte(`[1]`), want: ErrMalformed, msg: "not a JSON object"},
		{name: "bad json", raw: []byte(`{"time": 3}`), want: ErrMalformed},
		{name: "too large", raw: append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), MaxSampleRecordBytes)...), want: ErrTooLarge},
		{name: "no time", edit: func(r *SampleRecord) { r.Time = time.Time{} }, want: ErrInvalid, msg: `"time"`},
		{name: "bad model", edit: func(r *SampleRecord) { r.Model = "silero" }, want: ErrInvalid, msg: "name@version"},
		{name: "bad label key", edit: func(r *SampleRecord) { r.Labels = map[string]string{"-x": "y"} }, want: ErrInvalid, msg: "labels"},
		{name: "no inputs", edit: func(r *SampleRecord) { r.Inputs = nil }, want: ErrInvalid, msg: `"inputs"`},
		{name: "no outputs", edit: func(r *SampleRecord) { r.Outputs = nil }, want: ErrInvalid, msg: `"outputs"`},
		{name: "unnamed tensor", edit: func(r *SampleRecord) { r.Inputs[0].Name = "" }, want: ErrInvalid, msg: "inputs[0].name"},
		{name: "duplicate tensor", edit: func(r *SampleRecord) { r.Inputs[1].Name = "input" }, want: ErrInvalid, msg: "given twice"},
		{name: "bad datatype", edit: func(r *SampleRecord) { r.Outputs[0].Datatype = "FP16" }, want: ErrInvalid, msg: "outputs[0].datatype"},
		{name: "no shape", edit: func(r *SampleRecord) { r.Outputs[0].Shape = nil }, want: ErrInvalid, msg: "outputs[0].shape"},
		{name: "negative dim", edit: func(r *SampleRecord) { r.Outputs[0].Shape = []int64{-1} }, want: ErrInvalid, msg: "dimensions"},
		{name: "short data", edit: func(r *SampleRecord) { r.Inputs[0].Data = r.Inputs[0].Data[:7] }, want: ErrInvalid, msg: "7 bytes; shape [1 2] of FP32 needs 8"},
		{name: "huge shape", edit: func(r *SampleRecord) { r.Inputs[0].Shape = []int64{1 << 16, 1 << 16} }, want: ErrInvalid, msg: "more elements"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.raw
			if b == nil {
				r := validSample()
				tc.edit(r)
				var err error
				if b, err = json.Marshal(r); err != nil {
					t.Fatal(err)
				}
			}
			_, err := DecodeSampleRecord(b)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("DecodeSampleRecord: %v\nwant %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func FuzzDecodeSampleRecord(f *testing.F) {
	b, err := json.Marshal(validSample())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, s := range []string{"", "{}", "null", `{"time":"2026-01-01T00:00:00Z","model":"a@1.0.0","inputs":[{"name":"x","datatype":"BOOL","shape":[],"data":"AQ=="}],"outputs":[{"name":"y","datatype":"UINT8","shape":[0],"data":""}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeSampleRecord(b)
		if err != nil {
			if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		// A valid record's tensors decode, and it encodes and decodes again.
		for _, l := range [][]SampleTensor{r.Inputs, r.Outputs, r.Features} {
			for _, st := range l {
				tt, err := st.Tensor()
				if err != nil {
					t.Fatalf("valid record, tensor %q does not decode: %v", st.Name, err)
				}
				if int64(tt.Len()) != tensor.Elements(st.Shape) {
					t.Fatalf("tensor %q: %d elements, shape %v", st.Name, tt.Len(), st.Shape)
				}
			}
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(again) <= MaxSampleRecordBytes {
			if _, err := DecodeSampleRecord(again); err != nil {
				t.Fatalf("re-encoded record refused: %v", err)
			}
		}
	})
}
