package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/testbed/browser"
)

// TestConsoleExperiment drives the console's experiments pages in
// chromium (testdata/experiment.mjs) against real agents: an A/B
// experiment started with fleetctl appears on the experiments page
// without a reload, its page shows the arms side by side and, once it
// completes, the comparison's statements (the same the API gives); a
// viewer has no Promote button; the operator's Promote of the candidate
// (after its confirmation) lands on the new rollout's page, and the API
// confirms the experiment promoted into that rollout of the candidate's
// version. Screenshots at 1280 and 390 px in
// .cache/artifacts/TestConsoleExperiment.
func TestConsoleExperiment(t *testing.T) {
	c := startConsole(t, 6)
	e, write := c.e, c.write
	v2 := e.bundle("2.0.0", "")
	e.push(v2)
	spec := write("ab.yaml", `kind: experiment
name: vad 1.0 vs 2.0
target: ""
experiment:
  arms:
    - {name: control, bundle: silero-vad@1.0.0, percent: 50}
    - {name: candidate, bundle: `+v2.ID()+`, percent: 50}
  duration: 15s
  minReports: "100%"
waveDeadline: 5m
gates:
  installSuccess: {min: 0.9}
`)
	browser.Run(t, "testdata/experiment.mjs", c.env(map[string]string{"SPEC_AB": spec, "PROMOTE_ARM": "candidate"}))

	// What the browser did, seen from the API.
	var got struct {
		Experiment, Rollout string
		Statements          map[string]string
	}
	b, err := os.ReadFile(filepath.Join(browser.Artifacts(t), "experiment.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	x, err := e.f.API.Rollout(t.Context(), got.Experiment, false)
	if err != nil {
		t.Fatal(err)
	}
	if x.State != rollout.StatePromoted || x.PromotedTo == "" || x.PromotedTo != got.Rollout {
		t.Errorf("experiment %s: %s, promoted to %q; the browser landed on rollout %q", x.ID, x.State, x.PromotedTo, got.Rollout)
	}
	if cmp := x.Comparison; cmp == nil {
		t.Errorf("experiment %s has no comparison", x.ID)
	} else {
		for k, want := range map[string]string{"errorRate": cmp.ErrorRate.Statement, "latency": cmp.Latency.Statement, "output": cmp.Output.Statement} {
			if got.Statements[k] != want {
				t.Errorf("the page's %s statement %q, the API's %q", k, got.Statements[k], want)
			}
		}
		if cmp.Arms[1].Reporting == 0 || cmp.Arms[1].Requests == 0 {
			t.Errorf("the candidate arm has no reports: %+v", cmp.Arms[1])
		}
	}
	ro, err := e.f.API.Rollout(t.Context(), got.Rollout, false)
	if err != nil {
		t.Fatal(err)
	}
	if ro.From != x.ID || ro.Bundle.ID() != v2.ID() || ro.Spec.Kind != rollout.KindRollout || len(ro.Arms) != 0 {
		t.Errorf("promoted rollout %s: from %q, bundle %s, kind %s", ro.ID, ro.From, ro.Bundle.ID(), ro.Spec.Kind)
	}
	for _, page := range []string{"experiments", "experiment", "viewer-experiment", "promoted-rollout"} {
		for _, w := range []string{"1280", "390"} {
			p := filepath.Join(browser.Artifacts(t), page+"-"+w+".png")
			if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
				t.Errorf("screenshot %s: %v", p, err)
			}
		}
	}
}
