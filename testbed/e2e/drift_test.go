package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/controlplane/cli"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
	"github.com/edgefleet/edgefleet/testbed/audio"
	"github.com/edgefleet/edgefleet/testbed/browser"
	"github.com/edgefleet/edgefleet/testbed/fleet"
)

const (
	// driftDevices: half of them ("room=noisy") hear the raised noise
	// floor in the second phase.
	driftDevices = 4
	// driftFrames is each device's predictions per phase: 400 frames
	// (12.8 s of audio) per device, 800 per room, keep the normed
	// Wasserstein distances of normal audio under 0.06 and those of
	// the raised noise floor's level and bands above 0.14 (its
	// zero-crossing rate under 0.07), against the threshold of 0.1.
	driftFrames = 400
	// driftWindow is the agents' drift window: short, so that the
	// phases' windows reach fleetd within a second of their end.
	driftWindow = 250 * time.Millisecond
)

// TestDrift: real agents run the Silero VAD bundle with its reference
// profile on synthetic speech and report drift windows over MQTT; fleetd
// merges them. In a first phase every device hears normal speech, and
// fleetd's report over that time range flags nothing. In a second phase
// the "noisy" room's devices hear the noise floor raised by 18 dB: the
// report for that room flags the level (rms) and every band but not the
// zero-crossing rate; the quiet room's report flags nothing. The
// console's drift page (testdata/drift.mjs, in chromium) shows the noisy
// room's row drifted and the quiet one's not, and is screenshotted at
// 1280 and 390 px into .cache/artifacts/TestDrift.
func TestDrift(t *testing.T) {
	ctx := t.Context()
	art := fleet.TestArtifacts(t)
	pub := fleet.TestPublisher(t)
	b := sileroWithProfile(t, art, pub, "5.1.0")

	room := func(i int) string {
		if i%2 == 1 {
			return "noisy"
		}
		return "quiet"
	}
	f := fleet.Start(t, fleet.Options{
		Devices:      driftDevices,
		Artifacts:    art,
		TrustKeys:    []string{pub.PublicKey},
		SampleRate:   -1, // no prediction samples: the drift records are the point
		Labels:       func(i int) map[string]string { return map[string]string{"room": room(i)} },
		AgentOptions: []agent.Option{agent.WithDriftWindow(driftWindow)},
	})
	if err := f.Push(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := f.AssignAll(ctx, b.ID()); err != nil {
		t.Fatal(err)
	}
	f.WaitAll(t, b.ID()+" active on every device", fleet.Active(b.ID()))

	// Phase 1: normal speech everywhere.
	t0 := time.Now()
	driftPhase(t, f, func(i int) audio.Config { return audio.Normal(uint64(100 + i)) })
	t1 := phaseEnd(t, f, b.ID(), t0, driftDevices*driftFrames)

	// Phase 2: the noisy room's noise floor is raised.
	driftPhase(t, f, func(i int) audio.Config {
		if room(i) == "noisy" {
			return audio.RaisedNoise(uint64(200 + i))
		}
		return audio.Normal(uint64(200 + i))
	})
	phaseEnd(t, f, b.ID(), t1, driftDevices*driftFrames)

	report := func(what string, q client.DriftQuery, wantDevices int, wantDrifted []string, wantNot ...string) {
		t.Helper()
		q.Bundle = b.ID()
		r, err := f.API.Drift(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var drifted []string
		for _, fr := range r.Report.Features {
			if fr.Drift {
				drifted = append(drifted, fr.Name)
			}
			t.Logf("%s: %-15s %s %.3f ± %.3f (threshold %g) drift=%v, %d values", what, fr.Name, fr.Test, fr.Statistic, fr.Bound, fr.Threshold, fr.Drift, fr.Count)
			if want := uint64(wantDevices * driftFrames); fr.Count != want || fr.Missing != 0 {
				t.Errorf("%s: %s: %d values (%d missing), want %d", what, fr.Name, fr.Count, fr.Missing, want)
			}
		}
		t.Logf("%s: %d devices, %d reporting, %d windows, drifted %v (share %.2f)", what, r.Devices, r.Reporting, r.Windows, drifted, r.Report.Share)
		if r.Reporting != wantDevices || r.Invalid != 0 || r.Report.Tested != len(r.Report.Features) {
			t.Errorf("%s: %d devices reporting, %d invalid windows, %d features tested; want %d, 0, all", what, r.Reporting, r.Invalid, r.Report.Tested, wantDevices)
		}
		for _, name := range wantDrifted {
			if !slices.Contains(drifted, name) {
				t.Errorf("%s: %s not flagged (drifted: %v)", what, name, drifted)
			}
		}
		for _, name := range wantNot {
			if slices.Contains(drifted, name) {
				t.Errorf("%s: %s flagged (drifted: %v)", what, name, drifted)
			}
		}
	}
	features := []string{"rms", "zcr", "band_0_300", "band_300_1000", "band_1000_3000", "band_3000_8000", "speech"}
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	phase1 := client.DriftQuery{Since: rfc(t0), Until: rfc(t1)}
	report("phase 1, every device", phase1, driftDevices, nil, features...)
	phase2 := client.DriftQuery{Since: rfc(t1)}
	phase2.Selector = "room=noisy"
	report("phase 2, noisy room", phase2, driftDevices/2,
		[]string{"rms", "band_0_300", "band_300_1000", "band_1000_3000", "band_3000_8000"}, "zcr")
	phase2.Selector = "room=quiet"
	report("phase 2, quiet room", phase2, driftDevices/2, nil, features...)

	// What an operator sees.
	t.Setenv("FLEETCTL_TOKEN", f.OperatorToken)
	var out, errOut strings.Builder
	if code := cli.Run(ctx, []string{"drift", b.ID(), "--server", f.Server.URL(), "--selector", "room=noisy", "--since", rfc(t1)}, &out, &errOut); code != 0 {
		t.Fatalf("fleetctl drift: exit %d: %s", code, errOut.String())
	}
	t.Logf("fleetctl drift %s --selector room=noisy --since %s:\n%s", b.ID(), rfc(t1), out.String())
	if !strings.Contains(out.String(), b.ID()+": DRIFT: ") {
		t.Errorf("fleetctl drift printed\n%s", out.String())
	}

	// What an operator sees in the console: the drift page's breakdown
	// by room since the second phase (testdata/drift.mjs).
	browser.Run(t, "testdata/drift.mjs", map[string]string{
		"URL": f.URL(), "OPERATOR_TOKEN": f.OperatorToken, "BUNDLE": b.ID(),
		"SINCE": rfc(t1), "BY": "room", "NOISY": "noisy", "QUIET": "quiet",
	})
	for _, w := range []string{"1280", "390"} {
		p := filepath.Join(browser.Artifacts(t), "drift-"+w+".png")
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("screenshot %s: %v", p, err)
		}
	}
}

// sileroWithProfile builds and signs the Silero VAD bundle with the WASM
// pre-processor and the reference drift profile of
// testbed/bundles/silero-vad (the harness's SileroBundle ships none).
func sileroWithProfile(t *testing.T, art fleet.Artifacts, pub *fleet.Publisher, version string) fleet.Bundle {
	t.Helper()
	b, err := pub.BuildSilero(t.Context(), t.TempDir(), testbundle.Silero{
		Version: version, Model: art.SileroModel, Pre: art.PreWASM, Smoke: testbundle.SmokeNone,
		Profile: filepath.Join(art.Root, "testbed", "bundles", "silero-vad", "profile.json"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// driftPhase makes driftFrames raw predictions on every agent at once,
// on frames of audio config(i) for agent i.
func driftPhase(t *testing.T, f *fleet.Fleet, config func(i int) audio.Config) {
	t.Helper()
	start := time.Now()
	var wg sync.WaitGroup
	for i, a := range f.Agents {
		wg.Go(func() {
			g, err := audio.New(config(i))
			if err != nil {
				t.Error(err)
				return
			}
			frame := make([]byte, 1024) // 512 samples of 16-bit PCM
			for range driftFrames {
				g.Read(frame)
				if _, err := a.Predict(t.Context(), "silero-vad", frame, true); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d raw predictions on %d agents: %v", driftFrames*len(f.Agents), len(f.Agents), time.Since(start).Round(time.Millisecond))
}

// phaseEnd waits until the agents' drift windows since `since` hold want
// predictions at fleetd, and returns a time after every one of them (so
// that the next phase's windows come after it).
func phaseEnd(t *testing.T, f *fleet.Fleet, bundleID string, since time.Time, want int) time.Time {
	t.Helper()
	// Windows are stamped when the agent closes them, which a busy
	// machine may delay: wait for all of them, with no upper bound, and
	// end the phase after the last one arrived.
	ctx, cancel := context.WithTimeout(t.Context(), fleet.WaitTimeout)
	defer cancel()
	var last string
	for {
		r, err := f.API.Drift(ctx, client.DriftQuery{Bundle: bundleID, Since: since.UTC().Format(time.RFC3339Nano)})
		if err == nil && r.Report.Health.Predictions == uint64(want) {
			return time.Now()
		}
		if err == nil && r.Report.Health.Predictions > uint64(want) {
			t.Fatalf("fleetd's drift windows since %v hold %d predictions, want %d", since, r.Report.Health.Predictions, want)
		}
		last = fmt.Sprint(err)
		if err == nil {
			last = fmt.Sprintf("%d predictions in %d windows", r.Report.Health.Predictions, r.Windows)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %d predictions in fleetd's drift windows: %s", want, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
