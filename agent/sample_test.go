package agent

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// samplePrediction is a successful prediction of vad@1.0.0 at at, with
// inputs as the model was fed them.
func samplePrediction(at time.Time, id string, n int) api.Prediction {
	in := make([]float32, n)
	for i := range in {
		in[i] = float32(i) / 8
	}
	return api.Prediction{
		Model: "vad", Version: "1.0.0", Time: at, RequestID: id, Code: 200,
		Output: &model.Output{
			Inputs:   []tensor.Tensor{{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, int64(n)}, Data: in}},
			Tensors:  []tensor.Tensor{{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{0.5}}},
			Features: []tensor.Tensor{{Name: "rms", Datatype: tensor.FP64, Shape: []int64{}, Data: []float64{0.25}}},
		},
	}
}

func vadManifest(version string, s *bundle.Sampling) *bundle.Manifest {
	return &bundle.Manifest{Name: "vad", Version: version, Sampling: s}
}

// sampled reads the sample records of the outbox.
func sampledRecords(t *testing.T, s *sampler) []protocol.SampleRecord {
	t.Helper()
	recs, err := s.ob.Peek(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	var out []protocol.SampleRecord
	for _, r := range recs {
		if r.Kind != protocol.RecordSample {
			continue
		}
		sr, err := protocol.DecodeSampleRecord(r.Payload)
		if err != nil {
			t.Fatalf("record %d: %v", r.ID, err)
		}
		out = append(out, *sr)
	}
	return out
}

func TestSampler(t *testing.T) {
	day := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	// One sample of 64 floats encodes to about 600 bytes.
	tests := []struct {
		name   string
		policy *bundle.Sampling
		served string // version served; "" is 1.0.0
		preds  []api.Prediction
		draws  []float64 // the random draws, in turn
		want   []string  // request ids appended
		check  func(t *testing.T, st *SampleStats)
	}{
		{name: "no policy", preds: []api.Prediction{samplePrediction(day, "a", 4)}},
		{name: "every request", policy: &bundle.Sampling{Rate: 1, MaxBytesPerDay: 1 << 20},
			preds: []api.Prediction{samplePrediction(day, "a", 4), samplePrediction(day, "b", 4)}, want: []string{"a", "b"}},
		{name: "rate draws", policy: &bundle.Sampling{Rate: 0.25, MaxBytesPerDay: 1 << 20},
			preds: []api.Prediction{samplePrediction(day, "a", 4), samplePrediction(day, "b", 4), samplePrediction(day, "c", 4)},
			draws: []float64{0.1, 0.25, 0.9999}, want: []string{"a"},
			check: func(t *testing.T, st *SampleStats) {
				if st.Picked != 1 || st.Appended != 1 {
					t.Errorf("stats %+v", st)
				}
			}},
		{name: "another version", policy: &bundle.Sampling{Rate: 1, MaxBytesPerDay: 1 << 20}, served: "2.0.0",
			preds: []api.Prediction{samplePrediction(day, "a", 4)}},
		{name: "failed request", policy: &bundle.Sampling{Rate: 1, MaxBytesPerDay: 1 << 20},
			preds: []api.Prediction{func() api.Prediction { p := testPrediction(0, context.Canceled); p.Model = "vad"; return p }()}},
		{name: "day budget resets at UTC midnight", policy: &bundle.Sampling{Rate: 1, MaxBytesPerDay: 1500},
			preds: []api.Prediction{
				samplePrediction(day, "a", 64), samplePrediction(day, "b", 64), samplePrediction(day, "c", 64),
				samplePrediction(day.Add(time.Minute), "d", 64),
			},
			want: []string{"a", "b", "d"},
			check: func(t *testing.T, st *SampleStats) {
				if st.DroppedBudget != 1 || st.Day != "2026-03-02" || st.BytesToday == 0 || st.BytesToday > 1500 {
					t.Errorf("stats %+v", st)
				}
			}},
		{name: "too large", policy: &bundle.Sampling{Rate: 1, MaxBytesPerDay: 1 << 30},
			preds: []api.Prediction{samplePrediction(day, "big", protocol.MaxSampleRecordBytes/4), samplePrediction(day, "small", 4)},
			want:  []string{"small"},
			check: func(t *testing.T, st *SampleStats) {
				if st.DroppedTooLarge != 1 {
					t.Errorf("stats %+v", st)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSampler(openOutbox(t), testLogger(t), map[string]string{"site": "lab"}, 0)
			draws := tc.draws
			s.draw = func() float64 { d := draws[0]; draws = draws[1:]; return d }
			v := "1.0.0"
			if tc.served != "" {
				v = tc.served
			}
			s.swap(vadManifest(v, tc.policy))
			s.start()
			for _, p := range tc.preds {
				s.observe(p)
			}
			s.stop()
			var got []string
			for _, r := range sampledRecords(t, s) {
				got = append(got, r.RequestID)
				if r.Model != "vad@1.0.0" || r.Labels["site"] != "lab" || len(r.Inputs) != 1 || len(r.Outputs) != 1 || len(r.Features) != 1 {
					t.Errorf("record %+v", r)
				}
				in, err := r.Inputs[0].Tensor()
				if err != nil || in.Data.([]float32)[1] != 0.125 {
					t.Errorf("input %v, %v", in, err)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("sampled %q, want %q", got, tc.want)
			}
			st := s.stats()
			if tc.policy == nil && st != nil {
				t.Errorf("stats %+v without a policy", st)
			}
			if tc.check != nil {
				tc.check(t, st)
			}
		})
	}
}

// TestSamplerQueueFull: picked samples that find the queue full are
// dropped and counted, never waited for; after stop, too.
func TestSamplerQueueFull(t *testing.T) {
	s := newSampler(openOutbox(t), testLogger(t), nil, 0)
	s.swap(vadManifest("1.0.0", &bundle.Sampling{Rate: 1, MaxBytesPerDay: 1 << 20}))
	at := time.Now()
	for range dataSampleQueue + 3 { // the encoder is not running
		s.observe(samplePrediction(at, "x", 2))
	}
	s.start()
	s.stop()
	s.observe(samplePrediction(at, "late", 2))
	st := s.stats()
	if st.Appended != dataSampleQueue || st.DroppedQueue != 4 || st.Picked != dataSampleQueue+4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAgentSamples: an agent serving a bundle with a sampling policy
// appends the model's inputs after the pre-processor (a raw request) and
// as sent (tensors), with its labels, and reports the counts in its
// status.
func TestAgentSamples(t *testing.T) {
	b := sileroBundle(t, spec{version: "1.0.0", sampling: "{rate: 1, maxBytesPerDay: 1MiB}"})
	s := newSetupRate(t, 0, "")
	r := startAgent(t, s)
	if _, err := r.Install(t.Context(), b.path, b.sig, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	infer(t, r.client, pcmFrame(t), true)
	infer(t, r.client, tensorRequest(t, "req-1"), false)
	// The status counts what was appended.
	var st Status
	testenv.Eventually(t, "the status counts 2 appended samples", func() bool {
		code, body := get(t, r.client, "/agent/v1/status")
		if code != 200 || json.Unmarshal(body, &st) != nil {
			return false
		}
		return st.Samples != nil && st.Samples.Appended == 2
	})
	if st.Samples.Bundle != "silero-vad@1.0.0" || st.Samples.Rate != 1 || st.Samples.MaxBytesPerDay != 1<<20 {
		t.Errorf("status samples %+v", st.Samples)
	}
	r.stop(t)
	// The day's spend is saved for the next run.
	if got := readBudgetFile(t, filepath.Join(s.dataDir, SampleBudgetFile)); got["silero-vad@1.0.0 "+st.Samples.Day] != st.Samples.BytesToday {
		t.Errorf("budget file %v, status samples %+v", got, st.Samples)
	}
	recs, _ := records(t, s.dataDir)
	var got []protocol.SampleRecord
	for _, p := range byKind(t, recs)[protocol.RecordSample] {
		sr, err := protocol.DecodeSampleRecord(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, *sr)
	}
	if len(got) != 2 {
		t.Fatalf("%d sample records, want 2", len(got))
	}
	raw, tens := got[0], got[1]
	if !raw.Raw || tens.Raw || tens.RequestID != "req-1" || raw.Labels["site"] != "lab" {
		t.Errorf("records %+v", got)
	}
	// The pre-processor's input tensor is the frame it decoded from PCM,
	// the tensor request's what was sent: both the two-sine frame.
	for _, r := range got {
		names := []string{}
		for _, in := range r.Inputs {
			names = append(names, in.Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"input", "sr", "state"}) {
			t.Fatalf("inputs %v", names)
		}
		for _, in := range r.Inputs {
			if in.Name != "input" {
				continue
			}
			x, err := in.Tensor()
			if err != nil {
				t.Fatal(err)
			}
			f := x.Data.([]float32)
			if len(f) != 512 || f[0] != 0 || f[100] == 0 {
				t.Errorf("input %v...", f[:4])
			}
		}
		out, err := r.Outputs[0].Tensor()
		if err != nil || !near(float64(out.Data.([]float32)[0]), sileroOutput) {
			t.Errorf("output %v, %v", out, err)
		}
	}
	// A restarted agent carries on with the day's spend.
	r = startAgent(t, s)
	rst, err := r.Status()
	if err != nil || rst.Samples == nil || rst.Samples.Day != st.Samples.Day || rst.Samples.BytesToday != st.Samples.BytesToday || rst.Samples.Appended != 0 {
		t.Errorf("after a restart: samples %+v (%v), before %+v", rst.Samples, err, st.Samples)
	}
}

// BenchmarkSamplerObserve is the cost of the sampler on the API's
// observer goroutine: nothing to do (no policy), a request the rate does
// not pick, and one it picks (queued for the encoder).
func BenchmarkSamplerObserve(b *testing.B) {
	p := samplePrediction(time.Now(), "r", 512)
	for _, bc := range []struct {
		name   string
		policy *bundle.Sampling
	}{
		{"off", nil},
		{"not-picked", &bundle.Sampling{Rate: 1e-9, MaxBytesPerDay: 1 << 20}},
		{"picked", &bundle.Sampling{Rate: 1, MaxBytesPerDay: 1 << 20}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newSampler(nil, testLogger(b), nil, 0)
			s.swap(vadManifest("1.0.0", bc.policy))
			done := make(chan struct{})
			go func() { // drain the queue without encoding
				defer close(done)
				for range s.jobs {
				}
			}()
			b.ReportAllocs()
			for b.Loop() {
				s.observe(p)
			}
			b.StopTimer()
			close(s.jobs)
			<-done
		})
	}
}

// BenchmarkSampleEncode is the encoder goroutine's work for one Silero
// sized sample (512 + 256 + 1 input elements, 1 + 256 outputs), off the
// request path.
func BenchmarkSampleEncode(b *testing.B) {
	s := newSampler(nil, testLogger(b), map[string]string{"site": "lab"}, 0)
	zero := func(name string, shape ...int64) tensor.Tensor {
		t, err := tensor.Zeros(name, tensor.FP32, shape)
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	out := &model.Output{
		Inputs:  []tensor.Tensor{zero("input", 1, 512), zero("state", 2, 1, 128), {Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}}},
		Tensors: []tensor.Tensor{zero("output", 1, 1), zero("stateN", 2, 1, 128)},
	}
	j := sampleJob{pol: &samplePolicy{id: "silero-vad@1.0.0"}, at: time.Now(), out: out}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		buf, err := json.Marshal(s.record(j))
		if err != nil {
			b.Fatal(err)
		}
		n = len(buf)
	}
	b.ReportMetric(float64(n), "bytes/sample")
}
