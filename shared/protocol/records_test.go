package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// record is what the record payload types have in common.
type record interface{ Validate() error }

func ptr[T any](v T) *T { return &v }

// changed returns a copy of the record g, a *T, with f applied.
func changed[T any, P interface {
	*T
	record
}](g record, f func(P)) record {
	r := *g.(P)
	f(&r)
	return P(&r)
}

// recordGoldens are the record examples of docs/protocol.md, written to
// testdata/record-KIND.json (go test -run Golden -update).
func recordGoldens() []struct {
	name string
	rec  record
	zero func() record
} {
	return []struct {
		name string
		rec  record
		zero func() record
	}{
		{RecordPrediction, &PredictionRecord{
			Time: t0.Add(101 * time.Second), Model: "silero-vad@1.4.0", Provider: "cuda", RequestID: "req-42",
			Code: 200, LatencyMs: 3.2, InferMs: 2.134,
			Outputs: map[string]TensorSample{"output": {Values: []float64{float64(float32(0.0690874))}, Float32: true}},
			Features: map[string]TensorSample{"features": {Float32: true, Values: []float64{
				float64(float32(0.0123)), float64(float32(-41.5)), float64(float32(0.061)),
				float64(float32(1840.25)), float64(float32(0.37)), float64(float32(5.5))}}},
		}, func() record { return new(PredictionRecord) }},
		{RecordMetrics, &MetricsRecord{
			Window: "1m0s", Start: t0.Add(100 * time.Second), End: t0.Add(160 * time.Second),
			Model: "silero-vad@1.4.0", Provider: "cuda", Requests: 240, Errors: 1, ClientErrors: 1,
			P50Ms: 2.9, P95Ms: 4.1, MaxMs: 7.812, InferP50Ms: 2.1, InferP95Ms: 3.05,
			SampleRate: 0.1, Buffer: BufferStats{Records: 12, Bytes: 8192},
		}, func() record { return new(MetricsRecord) }},
		{RecordDrift, &DriftRecord{
			Model: "silero-vad@1.4.0", Profile: "66e3b852eeb79455dc17b96f4b354c0f",
			Start: t0, End: t0.Add(5 * time.Minute), Predictions: 3000, Errors: 2,
			Score: ptr(2.0 / 7), Tested: 7, Drifted: []string{"rms", "zcr"},
			Summary: json.RawMessage(`"RUZEUwFm47hS7reUVdwXuW9LNUwPgIC0vbb22pgx"`),
		}, func() record { return new(DriftRecord) }},
		{RecordShadow, &ShadowRecord{
			Candidate: "silero-vad@1.5.0-rc.1", Active: "silero-vad@1.4.0",
			Start: t0.Add(2 * time.Hour), End: t0.Add(2*time.Hour + 5*time.Minute),
			Samples: 480, Agreed: 471, Errors: 1, Dropped: 3, Agreement: ptr(471.0 / 480),
			LatencyP50Ms: 2.4, LatencyP95Ms: 3.9, ActiveP95Ms: 4.1, MaxAbsDiff: 0.0123,
		}, func() record { return new(ShadowRecord) }},
	}
}

func TestRecordGolden(t *testing.T) {
	for _, g := range recordGoldens() {
		t.Run(g.name, func(t *testing.T) {
			if err := g.rec.Validate(); err != nil {
				t.Fatal(err)
			}
			indented, err := json.MarshalIndent(g.rec, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden := append(indented, '\n')
			checkGolden(t, "record-"+g.name, golden)
			// The wire form (compact, as the agent appends it) decodes to a
			// valid record that encodes to the same bytes.
			wire, err := json.Marshal(g.rec)
			if err != nil {
				t.Fatal(err)
			}
			var c bytes.Buffer
			if err := json.Compact(&c, golden); err != nil || !bytes.Equal(c.Bytes(), wire) {
				t.Fatalf("the golden's compact form is not the wire form (%v):\n%s\n%s", err, c.Bytes(), wire)
			}
			back := g.zero()
			if err := json.Unmarshal(wire, back); err != nil {
				t.Fatal(err)
			}
			if err := back.Validate(); err != nil {
				t.Fatal(err)
			}
			if re, err := json.Marshal(back); err != nil || !bytes.Equal(re, wire) {
				t.Fatalf("decode+encode is not the identity (%v):\n%s\n%s", err, re, wire)
			}
		})
	}
}

// TestRecordWireNames pins every JSON name and omitempty of the record
// types with a value whose fields are all set, and one whose optional
// fields are all zero: renaming a field, or dropping or adding an
// omitempty, breaks old agents or old fleetds.
func TestRecordWireNames(t *testing.T) {
	full := []struct {
		rec  any
		want string
	}{
		{PredictionRecord{Time: t0, Model: "m@1.0.0", Provider: "cpu", RequestID: "r", Raw: true, Code: 200, LatencyMs: 1.5, InferMs: 0.5, Error: "e",
			Outputs:  map[string]TensorSample{"o": {Values: []float64{1}}},
			Features: map[string]TensorSample{"f": {Summary: &TensorSummary{Datatype: tensor.FP32, Shape: []int64{1, 20}, N: 20, Min: -1, Max: 1, Mean: 0.5, NonFinite: 2}}}},
			`{"time":"2026-03-01T12:00:00Z","model":"m@1.0.0","provider":"cpu","requestId":"r","raw":true,"code":200,"latencyMs":1.5,"inferMs":0.5,"error":"e",` +
				`"outputs":{"o":[1]},"features":{"f":{"datatype":"FP32","shape":[1,20],"n":20,"min":-1,"max":1,"mean":0.5,"nonFinite":2}}}`},
		{PredictionRecord{},
			`{"time":"0001-01-01T00:00:00Z","model":"","code":0,"latencyMs":0,"inferMs":0}`},
		{MetricsRecord{Window: "1m0s", Start: t0, End: t0, Model: "m@1.0.0", Provider: "cpu", Requests: 1, Errors: 2, ClientErrors: 3, Raw: 4,
			P50Ms: 5, P95Ms: 6, MaxMs: 7, InferP50Ms: 8, InferP95Ms: 9, SampleRate: 0.5, SamplesDropped: 10, Buffer: BufferStats{Records: 11, Bytes: 12, Dropped: 13}},
			`{"window":"1m0s","start":"2026-03-01T12:00:00Z","end":"2026-03-01T12:00:00Z","model":"m@1.0.0","provider":"cpu","requests":1,"errors":2,"clientErrors":3,"raw":4,` +
				`"p50Ms":5,"p95Ms":6,"maxMs":7,"inferP50Ms":8,"inferP95Ms":9,"sampleRate":0.5,"samplesDropped":10,"buffer":{"records":11,"bytes":12,"dropped":13}}`},
		{MetricsRecord{},
			`{"window":"","start":"0001-01-01T00:00:00Z","end":"0001-01-01T00:00:00Z","model":"","requests":0,"errors":0,"clientErrors":0,` +
				`"p50Ms":0,"p95Ms":0,"maxMs":0,"inferP50Ms":0,"inferP95Ms":0,"sampleRate":0,"samplesDropped":0,"buffer":{"records":0,"bytes":0,"dropped":0}}`},
		{DriftRecord{Model: "m@1.0.0", Profile: "p", Start: t0, End: t0, Predictions: 1, Errors: 2, Score: ptr(0.5), Tested: 3, Drifted: []string{"a"}, Summary: json.RawMessage(`"s"`)},
			`{"model":"m@1.0.0","profile":"p","start":"2026-03-01T12:00:00Z","end":"2026-03-01T12:00:00Z","predictions":1,"errors":2,"score":0.5,"tested":3,"drifted":["a"],"summary":"s"}`},
		{DriftRecord{Summary: json.RawMessage(`""`)},
			`{"model":"","profile":"","start":"0001-01-01T00:00:00Z","end":"0001-01-01T00:00:00Z","predictions":0,"errors":0,"tested":0,"summary":""}`},
		{ShadowRecord{Candidate: "c@1.0.0", Active: "a@1.0.0", Start: t0, End: t0, Samples: 1, Agreed: 2, Errors: 3, Dropped: 4, Agreement: ptr(0.5),
			LatencyP50Ms: 5, LatencyP95Ms: 6, ActiveP95Ms: 7, MaxAbsDiff: 8},
			`{"candidate":"c@1.0.0","active":"a@1.0.0","start":"2026-03-01T12:00:00Z","end":"2026-03-01T12:00:00Z","samples":1,"agreed":2,"errors":3,"dropped":4,"agreement":0.5,` +
				`"latencyP50Ms":5,"latencyP95Ms":6,"activeP95Ms":7,"maxAbsDiff":8}`},
		{ShadowRecord{},
			`{"candidate":"","active":"","start":"0001-01-01T00:00:00Z","end":"0001-01-01T00:00:00Z","samples":0,"agreed":0,"errors":0,"dropped":0,` +
				`"latencyP50Ms":0,"latencyP95Ms":0,"activeP95Ms":0,"maxAbsDiff":0}`},
	}
	for _, c := range full {
		b, err := json.Marshal(c.rec)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("%T:\n got: %s\nwant: %s", c.rec, b, c.want)
		}
	}
}

func TestTensorSampleJSON(t *testing.T) {
	f32 := []float64{float64(float32(0.1)), float64(float32(1e-7)), float64(float32(3.4028235e38)), -2}
	for _, c := range []struct {
		s    TensorSample
		want string
	}{
		{TensorSample{Values: f32, Float32: true}, `[0.1,1e-7,3.4028235e+38,-2]`},
		{TensorSample{Values: f32[:1]}, `[0.10000000149011612]`},
		{TensorSample{Values: []float64{0.1, 2.5e21}}, `[0.1,2.5e+21]`},
		{TensorSample{Values: []float64{}}, `[]`},
		{TensorSample{Values: []float64{}, Float32: true}, `[]`},
		{TensorSample{}, `null`},
		{TensorSample{Float32: true}, `null`},
		{TensorSample{Summary: &TensorSummary{Datatype: tensor.FP64, Shape: []int64{3}, N: 3, Min: 1, Max: 1, Mean: 1, NonFinite: 2}},
			`{"datatype":"FP64","shape":[3],"n":3,"min":1,"max":1,"mean":1,"nonFinite":2}`},
	} {
		b, err := json.Marshal(c.s)
		if err != nil || string(b) != c.want {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", c.s, b, err, c.want)
			continue
		}
		var back TensorSample
		if err := json.Unmarshal(b, &back); err != nil {
			t.Errorf("Unmarshal(%s): %v", b, err)
			continue
		}
		if re, _ := json.Marshal(back); string(re) != c.want {
			t.Errorf("Unmarshal(%s) encodes as %s", b, re)
		}
	}
	for _, bad := range []string{`"x"`, `1`, `true`, `["a"]`, `[[1]]`, `[null]`, `[1,"a"]`, `[1e400]`, `{"n":"x"}`} {
		var s TensorSample
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("Unmarshal(%s) = %+v, want an error", bad, s)
		}
	}
	var m map[string]TensorSample
	if err := json.Unmarshal([]byte(` { "a" : [ 1 , 2 ] , "b" : null , "c" : { "mean" : 3 } } `), &m); err != nil ||
		len(m) != 3 || len(m["a"].Values) != 2 || m["b"].Values != nil || m["b"].Summary != nil || m["c"].Summary.Mean != 3 {
		t.Errorf("Unmarshal with spaces: %+v, %v", m, err)
	}
}

func TestRecordValidate(t *testing.T) {
	golden := map[string]record{}
	for _, g := range recordGoldens() {
		golden[g.name] = g.rec
	}
	pred := func(f func(*PredictionRecord)) record { return changed(golden[RecordPrediction], f) }
	met := func(f func(*MetricsRecord)) record { return changed(golden[RecordMetrics], f) }
	dri := func(f func(*DriftRecord)) record { return changed(golden[RecordDrift], f) }
	sha := func(f func(*ShadowRecord)) record { return changed(golden[RecordShadow], f) }
	for _, c := range []struct {
		rec   record
		field string
	}{
		{(*PredictionRecord)(nil), "nil"},
		{pred(func(r *PredictionRecord) { r.Time = time.Time{} }), `"time"`},
		{pred(func(r *PredictionRecord) { r.Model = "" }), `"model"`},
		{pred(func(r *PredictionRecord) { r.Model = "silero-vad" }), `"model"`},
		{pred(func(r *PredictionRecord) { r.Model = "Silero@1.0.0" }), `"model"`},
		{pred(func(r *PredictionRecord) { r.Model = "silero@v1.0" }), `"model"`},
		{pred(func(r *PredictionRecord) { r.Provider = "CUDA" }), `"provider"`},
		{pred(func(r *PredictionRecord) { r.Code = 0 }), `"code"`},
		{pred(func(r *PredictionRecord) { r.LatencyMs = -1 }), `"latencyMs"`},
		{pred(func(r *PredictionRecord) { r.InferMs = math.NaN() }), `"inferMs"`},
		{pred(func(r *PredictionRecord) { r.Error = "\xff" }), `"error"`},
		{pred(func(r *PredictionRecord) {
			r.Outputs = map[string]TensorSample{"o": {Values: make([]float64, MaxSampleValues+1)}}
		}), `"outputs.o"`},
		{pred(func(r *PredictionRecord) { r.Outputs = map[string]TensorSample{"o": {Values: []float64{math.Inf(1)}}} }), `"outputs.o"`},
		{pred(func(r *PredictionRecord) {
			r.Features = map[string]TensorSample{"f": {Values: []float64{}, Summary: &TensorSummary{}}}
		}), `"features.f"`},
		{pred(func(r *PredictionRecord) {
			r.Features = map[string]TensorSample{"f": {Summary: &TensorSummary{N: 1, NonFinite: 2}}}
		}), `"features.f"`},
		{pred(func(r *PredictionRecord) {
			r.Features = map[string]TensorSample{"f": {Summary: &TensorSummary{N: 1, Shape: []int64{-1}}}}
		}), `"features.f.shape"`},
		{pred(func(r *PredictionRecord) { r.Features = map[string]TensorSample{"": {}} }), `"features"`},

		{(*MetricsRecord)(nil), "nil"},
		{met(func(r *MetricsRecord) { r.Window = "a minute" }), `"window"`},
		{met(func(r *MetricsRecord) { r.Start = time.Time{} }), `"start"`},
		{met(func(r *MetricsRecord) { r.End = r.Start.Add(-time.Second) }), `"end"`},
		{met(func(r *MetricsRecord) { r.Model = "x" }), `"model"`},
		{met(func(r *MetricsRecord) { r.Errors = r.Requests + 1 }), `"errors"`},
		{met(func(r *MetricsRecord) { r.ClientErrors = r.Errors + 1 }), `"clientErrors"`},
		{met(func(r *MetricsRecord) { r.Raw = r.Requests + 1 }), `"raw"`},
		{met(func(r *MetricsRecord) { r.P95Ms = math.Inf(1) }), `"p95Ms"`},
		{met(func(r *MetricsRecord) { r.InferP50Ms = -0.5 }), `"inferP50Ms"`},
		{met(func(r *MetricsRecord) { r.SampleRate = 1.5 }), `"sampleRate"`},
		{met(func(r *MetricsRecord) { r.Buffer.Bytes = -1 }), `"buffer.bytes"`},

		{(*DriftRecord)(nil), "nil"},
		{dri(func(r *DriftRecord) { r.Model = "" }), `"model"`},
		{dri(func(r *DriftRecord) { r.Profile = "" }), `"profile"`},
		{dri(func(r *DriftRecord) { r.Profile = "a b" }), `"profile"`},
		{dri(func(r *DriftRecord) { r.End = time.Time{} }), `"end"`},
		{dri(func(r *DriftRecord) { r.Errors = r.Predictions + 1 }), `"errors"`},
		{dri(func(r *DriftRecord) { r.Score = ptr(1.5) }), `"score"`},
		{dri(func(r *DriftRecord) { r.Tested, r.Drifted = 0, nil }), `"score"`},
		{dri(func(r *DriftRecord) { r.Tested = -1 }), `"tested"`},
		{dri(func(r *DriftRecord) { r.Drifted = []string{"a", "b", "c", "d", "e", "f", "g", "h"} }), `"drifted"`},
		{dri(func(r *DriftRecord) { r.Drifted = []string{""} }), `"drifted"`},
		{dri(func(r *DriftRecord) { r.Summary = nil }), `"summary"`},
		{dri(func(r *DriftRecord) { r.Summary = json.RawMessage(`{}`) }), `"summary"`},

		{(*ShadowRecord)(nil), "nil"},
		{sha(func(r *ShadowRecord) { r.Candidate = "" }), `"candidate"`},
		{sha(func(r *ShadowRecord) { r.Active = "a@b" }), `"active"`},
		{sha(func(r *ShadowRecord) { r.Start = time.Time{} }), `"start"`},
		{sha(func(r *ShadowRecord) { r.Agreed = r.Samples + 1 }), `"agreed"`},
		{sha(func(r *ShadowRecord) { r.Errors = r.Samples - r.Agreed + 1 }), `"agreed"`},
		{sha(func(r *ShadowRecord) { r.Agreement = nil }), `"agreement"`},
		{sha(func(r *ShadowRecord) { r.Samples, r.Agreed, r.Errors = 0, 0, 0 }), `"agreement"`},
		{sha(func(r *ShadowRecord) { r.Agreement = ptr(-0.1) }), `"agreement"`},
		{sha(func(r *ShadowRecord) { r.MaxAbsDiff = math.NaN() }), `"maxAbsDiff"`},
		{sha(func(r *ShadowRecord) { r.ActiveP95Ms = -1 }), `"activeP95Ms"`},
	} {
		err := c.rec.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%T %+v: Validate = %v, want ErrInvalid naming %s", c.rec, c.rec, err, c.field)
		}
	}
	// What an agent writes at the edges is valid: an empty shadow
	// window, a drift window without tested features, a failed request.
	for _, r := range []record{
		sha(func(r *ShadowRecord) { r.Samples, r.Agreed, r.Errors, r.Agreement = 0, 0, 0, nil }),
		dri(func(r *DriftRecord) { r.Score, r.Tested, r.Drifted = nil, 0, nil }),
		pred(func(r *PredictionRecord) {
			r.Code, r.Error, r.Outputs, r.Features, r.Raw = 400, "bad input", nil, nil, true
		}),
		pred(func(r *PredictionRecord) { r.Outputs = map[string]TensorSample{"o": {}, "p": {Values: []float64{}}} }),
		met(func(r *MetricsRecord) { r.Window, r.End = "0s", r.Start }),
	} {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
}

func TestParseNumbers(t *testing.T) {
	for in, want := range map[string][]float64{
		`[]`: {}, `[ ]`: {}, "[\t\n 1 ]": {1}, `[1,2.5,-3e-2, 4E+1 ,0]`: {1, 2.5, -0.03, 40, 0}, `[-0]`: {math.Copysign(0, -1)},
	} {
		got, err := parseNumbers([]byte(in))
		if err != nil || len(got) != len(want) {
			t.Errorf("parseNumbers(%s) = %v, %v; want %v", in, got, err, want)
			continue
		}
		for i := range want {
			if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
				t.Errorf("parseNumbers(%s) = %v; want %v", in, got, want)
			}
		}
	}
	for _, in := range []string{``, `[`, `]`, `[1,]`, `[,1]`, `[1 2]`, `[1,,2]`, `[-]`, `[1e]`, `[1-2]`, `[.5]`, `[+1]`, `[Inf]`, `[NaN]`, `[0x10]`, `[1_0]`, `[true]`, `[1] `, ` [1]`} {
		if got, err := parseNumbers([]byte(in)); err == nil {
			t.Errorf("parseNumbers(%q) = %v, want an error", in, got)
		}
	}
}

// FuzzParseNumbers: on valid JSON, parseNumbers agrees with
// json.Unmarshal into a []float64 (which also reads null as 0, where
// parseNumbers refuses it).
func FuzzParseNumbers(f *testing.F) {
	for _, s := range []string{`[]`, `[1, 2.5e3, -0.0690874]`, `[1e400]`, `[null]`, `[1,"a"]`, ` [ 1 ] `, `[01]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		b = bytes.TrimSpace(b)
		var want []float64
		werr := json.Unmarshal(b, &want)
		got, err := parseNumbers(b)
		switch {
		case err == nil && werr != nil:
			t.Fatalf("parseNumbers(%s) = %v, json.Unmarshal: %v", b, got, werr)
		case err != nil && werr == nil && !bytes.Contains(b, []byte("null")):
			t.Fatalf("parseNumbers(%s): %v, json.Unmarshal = %v", b, err, want)
		case err == nil:
			if len(got) != len(want) {
				t.Fatalf("parseNumbers(%s) = %v, json.Unmarshal = %v", b, got, want)
			}
			for i := range got {
				if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
					t.Fatalf("parseNumbers(%s) = %v, json.Unmarshal = %v", b, got, want)
				}
			}
		}
	})
}

// FuzzRecords: a record payload that decodes and validates encodes, and
// what it encodes to decodes to the same record.
func FuzzRecords(f *testing.F) {
	for _, g := range recordGoldens() {
		b, err := json.Marshal(g.rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"outputs":{"a":[1,2],"b":{"mean":1},"c":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, g := range recordGoldens() {
			r := g.zero()
			if json.Unmarshal(b, r) != nil || r.Validate() != nil {
				continue
			}
			enc, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("%s: a valid record does not encode: %v", g.name, err)
			}
			back := g.zero()
			if err := json.Unmarshal(enc, back); err != nil {
				t.Fatalf("%s: %s does not decode: %v", g.name, enc, err)
			}
			if re, err := json.Marshal(back); err != nil || !bytes.Equal(re, enc) {
				t.Fatalf("%s: %s encodes again as %s (%v)", g.name, enc, re, err)
			}
		}
	})
}
