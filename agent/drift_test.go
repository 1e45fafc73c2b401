package agent

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
	"github.com/edgefleet/edgefleet/testbed/audio"
)

// sileroProfile is the Silero bundle's reference drift profile and its
// path.
func sileroProfile(t testing.TB) (string, *drift.Profile) {
	t.Helper()
	path := filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad", "profile.json")
	p, err := drift.LoadProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, p
}

// sileroOutputs is what the Silero bundle answers for one frame: the
// pre-processor's six features and the speech probability (the model's
// output), each drawn from the profile's reference sample.
func sileroOutputs(p *drift.Profile, rng *rand.Rand) *model.Output {
	draw := func(i int) float32 {
		s := p.Features[i].Numerical.Sample
		return float32(s[rng.IntN(len(s))])
	}
	feats := make([]float32, 6)
	for i := range feats {
		feats[i] = draw(i)
	}
	return &model.Output{
		Tensors:  []tensor.Tensor{{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{draw(6)}}},
		Features: []tensor.Tensor{{Name: "features", Datatype: tensor.FP32, Shape: []int64{1, 6}, Data: feats}},
	}
}

func driftPrediction(version string, out *model.Output, err error) api.Prediction {
	return api.Prediction{Model: "silero-vad", Version: version, Provider: "cpu", Raw: true,
		Time: time.Now(), Latency: 2 * time.Millisecond, InferLatency: time.Millisecond, Code: 200, Output: out, Err: err}
}

// decodeDrift checks that rec is a drift record and decodes its payload
// and summary.
func decodeDrift(t *testing.T, rec outbox.Record) (protocol.DriftRecord, *drift.Summary) {
	t.Helper()
	if rec.Kind != protocol.RecordDrift {
		t.Fatalf("record %d: kind %q, want %q", rec.ID, rec.Kind, protocol.RecordDrift)
	}
	var r protocol.DriftRecord
	if err := json.Unmarshal(rec.Payload, &r); err != nil {
		t.Fatalf("record %d: %v: %s", rec.ID, err, rec.Payload)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("record %d: %v: %s", rec.ID, err, rec.Payload)
	}
	s, err := drift.DecodeSummary(r.Summary)
	if err != nil {
		t.Fatalf("record %d: summary: %v", rec.ID, err)
	}
	if s.Profile() != r.Profile || s.Predictions() != r.Predictions || s.Errors() != r.Errors ||
		!s.Start.Equal(r.Start) || !s.End.Equal(r.End) || !r.End.After(r.Start) {
		t.Fatalf("record %d: payload %s disagrees with its summary (profile %s, %d predictions, %d errors, %v to %v)",
			rec.ID, rec.Payload, s.Profile(), s.Predictions(), s.Errors(), s.Start, s.End)
	}
	return r, s
}

// TestDriftWindows: windows follow the served bundle version; each is
// appended as a drift record at a tick, at a swap and at stop (the partial
// one); empty windows are not; predictions of other versions, failures and
// tensors that do not fit count where they should; the records decode and
// merge to the totals.
func TestDriftWindows(t *testing.T) {
	ob := openOutbox(t)
	_, p := sileroProfile(t)
	d := newDriftWindows(ob, testLogger(t), time.Hour)
	d.start()
	rng := rand.New(rand.NewPCG(1, 2))

	d.observe(driftPrediction("1.0.0", sileroOutputs(p, rng), nil)) // no window yet: ignored
	d.swap("silero-vad", "1.0.0", p)
	d.rotate() // empty: nothing appended
	for range 2000 {
		d.observe(driftPrediction("1.0.0", sileroOutputs(p, rng), nil))
	}
	d.observe(driftPrediction("1.0.0", nil, errors.New("bad input")))
	// A tensor request: no pre-processor features.
	d.observe(driftPrediction("1.0.0", &model.Output{Tensors: sileroOutputs(p, rng).Tensors}, nil))
	d.observe(driftPrediction("0.9.0", sileroOutputs(p, rng), nil)) // the replaced version
	d.rotate()
	for range 50 {
		d.observe(driftPrediction("1.0.0", sileroOutputs(p, rng), nil))
	}
	d.swap("silero-vad", "2.0.0", p)
	for range 40 {
		d.observe(driftPrediction("2.0.0", sileroOutputs(p, rng), nil))
	}
	d.observe(driftPrediction("1.0.0", sileroOutputs(p, rng), nil)) // a late answer of the replaced version
	d.stop()
	d.observe(driftPrediction("2.0.0", sileroOutputs(p, rng), nil)) // after stop: ignored, no panic
	d.stop()

	if got, inv, ign := d.windows.Load(), d.invalid.Load(), d.ignored.Load(); got != 3 || inv != 1 || ign != 4 {
		t.Fatalf("windows %d, invalid %d, ignored %d; want 3, 1, 4", got, inv, ign)
	}
	recs, err := ob.Peek(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	type want struct {
		model              string
		predictions, errs  uint64
		featureN, missingN uint64
	}
	wants := []want{
		{"silero-vad@1.0.0", 2002, 1, 2000, 0},
		{"silero-vad@1.0.0", 50, 0, 50, 0},
		{"silero-vad@2.0.0", 40, 0, 40, 0},
	}
	var merged *drift.Summary
	for i, rec := range recs {
		r, s := decodeDrift(t, rec)
		w := wants[i]
		if r.Model != w.model || r.Predictions != w.predictions || r.Errors != w.errs || r.Profile != p.ID() {
			t.Errorf("record %d: %s with %d predictions, %d errors, profile %s; want %+v", i, r.Model, r.Predictions, r.Errors, r.Profile, w)
		}
		for f := range s.Features() {
			if n, miss := s.Count(f); n != w.featureN || miss != w.missingN {
				t.Errorf("record %d: feature %s: %d values, %d missing; want %d, %d", i, p.Features[f].Name, n, miss, w.featureN, w.missingN)
			}
		}
		// The record's verdict is the summary's.
		rep, err := drift.Compare(p, s, drift.CompareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Score == nil || *r.Score != rep.Share || r.Tested != rep.Tested || rep.Tested != len(p.Features) || len(r.Drifted) != rep.Drifted {
			t.Errorf("record %d: score %v, tested %d, drifted %v; the summary's report: share %v, %d tested, %d drifted",
				i, r.Score, r.Tested, r.Drifted, rep.Share, rep.Tested, rep.Drifted)
		}
		// 2000 values from the reference's own distribution: nothing
		// drifts. (Smaller windows are noisier than the default
		// thresholds allow for: see docs/drift.md.)
		if i == 0 && (*r.Score != 0 || len(r.Drifted) != 0) {
			t.Errorf("record %d: a window of the reference distribution drifted: %v", i, r.Drifted)
		}
		if merged == nil {
			merged = s
		} else if err := merged.Merge(s); err != nil {
			t.Fatal(err)
		}
		t.Logf("record %d: %d bytes of payload for %d predictions", i, len(rec.Payload), r.Predictions)
	}
	if merged.Predictions() != 2092 || merged.Errors() != 1 {
		t.Errorf("merged: %d predictions, %d errors; want 2092, 1", merged.Predictions(), merged.Errors())
	}
	for f := range merged.Features() {
		if n, _ := merged.Count(f); n != 2090 {
			t.Errorf("merged feature %s: %d values, want 2090", p.Features[f].Name, n)
		}
	}
}

// TestDriftWindowTick: the ticker closes windows by itself.
func TestDriftWindowTick(t *testing.T) {
	ob := openOutbox(t)
	_, p := sileroProfile(t)
	d := newDriftWindows(ob, testLogger(t), 20*time.Millisecond)
	d.swap("silero-vad", "1.0.0", p)
	d.start()
	rng := rand.New(rand.NewPCG(3, 4))
	deadline := time.Now().Add(60 * time.Second)
	for d.windows.Load() < 2 {
		d.observe(driftPrediction("1.0.0", sileroOutputs(p, rng), nil))
		if time.Now().After(deadline) {
			t.Fatalf("%d windows appended after 60s, want 2", d.windows.Load())
		}
		time.Sleep(time.Millisecond)
	}
	d.stop()
	recs, err := ob.Peek(1000)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, rec := range recs {
		r, _ := decodeDrift(t, rec)
		total += r.Predictions
	}
	if obs := d.ignored.Load(); total == 0 || obs != 0 {
		t.Fatalf("%d predictions in %d windows, %d ignored", total, len(recs), obs)
	}
}

// sileroProfileBundle builds (once per process) and signs a Silero VAD
// bundle with the WASM pre-processor and the reference drift profile of
// testbed/bundles/silero-vad.
func sileroProfileBundle(t testing.TB, version string) built {
	t.Helper()
	b := testbundle.SileroFiles(t)
	b.Version, b.Smoke = version, testbundle.SmokeNone
	b.Profile, _ = sileroProfile(t)
	return fixtureBundle(t, "profile/"+version, b)
}

// speechFrames returns n frames (16-bit PCM, 1024 bytes each) of
// synthetic speech.
func speechFrames(t testing.TB, c audio.Config, n int) [][]byte {
	t.Helper()
	g, err := audio.New(c)
	if err != nil {
		t.Fatal(err)
	}
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = make([]byte, 1024)
		g.Read(frames[i])
	}
	return frames
}

// TestDriftAgent runs the agent with the Silero bundle and its profile:
// raw PCM requests are summarized (features from the WASM pre-processor,
// speech from the model), the window is appended at the install of
// another version and the partial one at shutdown; a bundle without a
// profile gets no window; the records decode with the right counts.
func TestDriftAgent(t *testing.T) {
	v1 := sileroProfileBundle(t, "1.0.0")
	v2 := sileroProfileBundle(t, "2.0.0")
	plain := sileroBundle(t, spec{version: "3.0.0"})
	_, p := sileroProfile(t)
	s := newSetupRate(t, 0, "")
	a := startAgent(t, s, WithDriftWindow(time.Hour))
	ctx := t.Context()

	frames := speechFrames(t, audio.Normal(7), 120)
	run := func(version string, frames [][]byte) {
		t.Helper()
		for _, f := range frames {
			if r := infer(t, a.client, f, true); r.ModelVersion != version {
				t.Fatalf("answered by %s, want %s", r.ModelVersion, version)
			}
		}
	}
	if _, err := a.Install(ctx, v1.path, "", InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	run("1.0.0", frames[:80])
	infer(t, a.client, tensorRequest(t, ""), false) // counted in health, not in the features
	if _, err := a.Install(ctx, v2.path, "", InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	run("2.0.0", frames[80:])
	if _, err := a.Install(ctx, plain.path, "", InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	run("3.0.0", frames[:10])
	a.stop(t)

	recs, _ := records(t, s.dataDir)
	var drifts []outbox.Record
	for _, r := range recs {
		if r.Kind == protocol.RecordDrift {
			drifts = append(drifts, r)
		}
	}
	if len(drifts) != 2 {
		t.Fatalf("%d drift records, want 2 (v1 at the install of v2, v2 at the install of v3)", len(drifts))
	}
	// Swapped-out windows are appended in the background: find each by
	// its bundle.
	byModel := map[string]int{}
	for i, rec := range drifts {
		r, _ := decodeDrift(t, rec)
		byModel[r.Model] = i
	}
	for _, w := range []struct {
		model        string
		predictions  uint64
		featureCount uint64
	}{{"silero-vad@1.0.0", 81, 80}, {"silero-vad@2.0.0", 40, 40}} {
		i, ok := byModel[w.model]
		if !ok {
			t.Fatalf("no drift record of %s", w.model)
		}
		r, sum := decodeDrift(t, drifts[i])
		if r.Model != w.model || r.Predictions != w.predictions || r.Errors != 0 || r.Profile != p.ID() {
			t.Errorf("drift record %d: %s with %d predictions, %d errors, profile %s; want %s with %d predictions", i, r.Model, r.Predictions, r.Errors, r.Profile, w.model, w.predictions)
		}
		for f := range sum.Features() {
			if n, miss := sum.Count(f); n != w.featureCount || miss != 0 {
				t.Errorf("drift record %d: feature %s: %d values, %d missing; want %d", i, p.Features[f].Name, n, miss, w.featureCount)
			}
		}
		if lat, ok := sum.LatencyQuantile(0.5); !ok || lat <= 0 {
			t.Errorf("drift record %d: no latency (%v)", i, lat)
		}
		rep, err := drift.Compare(p, sum, drift.CompareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Tested != len(p.Features) || r.Tested != rep.Tested {
			t.Errorf("drift record %d: %d (record: %d) of %d features tested", i, rep.Tested, r.Tested, len(p.Features))
		}
		t.Logf("drift record %d: %s, %d predictions, %d bytes (summary %d bytes as base64 JSON), drifted %v",
			i, r.Model, r.Predictions, len(drifts[i].Payload), len(r.Summary), r.Drifted)
	}
}

// BenchmarkDriftObserve puts the drift summary's cost per prediction
// beside the prediction itself, in one run, on the Silero bundle with its
// profile and frames of synthetic speech:
//
//   - infer-raw: model.Infer of one PCM frame (the WASM pre-processor and
//     ONNX Runtime), what the request path runs;
//   - observe: the agent's hook on the observer goroutine
//     (driftWindows.observe: lock, bundle check, ObserveHealth,
//     ObserveTensors of the features and the output), per prediction;
//     pct-of-infer is its share of infer-raw;
//   - summary-only: ObserveHealth and ObserveTensors alone;
//   - close-window: closing a 5-minute window of 9,375 predictions (one
//     frame every 32 ms): the window's own Compare against the profile,
//     the base64 encoding and the record's JSON; payload-B is the
//     record's size, summary-B the binary summary's.
func BenchmarkDriftObserve(b *testing.B) {
	v1 := sileroProfileBundle(b, "1.0.0")
	s := newSetupRate(b, 0, "")
	a := startAgent(b, s)
	ctx := context.Background()
	mdl := serve(b, a.Agent, v1)
	_, p := sileroProfile(b)

	frames := speechFrames(b, audio.Normal(11), 2000)
	outs := make([]*model.Output, len(frames))
	for i, f := range frames {
		out, err := mdl.Infer(ctx, model.Input{Raw: f})
		if err != nil {
			b.Fatal(err)
		}
		outs[i] = out
	}
	pred := func(i int) api.Prediction {
		return api.Prediction{Model: "silero-vad", Version: "1.0.0", Raw: true, Latency: 400 * time.Microsecond, Code: 200, Output: outs[i%len(outs)]}
	}

	var inferNs float64
	b.Run("infer-raw", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := mdl.Infer(ctx, model.Input{Raw: frames[i%len(frames)]}); err != nil {
				b.Fatal(err)
			}
			i++
		}
		inferNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("observe", func(b *testing.B) {
		d := newDriftWindows(nil, testLogger(b), time.Hour)
		d.swap("silero-vad", "1.0.0", p)
		i := 0
		for b.Loop() {
			d.observe(pred(i))
			i++
		}
		if d.invalid.Load() != 0 || d.ignored.Load() != 0 {
			b.Fatalf("%d invalid, %d ignored", d.invalid.Load(), d.ignored.Load())
		}
		if inferNs > 0 {
			b.ReportMetric(100*float64(b.Elapsed().Nanoseconds())/float64(b.N)/inferNs, "pct-of-infer")
		}
	})
	b.Run("summary-only", func(b *testing.B) {
		sum := drift.NewSummary(p)
		i := 0
		for b.Loop() {
			o := outs[i%len(outs)]
			sum.ObserveHealth(400*time.Microsecond, false)
			if err := sum.ObserveTensors(o.Features, o.Tensors); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("close-window", func(b *testing.B) {
		const n = 9375
		w := &driftWindow{model: "silero-vad", version: "1.0.0", profile: p, sum: drift.NewSummary(p)}
		w.sum.Start = time.Now()
		for i := range n {
			o := outs[i%len(outs)]
			w.sum.ObserveHealth(400*time.Microsecond, false)
			if err := w.sum.ObserveTensors(o.Features, o.Tensors); err != nil {
				b.Fatal(err)
			}
		}
		var rec []byte
		for b.Loop() {
			var err error
			if rec, err = w.record(time.Now()); err != nil {
				b.Fatal(err)
			}
		}
		bin, _ := w.sum.MarshalBinary()
		b.ReportMetric(float64(len(rec)), "payload-B")
		b.ReportMetric(float64(len(bin)), "summary-B")
	})
}
