package rollout

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

const abSpec = `
kind: experiment
target: ""
experiment:
  arms:
    - {name: control, bundle: vad@1.0.0, percent: 50}
    - {name: candidate, bundle: vad@1.1.0, percent: 50}
  duration: 24h
`

func TestExperimentPicksAndPromotesWinner(t *testing.T) {
	e := newEnv(t, 40)
	e.fleet.errRate[v1] = 0.08 // control: 8% errors
	e.fleet.errRate[v2] = 0.01
	e.fleet.latency[v2] = 9
	e.fleet.output[v2] = 0.6
	ctx := context.Background()
	r := e.create(abSpec)
	if r.Steps[0].Kind != StepExperiment || r.Steps[0].Size != 40 || r.Progress.Assigned != 40 {
		t.Fatalf("experiment %+v", r)
	}
	if e.running(v1) != 20 || e.running(v2) != 20 {
		t.Fatalf("%d on control, %d on candidate", e.running(v1), e.running(v2))
	}
	// While it runs, the comparison is computed live.
	cmp, err := e.eng.Compare(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cmp.Arms[0].Reporting != 20 || cmp.Arms[1].Name != "candidate" {
		t.Fatalf("live comparison %+v", cmp)
	}
	e.advance(24 * time.Hour)
	r = e.get(r.ID)
	wantState(t, r, StateCompleted)
	cmp = r.Comparison
	if cmp == nil || !cmp.Enough || cmp.Winner != "candidate" || !cmp.ErrorRate.Significant || cmp.ErrorRate.Better != "candidate" {
		t.Fatalf("comparison %+v", cmp)
	}
	if !cmp.Output.Significant || cmp.Output.Better != "" {
		t.Fatalf("output test %+v", cmp.Output)
	}
	if !strings.Contains(cmp.Verdict, "candidate (vad@1.1.0) wins at 95% confidence") {
		t.Fatalf("verdict %q", cmp.Verdict)
	}
	// Devices stay held until the operator decides.
	if h, held := e.eng.Holder(devID(0)); !held || h != r.ID {
		t.Fatalf("holder %q %v", h, held)
	}
	if _, err := e.eng.PromoteExperiment(ctx, r.ID, "nope", &Spec{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("promote of an unknown arm: %v", err)
	}
	if _, err := e.eng.Promote(ctx, r.ID, ""); !errors.Is(err, ErrState) {
		t.Fatalf("Promote of an experiment: %v", err)
	}
	spec, _ := ParseSpec([]byte(`{waves: [{count: 1, bake: 1h}, {percent: 100}], gates: {errorRate: {max: 0.05}}}`))
	ro, err := e.eng.PromoteExperiment(ctx, r.ID, "candidate", spec)
	if err != nil {
		t.Fatal(err)
	}
	if ro.From != r.ID || ro.Bundle != v2 || ro.Spec.Target != "" {
		t.Fatalf("promoted rollout %+v", ro)
	}
	x := e.get(r.ID)
	wantState(t, x, StatePromoted)
	if x.PromotedTo != ro.ID {
		t.Fatalf("experiment %+v", x)
	}
	e.advance(time.Hour)
	ro = e.get(ro.ID)
	wantState(t, ro, StateSucceeded)
	if e.running(v2) != 40 {
		t.Fatalf("%d on the winner", e.running(v2))
	}
	// The rollout remembers what each device ran before the experiment:
	// rolling it back returns everyone to 1.0.0, the candidate arm too.
	ro, err = e.eng.Rollback(ctx, ro.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if e.running(v1) != 40 || ro.Progress.RollbackSent != 40 {
		t.Fatalf("%d back on 1.0.0, progress %+v", e.running(v1), ro.Progress)
	}
}

func TestExperimentNoDifference(t *testing.T) {
	e := newEnv(t, 20)
	e.fleet.errRate[v1], e.fleet.errRate[v2] = 0.02, 0.02
	r := e.create(abSpec)
	e.advance(24 * time.Hour)
	r = e.get(r.ID)
	wantState(t, r, StateCompleted)
	if r.Comparison.Winner != "" || r.Comparison.ErrorRate.Significant || !strings.Contains(r.Comparison.Verdict, "no significant difference") {
		t.Fatalf("comparison %+v", r.Comparison)
	}
	// Roll the experiment back: every device returns to what it ran.
	r, err := e.eng.Rollback(context.Background(), r.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, StateRolledBack)
	if e.running(v1) != 20 {
		t.Fatalf("%d on 1.0.0", e.running(v1))
	}
	// Control devices already ran 1.0.0: nothing to send them.
	if r.Progress.RollbackSent != 10 || r.Progress.RollbackSkipped != 10 {
		t.Fatalf("progress %+v", r.Progress)
	}
}

func TestExperimentWaitsForReports(t *testing.T) {
	e := newEnv(t, 10)
	for i := range 10 {
		e.fleet.silent[devID(i)] = true
	}
	r := e.create(abSpec + "waveDeadline: 2h\n")
	e.advance(24 * time.Hour)
	r = e.get(r.ID)
	wantState(t, r, StateRunning)
	if !strings.Contains(r.Progress.Waiting, "control 0 of 3 reporting devices") {
		t.Fatalf("waiting %q", r.Progress.Waiting)
	}
	e.advance(2 * time.Hour)
	r = e.get(r.ID)
	wantState(t, r, StateCompleted)
	if r.Comparison.Enough || !strings.Contains(r.Comparison.Verdict, "not enough reports") {
		t.Fatalf("comparison %+v", r.Comparison)
	}
}

func TestTwoProportionZ(t *testing.T) {
	// 50/1000 vs 30/1000: pooled p=0.04, se=0.008764, z=2.282, p=0.0225.
	z, p := twoProportionZ(50, 1000, 30, 1000)
	if math.Abs(z-2.2822) > 1e-3 || math.Abs(p-0.02248) > 1e-4 {
		t.Fatalf("z=%v p=%v", z, p)
	}
	if z, p := twoProportionZ(0, 100, 0, 100); z != 0 || p != 1 {
		t.Fatalf("no errors: z=%v p=%v", z, p)
	}
	if _, p := twoProportionZ(1, 0, 1, 10); p != 1 {
		t.Fatalf("empty arm: p=%v", p)
	}
}

func TestWelchT(t *testing.T) {
	sum := func(xs ...float64) Summary {
		var s Summary
		for _, x := range xs {
			s.Add(x)
		}
		return s
	}
	// Reference values computed independently (the textbook formulas, and
	// the t tail by numerical integration of Student's density).
	a := sum(19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0)
	b := sum(28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7, 23.2, 17.5, 20.6, 18.0, 23.9, 21.6, 24.3, 20.4, 23.9, 13.3)
	tt, df, p := welchT(a, b)
	if math.Abs(tt-(-2.225512)) > 1e-5 || math.Abs(df-24.524635) > 1e-5 || math.Abs(p-0.0354845) > 1e-6 {
		t.Fatalf("t=%v df=%v p=%v", tt, df, p)
	}
	// Student's t tail against known quantiles: t=2.228, df=10 is p=0.05.
	if p := studentTwoSided(2.228, 10); math.Abs(p-0.05) > 1e-3 {
		t.Fatalf("P(|T10|>2.228) = %v", p)
	}
	if p := studentTwoSided(0, 5); math.Abs(p-1) > 1e-9 {
		t.Fatalf("P(|T|>0) = %v", p)
	}
	if _, _, p := welchT(sum(1), sum(1, 2)); p != 1 {
		t.Fatalf("one value: p=%v", p)
	}
	// No spread on either side: any difference is certain, and the
	// statistic stays finite (it is stored as JSON).
	if tt, _, p := welchT(sum(2, 2), sum(1, 1)); p != 0 || math.IsInf(tt, 0) || tt <= 0 {
		t.Fatalf("constant samples: t=%v p=%v", tt, p)
	}
	// Merging summaries equals summarising everything.
	m := sum(1, 2, 3)
	m.Merge(sum(4, 5))
	all := sum(1, 2, 3, 4, 5)
	if m.Count != all.Count || math.Abs(m.Mean-all.Mean) > 1e-12 || math.Abs(m.Variance()-all.Variance()) > 1e-12 {
		t.Fatalf("merged %+v, all %+v", m, all)
	}
}
