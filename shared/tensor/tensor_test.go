package tensor

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestSpecMatches(t *testing.T) {
	spec := Spec{Name: "input", Datatype: FP32, Shape: []int64{-1, 4}}
	tests := []struct {
		name    string
		tensor  Tensor
		nonFin  bool
		wantErr error
	}{
		{"ok", Tensor{Name: "input", Datatype: FP32, Shape: []int64{2, 4}, Data: make([]float32, 8)}, false, nil},
		{"wrong name", Tensor{Name: "x", Datatype: FP32, Shape: []int64{1, 4}, Data: make([]float32, 4)}, false, ErrName},
		{"wrong dtype", Tensor{Name: "input", Datatype: FP64, Shape: []int64{1, 4}, Data: make([]float64, 4)}, false, ErrDatatype},
		{"wrong rank", Tensor{Name: "input", Datatype: FP32, Shape: []int64{4}, Data: make([]float32, 4)}, false, ErrShape},
		{"wrong fixed dim", Tensor{Name: "input", Datatype: FP32, Shape: []int64{1, 5}, Data: make([]float32, 5)}, false, ErrShape},
		{"zero dynamic dim", Tensor{Name: "input", Datatype: FP32, Shape: []int64{0, 4}, Data: []float32{}}, false, ErrShape},
		{"data shorter than shape", Tensor{Name: "input", Datatype: FP32, Shape: []int64{2, 4}, Data: make([]float32, 7)}, false, ErrShape},
		{"go type mismatch", Tensor{Name: "input", Datatype: FP32, Shape: []int64{1, 4}, Data: make([]float64, 4)}, false, ErrData},
		{"nan refused", Tensor{Name: "input", Datatype: FP32, Shape: []int64{1, 4}, Data: []float32{0, float32(math.NaN()), 0, 0}}, false, ErrNotFinite},
		{"inf refused", Tensor{Name: "input", Datatype: FP32, Shape: []int64{1, 4}, Data: []float32{0, 0, float32(math.Inf(1)), 0}}, false, ErrNotFinite},
		{"nan allowed", Tensor{Name: "input", Datatype: FP32, Shape: []int64{1, 4}, Data: []float32{0, float32(math.NaN()), 0, 0}}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := spec.Matches(tt.tensor, tt.nonFin)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Matches() = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.tensor.Name) {
				t.Errorf("error %q does not name the tensor", err)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	tensors := []Tensor{
		{Name: "b", Datatype: Bool, Shape: []int64{2}, Data: []bool{true, false}},
		{Name: "u8", Datatype: Uint8, Shape: []int64{3}, Data: []uint8{0, 7, 255}},
		{Name: "i8", Datatype: Int8, Shape: []int64{2}, Data: []int8{-128, 127}},
		{Name: "i16", Datatype: Int16, Shape: []int64{2}, Data: []int16{-32768, 32767}},
		{Name: "i32", Datatype: Int32, Shape: []int64{1}, Data: []int32{-5}},
		{Name: "i64", Datatype: Int64, Shape: []int64{1}, Data: []int64{16000}},
		{Name: "f32", Datatype: FP32, Shape: []int64{2, 2}, Data: []float32{0.0690874, -1.5, 3e-8, 1e30}},
		{Name: "f64", Datatype: FP64, Shape: []int64{}, Data: []float64{math.Pi}},
	}
	for _, want := range tensors {
		t.Run(want.Name, func(t *testing.T) {
			b, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			var got Tensor
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip: got %+v, want %+v (json %s)", got, want, b)
			}
		})
	}
}

func TestUnmarshalNested(t *testing.T) {
	var got Tensor
	in := `{"name":"x","datatype":"INT32","shape":[2,2],"data":[[1,2],[3,4]]}`
	if err := json.Unmarshal([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Data, []int32{1, 2, 3, 4}) {
		t.Fatalf("data = %v", got.Data)
	}
}

func TestUnmarshalErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"no name", `{"datatype":"FP32","shape":[1],"data":[1]}`, ErrName},
		{"bad dtype", `{"name":"x","datatype":"FP16","shape":[1],"data":[1]}`, ErrDatatype},
		{"no shape", `{"name":"x","datatype":"FP32","data":[1]}`, ErrShape},
		{"count mismatch", `{"name":"x","datatype":"FP32","shape":[3],"data":[1,2]}`, ErrShape},
		{"negative dim", `{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}`, ErrShape},
		{"int overflow", `{"name":"x","datatype":"UINT8","shape":[1],"data":[256]}`, ErrData},
		{"fraction in int", `{"name":"x","datatype":"INT64","shape":[1],"data":[1.5]}`, ErrData},
		{"bool in float", `{"name":"x","datatype":"FP32","shape":[1],"data":[true]}`, ErrData},
		{"number in bool", `{"name":"x","datatype":"BOOL","shape":[1],"data":[1]}`, ErrData},
		{"string in data", `{"name":"x","datatype":"FP32","shape":[1],"data":["1"]}`, ErrData},
		{"scalar data", `{"name":"x","datatype":"FP32","shape":[1],"data":1}`, ErrData},
		{"object data", `{"name":"x","datatype":"FP32","shape":[1],"data":[{}]}`, ErrData},
		{"fp32 overflow", `{"name":"x","datatype":"FP32","shape":[1],"data":[1e40]}`, ErrData},
		{"no data", `{"name":"x","datatype":"FP32","shape":[1]}`, ErrData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Tensor
			err := json.Unmarshal([]byte(tt.in), &got)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Unmarshal(%s) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestMarshalRefusesNonFinite(t *testing.T) {
	_, err := json.Marshal(Tensor{Name: "x", Datatype: FP32, Shape: []int64{1}, Data: []float32{float32(math.NaN())}})
	if !errors.Is(err, ErrNotFinite) {
		t.Fatalf("Marshal(NaN) = %v, want ErrNotFinite", err)
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	in := []Tensor{
		{Name: "raw", Datatype: Uint8, Shape: []int64{4}, Data: []uint8{1, 2, 3, 4}},
		{Name: "input", Datatype: FP32, Shape: []int64{1, 3}, Data: []float32{0.5, -0.25, 1}},
		{Name: "sr", Datatype: Int64, Shape: []int64{1}, Data: []int64{16000}},
		{Name: "flags", Datatype: Bool, Shape: []int64{2}, Data: []bool{true, false}},
		{Name: "pcm", Datatype: Int16, Shape: []int64{2}, Data: []int16{-2, 3}},
		{Name: "scalar", Datatype: FP64, Shape: []int64{}, Data: []float64{2.5}},
	}
	b, err := AppendBinary(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeBinary(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip mismatch:\n in %+v\nout %+v", in, out)
	}
	// Every truncation is an error, never a panic.
	for i := 0; i < len(b); i++ {
		if _, err := DecodeBinary(b[:i]); err == nil {
			t.Fatalf("DecodeBinary of %d/%d bytes succeeded", i, len(b))
		}
	}
	if _, err := DecodeBinary(append(b, 0)); !errors.Is(err, ErrData) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestClose(t *testing.T) {
	want := Tensor{Name: "o", Datatype: FP32, Shape: []int64{1, 1}, Data: []float32{0.0690874}}
	got := Tensor{Name: "o", Datatype: FP32, Shape: []int64{1, 1}, Data: []float32{0.0690900}}
	if err := Close(got, want, 1e-4, 0); err != nil {
		t.Fatalf("within tolerance: %v", err)
	}
	if err := Close(got, want, 1e-7, 0); err == nil {
		t.Fatal("outside tolerance accepted")
	}
	got.Shape = []int64{1}
	if err := Close(got, want, 1, 0); !errors.Is(err, ErrShape) {
		t.Fatalf("shape mismatch: %v", err)
	}
}

func FuzzUnmarshalJSON(f *testing.F) {
	f.Add([]byte(`{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]}`))
	f.Add([]byte(`{"name":"b","datatype":"BOOL","shape":[1],"data":[true]}`))
	f.Add([]byte(`{"name":"u","datatype":"UINT8","shape":[0],"data":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var tt Tensor
		if err := json.Unmarshal(b, &tt); err != nil {
			return
		}
		if err := tt.Check(); err != nil {
			t.Fatalf("decoded tensor is inconsistent: %v", err)
		}
		if _, err := json.Marshal(tt); err != nil && !errors.Is(err, ErrNotFinite) {
			t.Fatalf("re-marshal: %v", err)
		}
	})
}

func FuzzDecodeBinary(f *testing.F) {
	seed, _ := AppendBinary(nil, []Tensor{{Name: "raw", Datatype: Uint8, Shape: []int64{2}, Data: []uint8{1, 2}}})
	f.Add(seed)
	f.Add([]byte("EFT1\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := DecodeBinary(b)
		if err != nil {
			return
		}
		for _, tt := range ts {
			if err := tt.Check(); err != nil {
				t.Fatalf("decoded tensor is inconsistent: %v", err)
			}
		}
		again, err := AppendBinary(nil, ts)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if string(again) != string(b) {
			t.Fatalf("re-encoding differs")
		}
	})
}
