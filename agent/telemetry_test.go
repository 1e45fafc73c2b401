package agent

import (
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

func openOutbox(t *testing.T) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(t.TempDir(), OutboxFile), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	return ob
}

func testPrediction(i int, err error) api.Prediction {
	p := api.Prediction{
		Model: "vad", Version: "1.0.0", Provider: "cpu", Time: time.Unix(1700000000, 0),
		Latency: time.Duration(i+1) * time.Millisecond, InferLatency: time.Duration(i+1) * 500 * time.Microsecond,
		Code: 200, Err: err,
	}
	if err != nil {
		p.Code = 400
	} else {
		p.Output = &model.Output{Tensors: []tensor.Tensor{{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{0.5}}}}
	}
	return p
}

// TestTelemetryQueueFull: samples that find the queue full are dropped and
// counted, never waited for; what was queued is appended at stop, with the
// last metrics window.
func TestTelemetryQueueFull(t *testing.T) {
	ob := openOutbox(t)
	tel := newTelemetry(ob, testLogger(t), 1, time.Hour, 1)
	for i := range 3 {
		tel.observe(testPrediction(i, nil)) // the appender is not running: one fits
	}
	tel.observe(testPrediction(3, errors.New("bad input")))
	if st := tel.stats(); st.Observed != 4 || st.Dropped != 3 {
		t.Fatalf("stats %+v, want 4 observed and 3 dropped", st)
	}
	tel.start()
	tel.stop()
	tel.observe(testPrediction(4, nil)) // after stop: dropped, no panic
	st := tel.stats()
	if st.Sampled != 1 || st.Dropped != 4 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
	recs, err := ob.Peek(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Kind != protocol.RecordPrediction || recs[1].Kind != protocol.RecordMetrics {
		t.Fatalf("records %+v", recs)
	}
	var m protocol.MetricsRecord
	if err := json.Unmarshal(recs[1].Payload, &m); err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("metrics record %s: %v", recs[1].Payload, err)
	}
	if m.Model != "vad@1.0.0" || m.Requests != 4 || m.Errors != 1 || m.ClientErrors != 1 || m.P50Ms != 2 || m.P95Ms != 4 || m.MaxMs != 4 ||
		m.SamplesDropped != 3 || m.SampleRate != 1 {
		t.Fatalf("metrics record %s", recs[1].Payload)
	}
}

// TestTelemetryRate: rate 0 samples nothing but still counts.
func TestTelemetryRate(t *testing.T) {
	ob := openOutbox(t)
	tel := newTelemetry(ob, testLogger(t), 0, time.Hour, 16)
	tel.start()
	for i := range 10 {
		tel.observe(testPrediction(i, nil))
	}
	tel.stop()
	if st := tel.stats(); st.Observed != 10 || st.Sampled != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	if s := ob.Stats(); s.Records != 1 {
		t.Fatalf("%d records, want the metrics window only", s.Records)
	}
}

func TestSummarize(t *testing.T) {
	big := make([]float32, 256)
	for i := range big {
		big[i] = float32(i)
	}
	got := summarize([]tensor.Tensor{
		{Name: "p", Datatype: tensor.FP32, Shape: []int64{1, 2}, Data: []float32{0.25, 0.75}},
		{Name: "ids", Datatype: tensor.Int64, Shape: []int64{3}, Data: []int64{1, 2, 3}},
		{Name: "raw", Datatype: tensor.Uint8, Shape: []int64{2}, Data: []uint8{7, 9}},
		{Name: "big", Datatype: tensor.FP32, Shape: []int64{2, 128}, Data: big},
		{Name: "nan", Datatype: tensor.FP64, Shape: []int64{2}, Data: []float64{math.NaN(), 1}},
	})
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"p":[0.25,0.75]`,
		`"ids":[1,2,3]`,
		`"raw":[7,9]`,
		`"big":{"datatype":"FP32","shape":[2,128],"n":256,"min":0,"max":255,"mean":127.5}`,
		`"nan":{"datatype":"FP64","shape":[2],"n":2,"min":1,"max":1,"mean":1,"nonFinite":1}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("summary %s lacks %s", b, want)
		}
	}
	if summarize(nil) != nil {
		t.Error("summary of no tensors")
	}
}

func TestQuantiles(t *testing.T) {
	for _, tc := range []struct {
		in       []float64
		p50, p95 float64
	}{
		{nil, 0, 0},
		{[]float64{3}, 3, 3},
		{[]float64{4, 1, 3, 2}, 2, 4},
		{func() []float64 {
			v := make([]float64, 100)
			for i := range v {
				v[i] = float64(100 - i)
			}
			return v
		}(), 50, 95},
	} {
		if p50, p95 := quantiles(tc.in); p50 != tc.p50 || p95 != tc.p95 {
			t.Errorf("quantiles(%v) = %v, %v; want %v, %v", tc.in, p50, p95, tc.p50, tc.p95)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@registry/b/x.bundle?X-Amz-Signature=abc": "https://registry/b/x.bundle?REDACTED",
		"/var/tmp/x.bundle":             "/var/tmp/x.bundle",
		"http://registry/x.bundle#frag": "http://registry/x.bundle",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"silero-vad@1.0.0", "a@b@c", "@1", "x@", "", "@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id := parseID(s)
		if id == nil {
			return
		}
		if id.Name == "" || id.Version == "" || id.ID() != s {
			t.Fatalf("parseID(%q) = %+v", s, id)
		}
	})
}
