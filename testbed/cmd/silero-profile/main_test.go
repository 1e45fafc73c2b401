package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/testbed/audio"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

func session(t *testing.T) *onnx.Session {
	t.Helper()
	sess, err := openModel(testenv.ORTLibrary(t), testenv.SileroModel(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// TestCommittedProfile: testbed/bundles/silero-vad/profile.json is what
// the command builds with its defaults (within ONNX Runtime's rounding
// across CPUs).
func TestCommittedProfile(t *testing.T) {
	root := testenv.Root(t)
	sess := session(t)
	s, err := drift.LoadSchema(filepath.Join(root, defaultSchema))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := drift.LoadProfile(filepath.Join(root, defaultProfile))
	if err != nil {
		t.Fatal(err)
	}
	cols, err := reference(context.Background(), sess, s, audio.Normal(defaultSeed), defaultSeconds*audio.SampleRate/frame.Samples)
	if err != nil {
		t.Fatal(err)
	}
	d, err := table(s, cols)
	if err != nil {
		t.Fatal(err)
	}
	p, err := drift.Build(s, d)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID() == committed.ID() {
		return
	}
	t.Logf("rebuilt profile %s, committed %s: comparing within tolerance", p.ID(), committed.ID())
	if err := close(p, committed); err != nil {
		t.Fatalf("%s is stale (%v): rebuild it with `go run ./testbed/cmd/silero-profile`", defaultProfile, err)
	}
}

// close compares two profiles of the same schema, allowing for the last
// bits of ONNX Runtime's output (the speech probability) to differ.
func close(a, b *drift.Profile) error {
	if len(a.Features) != len(b.Features) || a.Options != b.Options {
		return fmt.Errorf("different features or options")
	}
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-5*(1+math.Abs(y)) }
	for i := range a.Features {
		fa, fb := a.Features[i], b.Features[i]
		na, nb := fa.Numerical, fb.Numerical
		if fa.Name != fb.Name || fa.Count != fb.Count || na == nil || nb == nil {
			return fmt.Errorf("feature %d: %s/%s", i, fa.Name, fb.Name)
		}
		if !near(na.Mean, nb.Mean) || !near(na.Std, nb.Std) || !near(na.Min, nb.Min) || !near(na.Max, nb.Max) ||
			len(na.Edges) != len(nb.Edges) || len(na.Sample) != len(nb.Sample) {
			return fmt.Errorf("feature %s: moments or sizes differ", fa.Name)
		}
		for j := range na.Edges {
			if !near(na.Edges[j], nb.Edges[j]) {
				return fmt.Errorf("feature %s: edge %d %g, %g", fa.Name, j, na.Edges[j], nb.Edges[j])
			}
		}
		for j := range na.Sample {
			if !near(na.Sample[j], nb.Sample[j]) {
				return fmt.Errorf("feature %s: sample %d %g, %g", fa.Name, j, na.Sample[j], nb.Sample[j])
			}
		}
	}
	return nil
}

// TestSileroDrift: two minutes of normal synthetic speech, summarized as
// the agent does (ObserveTensors on the pre-processor's features and the
// model's output) and compared with the committed profile, are not
// flagged; with the noise floor raised by 18 dB the level and band
// features (and the speech probability) drift, and not everything does:
// the zero-crossing rate stays.
func TestSileroDrift(t *testing.T) {
	root := testenv.Root(t)
	sess := session(t)
	p, err := drift.LoadProfile(filepath.Join(root, defaultProfile))
	if err != nil {
		t.Fatal(err)
	}
	const frames = 120 * audio.SampleRate / frame.Samples
	window := func(c audio.Config) *drift.Report {
		s := drift.NewSummary(p)
		s.Start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		err := predict(context.Background(), sess, c, frames, func(features, outputs []tensor.Tensor) error {
			s.ObserveHealth(time.Millisecond, false)
			return s.ObserveTensors(features, outputs)
		})
		if err != nil {
			t.Fatal(err)
		}
		s.End = s.Start.Add(2 * time.Minute)
		// As fleetd gets it.
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		dec, err := drift.DecodeSummary(b)
		if err != nil {
			t.Fatal(err)
		}
		r, err := drift.Compare(p, dec, drift.CompareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v (%d bytes):", c, len(b))
		for _, f := range r.Features {
			t.Logf("  %-15s %s %.3f ± %.3f (threshold %g) drift=%v", f.Name, f.Test, f.Statistic, f.Bound, f.Threshold, f.Drift)
		}
		return r
	}
	for _, seed := range []uint64{101, 102} {
		r := window(audio.Normal(seed))
		if r.Drifted != 0 || r.Tested != len(p.Features) {
			t.Errorf("normal speech (seed %d): %d of %d features drifted", seed, r.Drifted, r.Tested)
		}
	}
	r := window(audio.RaisedNoise(103))
	var drifted []string
	for _, f := range r.Features {
		if f.Drift {
			drifted = append(drifted, f.Name)
		}
	}
	for _, name := range []string{"rms", "band_0_300", "band_300_1000", "band_1000_3000", "band_3000_8000"} {
		if !slices.Contains(drifted, name) {
			t.Errorf("raised noise floor: %s did not drift (drifted: %v)", name, drifted)
		}
	}
	if len(drifted) == len(p.Features) || slices.Contains(drifted, "zcr") {
		t.Errorf("raised noise floor: drifted %v; the zero-crossing rate should not", drifted)
	}
	if r.Health.Predictions != frames {
		t.Errorf("health: %d predictions, want %d", r.Health.Predictions, frames)
	}
}
