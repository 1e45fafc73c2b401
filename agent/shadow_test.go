package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// limiterPre is the Silero pre-processor variant that attenuates frames
// peaking at 0.9 or more (testbed/bundles/variants).
const limiterPre = "testbed/bundles/variants/limiter"

// variantBundle builds (once per process) and signs a Silero VAD bundle
// like sileroBundle's, with the pre-processor built from preDir and only
// the PCM smoke vector, checked with model.Check (its smoke vectors
// pass).
func variantBundle(t testing.TB, version, preDir string) built {
	t.Helper()
	b := testbundle.SileroFiles(t)
	b.Version, b.Pre, b.Smoke, b.Check = version, testenv.BuildWASM(t, preDir), testbundle.SmokePCM, modelCheck(t)
	return fixtureBundle(t, "variant/"+version+"/"+preDir, b)
}

// loudFrame is a 300 Hz sine at 0.99 of full scale, as 16-bit PCM.
func loudFrame() []byte {
	b := make([]byte, 1024)
	for i := range 512 {
		v := uint16(int16(math.Round(0.99 * 32767 * math.Sin(2*math.Pi*300*float64(i)/16000))))
		b[2*i], b[2*i+1] = byte(v), byte(v>>8) // little-endian
	}
	return b
}

func withShadow(d *protocol.DesiredState, ref protocol.BundleRef) *protocol.DesiredState {
	d.Shadow = &protocol.Shadow{Bundle: ref}
	return d
}

// waitShadow polls the agent's status until its shadow has compared n
// samples.
func waitShadow(t *testing.T, a *running, n uint64) ShadowStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := a.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Shadow != nil && st.Shadow.Samples+st.Shadow.Dropped >= n {
			return *st.Shadow
		}
		if time.Now().After(deadline) {
			t.Fatalf("shadow status %+v after 30s, want %d samples", st.Shadow, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shadowRecords decodes the "shadow" records of the outbox in dataDir.
func shadowRecords(t *testing.T, dataDir string) []protocol.ShadowRecord {
	t.Helper()
	recs, _ := records(t, dataDir)
	var out []protocol.ShadowRecord
	for _, p := range byKind(t, recs)[protocol.RecordShadow] {
		var r protocol.ShadowRecord
		if err := json.Unmarshal(p, &r); err != nil {
			t.Fatalf("shadow record %s: %v", p, err)
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("shadow record %s: %v", p, err)
		}
		out = append(out, r)
	}
	return out
}

func reasonOf(t *testing.T, err error) string {
	t.Helper()
	var r interface{ Reason() string }
	if !errors.As(err, &r) {
		t.Fatalf("error %v carries no reason", err)
	}
	return r.Reason()
}

// TestShadowSameModel: v1 active, v2 (the same model and pre-processor)
// in shadow. Clients get v1's answers; every sampled request is run on
// v2 too and agrees; the comparison is appended as a shadow record; the
// candidate is reported, survives a restart without a download and is
// stopped (its files removed) by a desired state without it.
func TestShadowSameModel(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	reg := newRegistry(t, v1, v2)
	s := newSetup(t, "")
	opts := []Option{WithShadowRate(1), WithShadowWindow(time.Hour)}
	a := startAgent(t, s, opts...)
	ctx := t.Context()

	if err := a.Apply(ctx, desired(1, protocol.ActionInstall, reg.ref(t, v1)), nil); err != nil {
		t.Fatal(err)
	}
	var ph phases
	if err := a.Apply(ctx, withShadow(desired(2, protocol.ActionInstall, reg.ref(t, v1)), reg.ref(t, v2)), ph.progress); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ph.seen); got != "[downloading smoke-testing activating]" {
		t.Errorf("phases %s", got)
	}
	rep := a.Reported()
	if rep.Active.ID() != "silero-vad@1.0.0" || rep.Shadow == nil || rep.Shadow.ID() != "silero-vad@2.0.0" || rep.LastKnownGood != nil {
		t.Fatalf("reported active %v, shadow %v, last-known-good %v", rep.Active, rep.Shadow, rep.LastKnownGood)
	}
	rep.V, rep.DeviceID, rep.Time = protocol.Version, "test-device", time.Now()
	if err := rep.Validate(); err != nil {
		t.Fatalf("reported state: %v", err)
	}

	const n = 10
	for i := range n {
		for _, raw := range []bool{true, false} {
			body := pcmFrame(t)
			if !raw {
				body = tensorRequest(t, fmt.Sprint("req-", i))
			}
			r := infer(t, a.client, body, raw)
			if r.ModelVersion != "1.0.0" || !near(r.output(t), sileroOutput) {
				t.Fatalf("answer %+v, want 1.0.0's", r)
			}
		}
	}
	st := waitShadow(t, a, 2*n)
	if st.Candidate != "silero-vad@2.0.0" || st.Samples != 2*n || st.Agreed != 2*n || st.Errors != 0 || st.Dropped != 0 || st.Rate != 1 {
		t.Fatalf("shadow status %+v, want %d samples all agreeing", st, 2*n)
	}

	// The window is appended at stop; the candidate comes back at start,
	// re-hashed from disk, without a download.
	a.stop(t)
	recs := shadowRecords(t, s.dataDir)
	if len(recs) != 1 {
		t.Fatalf("%d shadow records, want 1: %+v", len(recs), recs)
	}
	r := recs[0]
	if r.Candidate != "silero-vad@2.0.0" || r.Active != "silero-vad@1.0.0" || r.Samples != 2*n || r.Agreed != 2*n || r.Errors != 0 ||
		r.Agreement == nil || *r.Agreement != 1 || r.LatencyP95Ms <= 0 || r.ActiveP95Ms <= 0 || r.MaxAbsDiff != 0 || !r.End.After(r.Start) {
		t.Fatalf("shadow record %+v", r)
	}
	before := reg.requests()
	a = startAgent(t, s, opts...)
	if rep := a.Reported(); rep.Shadow == nil || rep.Shadow.ID() != "silero-vad@2.0.0" || rep.Active.ID() != "silero-vad@1.0.0" {
		t.Fatalf("after a restart: reported active %v, shadow %v", rep.Active, rep.Shadow)
	}
	if reg.requests() != before {
		t.Fatalf("restoring the shadow made %d requests to the registry", reg.requests()-before)
	}
	infer(t, a.client, pcmFrame(t), true)
	if st := waitShadow(t, a, 1); st.Agreed != 1 {
		t.Fatalf("restored shadow: %+v", st)
	}
	// The same desired state again (a re-issue): nothing to do.
	if err := a.Apply(ctx, withShadow(desired(3, protocol.ActionInstall, reg.ref(t, v1)), reg.ref(t, v2)), nil); err != nil || reg.requests() != before {
		t.Fatalf("re-issued shadow: %v, %d requests", err, reg.requests()-before)
	}

	// A desired state without the shadow stops it and forgets it.
	if err := a.Apply(ctx, desired(4, protocol.ActionInstall, reg.ref(t, v1)), nil); err != nil {
		t.Fatal(err)
	}
	if rep := a.Reported(); rep.Shadow != nil {
		t.Fatalf("shadow %v still reported", rep.Shadow)
	}
	if st, _ := a.Status(); st.Shadow != nil {
		t.Fatalf("shadow status %+v after it stopped", st.Shadow)
	}
	if ents, err := os.ReadDir(filepath.Join(s.dataDir, ShadowDir)); err != nil || len(ents) != 0 {
		t.Fatalf("shadow directory after the stop: %v, %v", ents, err)
	}
	infer(t, a.client, pcmFrame(t), true)
	a.stop(t)
	recs = shadowRecords(t, s.dataDir)
	if len(recs) != 2 || recs[1].Samples != 1 {
		t.Fatalf("shadow records %+v, want the first and the restored candidate's one sample", recs)
	}
	a = startAgent(t, s, opts...)
	if rep := a.Reported(); rep.Shadow != nil {
		t.Fatalf("a stopped shadow came back at start: %v", rep.Shadow)
	}
}

// TestShadowDisagreement: a candidate whose pre-processor attenuates loud
// frames (it passes its smoke test) agrees on normal frames and not on
// loud ones; clients always get the active version's answers. Becoming
// the active version ends the shadow.
func TestShadowDisagreement(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v3 := variantBundle(t, "3.0.0", limiterPre)
	reg := newRegistry(t, v1, v3)
	s := newSetup(t, "")
	a := startAgent(t, s, WithShadowRate(1), WithShadowWindow(time.Hour))
	ctx := t.Context()
	if err := a.Apply(ctx, desired(1, protocol.ActionInstall, reg.ref(t, v1)), nil); err != nil {
		t.Fatal(err)
	}
	want := infer(t, a.client, loudFrame(), true).output(t)
	if err := a.Apply(ctx, withShadow(desired(2, protocol.ActionInstall, reg.ref(t, v1)), reg.ref(t, v3)), nil); err != nil {
		t.Fatal(err)
	}
	const n = 8
	for range n {
		if r := infer(t, a.client, pcmFrame(t), true); r.ModelVersion != "1.0.0" || !near(r.output(t), sileroOutput) {
			t.Fatalf("answer %+v, want 1.0.0's", r)
		}
		if r := infer(t, a.client, loudFrame(), true); r.ModelVersion != "1.0.0" || r.output(t) != want {
			t.Fatalf("answer to a loud frame %+v, want 1.0.0's %v", r, want)
		}
	}
	st := waitShadow(t, a, 2*n)
	if st.Samples != 2*n || st.Agreed != n || st.Errors != 0 {
		t.Fatalf("shadow status %+v, want %d samples, %d agreeing", st, 2*n, n)
	}

	// The waves install the candidate, clearing the shadow.
	if err := a.Apply(ctx, desired(3, protocol.ActionInstall, reg.ref(t, v3)), nil); err != nil {
		t.Fatal(err)
	}
	if rep := a.Reported(); rep.Active.ID() != "silero-vad@3.0.0" || rep.Shadow != nil {
		t.Fatalf("reported active %v, shadow %v", rep.Active, rep.Shadow)
	}
	a.stop(t)
	recs := shadowRecords(t, s.dataDir)
	if len(recs) != 1 {
		t.Fatalf("shadow records %+v", recs)
	}
	if r := recs[0]; r.Candidate != "silero-vad@3.0.0" || r.Samples != 2*n || r.Agreed != n || *r.Agreement != 0.5 || r.MaxAbsDiff <= 1e-4 {
		t.Fatalf("shadow record %+v", r)
	}
}

// TestShadowRefused: a candidate that does not verify or fails its smoke
// test is refused with a "shadow-" reason; the active version keeps
// serving, nothing is reported in shadow and nothing is left on disk.
func TestShadowRefused(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	bad := sileroBundle(t, spec{version: "2.0.0", want: 0.5})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	forged := tampered(t, v2)
	reg := newRegistry(t, v1, bad)
	forgedReg := newRegistry(t, forged)
	s := newSetup(t, "")
	a := startAgent(t, s, WithShadowRate(1))
	ctx := t.Context()
	if err := a.Apply(ctx, desired(1, protocol.ActionInstall, reg.ref(t, v1)), nil); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name   string
		ref    protocol.BundleRef
		reason string
	}{
		{"smoke test fails", reg.ref(t, bad), "shadow-" + ReasonSmokeFailed},
		{"tampered", forgedReg.ref(t, forged), "shadow-" + ReasonSignature},
	} {
		err := a.Apply(ctx, withShadow(desired(uint64(2+i), protocol.ActionInstall, reg.ref(t, v1)), tc.ref), nil)
		if err == nil || reasonOf(t, err) != tc.reason || !strings.Contains(err.Error(), "shadow candidate silero-vad@2.0.0") {
			t.Fatalf("%s: %v, want reason %s", tc.name, err, tc.reason)
		}
		if rep := a.Reported(); rep.Shadow != nil || rep.Active.ID() != "silero-vad@1.0.0" {
			t.Fatalf("%s: reported active %v, shadow %v", tc.name, rep.Active, rep.Shadow)
		}
		if ents, _ := os.ReadDir(filepath.Join(s.dataDir, ShadowDir)); len(ents) != 0 {
			t.Fatalf("%s: shadow directory holds %d entries", tc.name, len(ents))
		}
		if r := infer(t, a.client, pcmFrame(t), true); r.ModelVersion != "1.0.0" {
			t.Fatalf("%s: serving %s", tc.name, r.ModelVersion)
		}
	}
	// The store's own state knows nothing of it.
	if st, _ := a.Status(); st.LastError != nil || st.Shadow != nil {
		t.Fatalf("status last error %+v, shadow %+v", st.LastError, st.Shadow)
	}
}

// TestShadowCorruptRestore: a candidate whose files were damaged on disk
// is forgotten at start, not served in shadow.
func TestShadowCorruptRestore(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	reg := newRegistry(t, v1, v2)
	s := newSetup(t, "")
	a := startAgent(t, s)
	ctx := t.Context()
	if err := a.Apply(ctx, desired(1, protocol.ActionInstall, reg.ref(t, v1)), nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, withShadow(desired(2, protocol.ActionInstall, reg.ref(t, v1)), reg.ref(t, v2)), nil); err != nil {
		t.Fatal(err)
	}
	a.stop(t)
	var st shadowState
	b, err := os.ReadFile(filepath.Join(s.dataDir, ShadowDir, shadowStateName))
	if err != nil || json.Unmarshal(b, &st) != nil {
		t.Fatalf("shadow state %s: %v", b, err)
	}
	modelPath := filepath.Join(s.dataDir, ShadowDir, st.Dir, v2.m.Runtime.Model)
	data, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(modelPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	a = startAgent(t, s)
	if rep := a.Reported(); rep.Shadow != nil || rep.Active.ID() != "silero-vad@1.0.0" {
		t.Fatalf("reported active %v, shadow %v", rep.Active, rep.Shadow)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.dataDir, ShadowDir)); len(ents) != 0 {
		t.Fatalf("the damaged candidate was left on disk (%d entries)", len(ents))
	}
}

func TestShadowOptions(t *testing.T) {
	cfg := newSetup(t, "").config(t)
	for _, o := range []Option{WithShadowRate(-0.1), WithShadowRate(1.5), WithShadowRate(math.NaN()), WithShadowWindow(0), WithShadowQueue(0)} {
		if _, err := New(cfg, testLogger(t), o); err == nil || !strings.Contains(err.Error(), "shadow") {
			t.Errorf("New: %v, want a shadow option error", err)
		}
	}
	if _, err := New(cfg, testLogger(t), WithShadowRate(0), WithShadowWindow(time.Second), WithShadowQueue(1)); err != nil {
		t.Fatal(err)
	}
}

func TestAgree(t *testing.T) {
	f32 := func(name string, shape []int64, v ...float32) tensor.Tensor {
		return tensor.Tensor{Name: name, Datatype: tensor.FP32, Shape: shape, Data: v}
	}
	nan := float32(math.NaN())
	tol := bundle.Tolerance{Abs: 1e-4, Rel: 1e-3}
	for _, tc := range []struct {
		name          string
		active, cand  []tensor.Tensor
		want          bool
		wantDiffAbove float64
	}{
		{"identical", []tensor.Tensor{f32("y", []int64{1, 2}, 0.1, 0.2)}, []tensor.Tensor{f32("y", []int64{1, 2}, 0.1, 0.2)}, true, 0},
		{"within tolerance", []tensor.Tensor{f32("y", []int64{2}, 0.1, 100)}, []tensor.Tensor{f32("y", []int64{2}, 0.10005, 100.05)}, true, 0.04},
		{"beyond tolerance", []tensor.Tensor{f32("y", []int64{1}, 0.1)}, []tensor.Tensor{f32("y", []int64{1}, 0.1003)}, false, 0.0002},
		{"NaN matches NaN", []tensor.Tensor{f32("y", []int64{1}, nan)}, []tensor.Tensor{f32("y", []int64{1}, nan)}, true, 0},
		{"NaN against a number", []tensor.Tensor{f32("y", []int64{1}, 0)}, []tensor.Tensor{f32("y", []int64{1}, nan)}, false, 0},
		{"missing output", []tensor.Tensor{f32("y", []int64{1}, 0), f32("z", []int64{1}, 0)}, []tensor.Tensor{f32("y", []int64{1}, 0)}, false, 0},
		{"extra output ignored", []tensor.Tensor{f32("y", []int64{1}, 0)}, []tensor.Tensor{f32("y", []int64{1}, 0), f32("z", []int64{1}, 5)}, true, 0},
		{"shape differs", []tensor.Tensor{f32("y", []int64{2}, 0, 0)}, []tensor.Tensor{f32("y", []int64{1, 2}, 0, 0)}, false, 0},
		{"datatype differs", []tensor.Tensor{f32("y", []int64{1}, 1)}, []tensor.Tensor{{Name: "y", Datatype: tensor.FP64, Shape: []int64{1}, Data: []float64{1}}}, false, 0},
		{"classifier, same top class", []tensor.Tensor{f32("p", []int64{2, 3}, 0.7, 0.2, 0.1, 0.1, 0.1, 0.8)}, []tensor.Tensor{f32("p", []int64{2, 3}, 0.5, 0.3, 0.2, 0.2, 0.2, 0.6)}, true, 0.19},
		{"classifier, another top class", []tensor.Tensor{f32("p", []int64{1, 3}, 0.5, 0.4, 0.1)}, []tensor.Tensor{f32("p", []int64{1, 3}, 0.4, 0.5, 0.1)}, false, 0.09},
		{"not probabilities: element-wise", []tensor.Tensor{f32("e", []int64{1, 3}, 3, 2, 1)}, []tensor.Tensor{f32("e", []int64{1, 3}, 2.9, 2, 1)}, false, 0.09},
		{"integers", []tensor.Tensor{{Name: "c", Datatype: tensor.Int64, Shape: []int64{2}, Data: []int64{3, 4}}}, []tensor.Tensor{{Name: "c", Datatype: tensor.Int64, Shape: []int64{2}, Data: []int64{3, 5}}}, false, 0.9},
		{"booleans equal", []tensor.Tensor{{Name: "b", Datatype: tensor.Bool, Shape: []int64{2}, Data: []bool{true, false}}}, []tensor.Tensor{{Name: "b", Datatype: tensor.Bool, Shape: []int64{2}, Data: []bool{true, false}}}, true, 0},
		{"booleans differ", []tensor.Tensor{{Name: "b", Datatype: tensor.Bool, Shape: []int64{1}, Data: []bool{true}}}, []tensor.Tensor{{Name: "b", Datatype: tensor.Bool, Shape: []int64{1}, Data: []bool{false}}}, false, 0.9},
		{"data not of its datatype", []tensor.Tensor{{Name: "x", Datatype: tensor.FP32, Shape: []int64{1}, Data: []float64{1}}}, []tensor.Tensor{{Name: "x", Datatype: tensor.FP32, Shape: []int64{1}, Data: []float64{2}}}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, diff := agree(tc.active, tc.cand, tol)
			if got != tc.want || diff < tc.wantDiffAbove || (tc.wantDiffAbove == 0 && diff != 0) {
				t.Fatalf("agree = %v (max difference %g), want %v (difference above %g)", got, diff, tc.want, tc.wantDiffAbove)
			}
		})
	}
}

func TestShadowTolerance(t *testing.T) {
	m := &bundle.Manifest{Smoke: []bundle.SmokeVector{{Tolerance: bundle.Tolerance{Abs: 1e-4}}, {Tolerance: bundle.Tolerance{Abs: 1e-5, Rel: 1e-2}}}}
	if got := shadowTolerance(m); got != (bundle.Tolerance{Abs: 1e-4, Rel: 1e-2}) {
		t.Fatalf("tolerance %+v", got)
	}
	if got := shadowTolerance(&bundle.Manifest{}); got != (bundle.Tolerance{Abs: defaultShadowAbs, Rel: defaultShadowRel}) {
		t.Fatalf("default tolerance %+v", got)
	}
}

func FuzzShadowState(f *testing.F) {
	good := `{"schemaVersion":1,"candidate":"silero-vad@2.0.0","dir":"silero-vad@2.0.0-0a1b2c3d4e5f","bundle":{"name":"silero-vad","version":"2.0.0","url":"http://r/b","sigUrl":"http://r/b.sig","sha256":"00","size":1},"since":"2026-03-01T12:00:00Z"}`
	f.Add([]byte(good))
	for _, s := range []string{
		strings.Replace(good, `"dir":"silero-vad@2.0.0-0a1b2c3d4e5f"`, `"dir":"../../etc"`, 1),
		strings.Replace(good, `"dir":"silero-vad@2.0.0-0a1b2c3d4e5f"`, `"dir":"a/b"`, 1),
		strings.Replace(good, `"dir":"silero-vad@2.0.0-0a1b2c3d4e5f"`, `"dir":"/abs"`, 1),
		strings.Replace(good, `"candidate":"silero-vad@2.0.0"`, `"candidate":"other@1.0.0"`, 1),
		strings.Replace(good, `"schemaVersion":1`, `"schemaVersion":2`, 1),
		`{}`, `null`, `[]`, `{"schemaVersion":"1"}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseShadowState(b)
		if err != nil {
			return
		}
		if !filepath.IsLocal(st.Dir) || strings.ContainsAny(st.Dir, `/\`) || st.Candidate != st.Bundle.ID() || st.SchemaVersion != shadowStateSchema {
			t.Fatalf("accepted %+v", st)
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := parseShadowState(again)
		if err != nil || st2.Dir != st.Dir || st2.Candidate != st.Candidate || st2.Bundle != st.Bundle {
			t.Fatalf("re-encoded state %s: %+v, %v", again, st2, err)
		}
	})
}
