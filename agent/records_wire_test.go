package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// wireRecords builds one representative record of each kind the agent
// writes, through the code that writes them, and encodes it as it goes to
// the outbox.
func wireRecords(t *testing.T) map[string][]byte {
	t.Helper()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	enc := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out := map[string][]byte{}

	large := make([]float32, 20)
	for i := range large {
		large[i] = float32(i) / 8
	}
	ok := api.Prediction{
		Model: "silero-vad", Version: "1.4.0", Provider: "cuda", RequestID: "req-7",
		Time: t0.Add(1500 * time.Millisecond), Latency: 3217 * time.Microsecond, InferLatency: 2500 * time.Microsecond, Code: 200,
		Output: &model.Output{
			Tensors: []tensor.Tensor{
				{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 3}, Data: []float32{0.0690874, 0.1, 1e-7}},
				{Name: "large", Datatype: tensor.FP32, Shape: []int64{4, 5}, Data: large},
				{Name: "nonfinite", Datatype: tensor.FP64, Shape: []int64{3}, Data: []float64{1, math.NaN(), math.Inf(1)}},
				{Name: "labels", Datatype: tensor.Int64, Shape: []int64{2}, Data: []int64{3, -1}},
				{Name: "scores", Datatype: tensor.FP64, Shape: []int64{2}, Data: []float64{0.1, 2.5e21}},
				{Name: "mismatched", Datatype: tensor.FP32, Shape: []int64{3}, Data: []float32{1}},
			},
			Features: []tensor.Tensor{{Name: "features", Datatype: tensor.FP32, Shape: []int64{1, 2}, Data: []float32{-0.25, 3.4028235e38}}},
		},
	}
	out["prediction"] = enc(predictionRecord(ok, ok.Model+"@"+ok.Version))
	failed := api.Prediction{
		Model: "silero-vad", Version: "1.4.0", Provider: "cpu", Raw: true,
		Time: t0, Latency: 250 * time.Microsecond, Code: 400,
		Err: errors.New("request: " + strings.Repeat("é", 300)),
	}
	out["prediction-failed"] = enc(predictionRecord(failed, failed.Model+"@"+failed.Version))

	w := &window{model: "silero-vad@1.4.0"}
	for i := range 10 {
		p := ok
		p.Latency = time.Duration(i+1) * 1100 * time.Microsecond
		p.InferLatency = time.Duration(i+1) * 700 * time.Microsecond
		switch i {
		case 3:
			p.Err, p.Code = errors.New("bad input"), 400
		case 7:
			p.Err, p.Code = errors.New("boom"), 500
		case 8:
			p.Raw = true
		}
		w.add(p)
	}
	m := w.record(t0, t0.Add(time.Minute))
	m.Buffer = protocol.BufferStats{Records: 12, Bytes: 8192, Dropped: 3}
	m.SampleRate = 0.25
	m.SamplesDropped = 5
	out["metrics"] = enc(m)

	sw := &shadowWindow{candidate: "silero-vad@1.5.0", active: "silero-vad@1.4.0", start: t0}
	for i := range 8 {
		sw.add(i%3 != 0, i == 5, time.Duration(i+2)*time.Millisecond, time.Duration(i+1)*time.Millisecond, float64(i)/16)
	}
	sw.dropped = 2
	out["shadow"] = enc(sw.record(t0.Add(time.Minute)))
	empty := &shadowWindow{candidate: "silero-vad@1.5.0", active: "silero-vad@1.4.0", start: t0}
	out["shadow-empty"] = enc(empty.record(t0.Add(time.Minute)))

	_, prof := sileroProfile(t)
	rng := rand.New(rand.NewPCG(1, 2))
	dw := &driftWindow{model: "silero-vad", version: "1.4.0", profile: prof, sum: drift.NewSummary(prof)}
	dw.sum.Start = t0
	for i := range 300 {
		o := sileroOutputs(prof, rng)
		if f := o.Features[0].Data.([]float32); i%2 == 0 {
			f[0], f[1] = f[0]*4, f[1]+1 // two features drift
		}
		dw.sum.ObserveHealth(time.Duration(i%5+1)*time.Millisecond, i == 17)
		if err := dw.sum.ObserveTensors(o.Features, o.Tensors); err != nil {
			t.Fatal(err)
		}
	}
	b, err := dw.record(t0.Add(5 * time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	out["drift"] = b
	few := &driftWindow{model: "silero-vad", version: "1.4.0", profile: prof, sum: drift.NewSummary(prof)}
	few.sum.Start = t0
	few.sum.ObserveHealth(time.Millisecond, true)
	if b, err = few.record(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	out["drift-untested"] = b
	return out
}

// TestRecordsWire: the records the agent writes are byte for byte what
// it wrote before their payload types moved to shared/protocol (old
// agents and new fleetd, and the reverse, read each other), and they
// decode into the shared types and pass their Validate.
func TestRecordsWire(t *testing.T) {
	got := wireRecords(t)
	if len(got) != len(wireGolden) {
		t.Errorf("%d records, %d goldens", len(got), len(wireGolden))
	}
	for name, b := range got {
		if want, ok := wireGolden[name]; !ok {
			t.Errorf("%s: no golden: %s", name, hashSummary(b))
		} else if h := hashSummary(b); string(h) != want {
			t.Errorf("%s:\n got: %s\nwant: %s", name, h, want)
		}
		var v interface{ Validate() error }
		switch kind, _, _ := strings.Cut(name, "-"); kind {
		case protocol.RecordPrediction:
			v = new(protocol.PredictionRecord)
		case protocol.RecordMetrics:
			v = new(protocol.MetricsRecord)
		case protocol.RecordDrift:
			v = new(protocol.DriftRecord)
		case protocol.RecordShadow:
			v = new(protocol.ShadowRecord)
		default:
			t.Fatalf("%s: no record kind", name)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if err := v.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if re, err := json.Marshal(v); err != nil || !bytes.Equal(re, b) {
			t.Errorf("%s: decoded and encoded again: %s, %v", name, hashSummary(re), err)
		}
	}
}

// hashSummary replaces the value of a drift record's summary (a long
// base64 string) by its SHA-256.
func hashSummary(b []byte) []byte {
	const key = `"summary":"`
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return b
	}
	start := i + len(key)
	end := bytes.IndexByte(b[start:], '"')
	if end < 0 {
		return b
	}
	h := sha256.Sum256(b[start : start+end])
	return slices.Concat(b[:start], []byte("sha256:"+hex.EncodeToString(h[:])), b[start+end:])
}

// wireGolden is what the agent wrote before the payload types moved to
// shared/protocol (drift summaries hashed: hashSummary).
var wireGolden = map[string]string{
	"drift":             `{"model":"silero-vad@1.4.0","profile":"66e3b852eeb79455dc17b96f4b354c0f","start":"2026-03-01T12:00:00Z","end":"2026-03-01T12:05:00Z","predictions":300,"errors":1,"score":0.2857142857142857,"tested":7,"drifted":["rms","zcr"],"summary":"sha256:ea6beacd330eb943d6805ef601c11c88bd2786702dc5108cdfbf2467c73a6425"}`,
	"drift-untested":    `{"model":"silero-vad@1.4.0","profile":"66e3b852eeb79455dc17b96f4b354c0f","start":"2026-03-01T12:00:00Z","end":"2026-03-01T12:00:01Z","predictions":1,"errors":1,"tested":0,"summary":"sha256:e0a170037874cb7a6ca3655a291847da4f0de7f655a6a919fe914a12437b1138"}`,
	"metrics":           `{"window":"1m0s","start":"2026-03-01T12:00:00Z","end":"2026-03-01T12:01:00Z","model":"silero-vad@1.4.0","provider":"cuda","requests":10,"errors":2,"clientErrors":1,"raw":1,"p50Ms":5.5,"p95Ms":11,"maxMs":11,"inferP50Ms":3.5,"inferP95Ms":7,"sampleRate":0.25,"samplesDropped":5,"buffer":{"records":12,"bytes":8192,"dropped":3}}`,
	"prediction":        `{"time":"2026-03-01T12:00:01.5Z","model":"silero-vad@1.4.0","provider":"cuda","requestId":"req-7","code":200,"latencyMs":3.217,"inferMs":2.5,"outputs":{"labels":[3,-1],"large":{"datatype":"FP32","shape":[4,5],"n":20,"min":0,"max":2.375,"mean":1.1875},"mismatched":{"datatype":"FP32","shape":[3],"n":1,"min":0,"max":0,"mean":0},"nonfinite":{"datatype":"FP64","shape":[3],"n":3,"min":1,"max":1,"mean":1,"nonFinite":2},"output":[0.0690874,0.1,1e-7],"scores":[0.1,2.5e+21]},"features":{"features":[-0.25,3.4028235e+38]}}`,
	"prediction-failed": `{"time":"2026-03-01T12:00:00Z","model":"silero-vad@1.4.0","provider":"cpu","raw":true,"code":400,"latencyMs":0.25,"inferMs":0,"error":"request: ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé…"}`,
	"shadow":            `{"candidate":"silero-vad@1.5.0","active":"silero-vad@1.4.0","start":"2026-03-01T12:00:00Z","end":"2026-03-01T12:01:00Z","samples":8,"agreed":4,"errors":1,"dropped":2,"agreement":0.5,"latencyP50Ms":5,"latencyP95Ms":9,"activeP95Ms":8,"maxAbsDiff":0.4375}`,
	"shadow-empty":      `{"candidate":"silero-vad@1.5.0","active":"silero-vad@1.4.0","start":"2026-03-01T12:00:00Z","end":"2026-03-01T12:01:00Z","samples":0,"agreed":0,"errors":0,"dropped":0,"latencyP50Ms":0,"latencyP95Ms":0,"activeP95Ms":0,"maxAbsDiff":0}`,
}
