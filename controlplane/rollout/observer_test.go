package rollout

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// RecordObserver over a real record store.
func TestRecordObserver(t *testing.T) {
	st, err := telemetry.Open(filepath.Join(t.TempDir(), "records.db"), telemetry.Options{MaxPerDevice: 50_000})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var recs []telemetry.Record
	id := uint64(0)
	add := func(at time.Time, kind string, payload any) {
		b, _ := json.Marshal(payload)
		id++
		recs = append(recs, telemetry.Record{Device: "dev-1", Epoch: "e1", ID: id, Kind: kind, Time: at, Payload: b})
	}
	m := func(model string, req, errs int, p95 float64) map[string]any {
		return map[string]any{"window": "1m", "model": model, "requests": req, "errors": errs, "p95Ms": p95}
	}
	add(t0.Add(-time.Hour), "metrics", m("vad@1.0.0", 100, 1, 10)) // before the range
	add(t0, "metrics", m("vad@1.1.0", 100, 2, 10))
	add(t0.Add(time.Minute), "metrics", m("vad@1.1.0", 300, 3, 20))
	add(t0.Add(time.Minute), "metrics", m("vad@1.0.0", 500, 50, 99)) // another bundle
	add(t0.Add(2*time.Minute), "metrics", map[string]any{"model": "vad@1.1.0", "requests": "lots"})
	add(t0.Add(2*time.Minute), "prediction", map[string]any{"model": "vad@1.1.0", "outputs": map[string]any{"output": []float64{0.25}, "stateN": []float64{9}}})
	add(t0.Add(2*time.Minute), "prediction", map[string]any{"model": "vad@1.1.0", "outputs": map[string]any{"output": map[string]any{"n": 4096, "mean": 0.75}}})
	add(t0.Add(3*time.Minute), "drift", map[string]any{"model": "vad@1.1.0", "score": 0.1})
	add(t0.Add(3*time.Minute), "drift", map[string]any{"model": "vad@1.1.0", "score": 0.3})
	add(t0.Add(3*time.Minute), "shadow", map[string]any{"candidate": "vad@1.1.0", "samples": 50, "agreed": 45})
	add(t0.Add(3*time.Minute), "event", map[string]any{"type": "install.succeeded"})
	add(t0.Add(time.Hour), "metrics", m("vad@1.1.0", 1000, 1000, 1)) // after Until
	if _, err := st.Ingest("dev-1", "e1", recs, func(ids []uint64) ([]bool, error) { return make([]bool, len(ids)), nil }); err != nil {
		t.Fatal(err)
	}
	h, err := RecordObserver{Records: st}.Health(context.Background(), HealthQuery{Device: "dev-1", Bundle: v2, Since: t0, Until: t0.Add(30 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	want := Health{Requests: 400, Errors: 5, LatencyP95Ms: 17.5, DriftScore: 0.2, DriftWindows: 2, ShadowSamples: 50, ShadowAgreed: 45}
	if h.Requests != want.Requests || h.Errors != want.Errors || math.Abs(h.LatencyP95Ms-want.LatencyP95Ms) > 1e-9 ||
		math.Abs(h.DriftScore-want.DriftScore) > 1e-9 || h.DriftWindows != want.DriftWindows ||
		h.ShadowSamples != want.ShadowSamples || h.ShadowAgreed != want.ShadowAgreed {
		t.Fatalf("health %+v\nwant   %+v", h, want)
	}
	if h.Output.Count != 2 || h.Output.Mean != 0.5 {
		t.Fatalf("output %+v", h.Output)
	}
	// An unknown device has no records, and no error.
	if h, err := (RecordObserver{Records: st}).Health(context.Background(), HealthQuery{Device: "dev-9", Bundle: v2}); err != nil || h.Requests != 0 {
		t.Fatalf("unknown device: %+v %v", h, err)
	}
}

// Pages of records sharing a timestamp are read once each.
func TestRecordObserverPaging(t *testing.T) {
	st, err := telemetry.Open(filepath.Join(t.TempDir(), "records.db"), telemetry.Options{MaxPerDevice: 50_000})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = telemetry.MaxQueryLimit + 2500
	recs := make([]telemetry.Record, n)
	for i := range recs {
		b, _ := json.Marshal(map[string]any{"model": "vad@1.1.0", "requests": 1, "errors": 0, "p95Ms": 1})
		// Many records per timestamp, across the page boundary.
		recs[i] = telemetry.Record{Device: "dev-1", Epoch: "e", ID: uint64(i + 1), Kind: protocol.RecordMetrics, Time: t0.Add(time.Duration(i/3000) * time.Second), Payload: b}
	}
	for i := 0; i < n; i += protocol.MaxRecords {
		if _, err := st.Ingest("dev-1", "e", recs[i:min(i+protocol.MaxRecords, n)], func(ids []uint64) ([]bool, error) { return make([]bool, len(ids)), nil }); err != nil {
			t.Fatal(err)
		}
	}
	h, err := RecordObserver{Records: st}.Health(context.Background(), HealthQuery{Device: "dev-1", Bundle: v2})
	if err != nil {
		t.Fatal(err)
	}
	if h.Requests != n {
		t.Fatalf("%d requests counted, want %d", h.Requests, n)
	}
}
