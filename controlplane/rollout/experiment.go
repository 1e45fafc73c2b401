package rollout

import (
	"context"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Confidence is the confidence level of an experiment's tests: a
// difference is significant when its p-value is below 1 - Confidence.
const Confidence = 0.95

// Comparison compares an experiment's two arms.
type Comparison struct {
	// Arms are the two arms' figures, control first.
	Arms [2]ArmStats `json:"arms"`
	// ErrorRate compares inference error rates (two-proportion z-test on
	// errors / requests pooled over each arm's devices).
	ErrorRate Test `json:"errorRate"`
	// Latency compares the devices' p95 latencies (Welch's t-test, one
	// value per device).
	Latency Test `json:"latency"`
	// Output compares the sampled outputs' means (Welch's t-test on the
	// merged output summaries).
	Output Test `json:"output"`
	// Enough is true when each arm has its MinReports reporting devices.
	Enough bool `json:"enough"`
	// Winner is the name of the arm the tests favour, "" when none does.
	Winner string `json:"winner,omitempty"`
	// Verdict says it in a sentence.
	Verdict string    `json:"verdict"`
	At      time.Time `json:"at"`
}

// ArmStats are one arm's figures.
type ArmStats struct {
	Name   string            `json:"name"`
	Bundle protocol.BundleID `json:"bundle"`
	// Devices in the arm; Reporting those with inference metrics;
	// MinReports how many are needed.
	Devices    int `json:"devices"`
	Reporting  int `json:"reporting"`
	MinReports int `json:"minReports"`
	// Requests and Errors summed over the arm; ErrorRate their ratio.
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	ErrorRate float64 `json:"errorRate"`
	// LatencyP95Ms summarises the devices' p95 latencies.
	LatencyP95Ms Summary `json:"latencyP95Ms"`
	// Output summarises the sampled outputs.
	Output Summary `json:"output"`
}

// Test is one statistical comparison of the arms.
type Test struct {
	Method string `json:"method"`
	// Statistic is z or t (positive when arm A's value is larger); DF
	// the degrees of freedom of a t-test.
	Statistic float64 `json:"statistic"`
	DF        float64 `json:"df,omitempty"`
	PValue    float64 `json:"pValue"`
	// Significant: PValue < 1 - Confidence.
	Significant bool `json:"significant"`
	// Better is the arm with the better (lower) value when the
	// difference is significant (not set for outputs, where neither
	// direction is better).
	Better string `json:"better,omitempty"`
	// Statement says it in words.
	Statement string `json:"statement"`
}

// evaluateExperiment compares the arms once the duration is over, and
// completes the experiment when both have enough reports (or at the
// deadline, with what there is).
func (e *Engine) evaluateExperiment(ctx context.Context, rn *run, inst GateResult, now time.Time) bool {
	r := rn.r
	r.Gates = []GateResult{inst}
	cmp, err := e.compare(ctx, rn, now)
	if err != nil {
		r.LastError = err.Error()
		r.Progress.Waiting = "reading device health: " + err.Error()
		return false
	}
	r.Comparison = cmp
	if !cmp.Enough && now.Before(r.Deadline) {
		r.Progress.Waiting = fmt.Sprintf("evidence: %s %d of %d reporting devices, %s %d of %d, until %s",
			cmp.Arms[0].Name, cmp.Arms[0].Reporting, cmp.Arms[0].MinReports,
			cmp.Arms[1].Name, cmp.Arms[1].Reporting, cmp.Arms[1].MinReports, r.Deadline.UTC().Format(time.RFC3339))
		return false
	}
	r.State, r.Progress.Waiting = StateCompleted, ""
	r.Reason = "experiment completed; promote an arm, roll back or abort"
	ev := rn.event(now, EventCompleted, r.Step, cmp.Verdict)
	ev.Gates = r.Gates
	e.log.Info("rollout: experiment completed", "rollout", r.ID, "winner", cmp.Winner)
	return true
}

// compare computes the comparison from the arms' health.
func (e *Engine) compare(ctx context.Context, rn *run, now time.Time) (*Comparison, error) {
	r := rn.r
	x := r.Spec.Experiment
	cmp := &Comparison{At: now}
	for i := range cmp.Arms {
		cmp.Arms[i].Name, cmp.Arms[i].Bundle = x.Arms[i].Name, r.Arms[i]
	}
	for _, d := range rn.devs[:r.Steps[0].Size] {
		if d.Phase == PhaseRemoved {
			continue
		}
		a := &cmp.Arms[d.Arm]
		a.Devices++
		if d.Mode != ModeInstall || d.Phase != PhaseInstalled {
			continue
		}
		h, err := e.health(ctx, HealthQuery{Device: d.ID, Bundle: r.Arms[d.Arm], Since: d.AssignedAt})
		if err != nil {
			return nil, err
		}
		if h.Requests <= 0 {
			continue
		}
		a.Reporting++
		a.Requests += h.Requests
		a.Errors += min(h.Errors, h.Requests)
		if h.LatencyP95Ms > 0 {
			a.LatencyP95Ms.Add(h.LatencyP95Ms)
		}
		a.Output.Merge(h.Output)
	}
	cmp.Enough = true
	for i := range cmp.Arms {
		a := &cmp.Arms[i]
		a.MinReports = x.MinReports.Of(a.Devices)
		if a.Requests > 0 {
			a.ErrorRate = float64(a.Errors) / float64(a.Requests)
		}
		if a.Devices == 0 || a.Reporting < a.MinReports {
			cmp.Enough = false
		}
	}
	compareArms(cmp)
	return cmp, nil
}

// compareArms runs the tests and names the winner: the arm with a
// significantly lower error rate and no significantly higher latency, or,
// error rates not differing, the one with significantly lower latency.
func compareArms(cmp *Comparison) {
	a, b := &cmp.Arms[0], &cmp.Arms[1]
	alpha := 1 - Confidence
	pct := fmt.Sprintf("%.0f%%", Confidence*100)

	z, p := twoProportionZ(a.Errors, a.Requests, b.Errors, b.Requests)
	cmp.ErrorRate = Test{Method: "two-proportion z-test on errors/requests", Statistic: z, PValue: p, Significant: p < alpha && a.Requests > 0 && b.Requests > 0}
	if cmp.ErrorRate.Significant {
		cmp.ErrorRate.Better = pick(z < 0, a.Name, b.Name)
		cmp.ErrorRate.Statement = fmt.Sprintf("%s has the lower error rate (%.3g%% vs %.3g%%, z=%.2f, p=%.3g): significant at %s",
			cmp.ErrorRate.Better, 100*pick(z < 0, a.ErrorRate, b.ErrorRate), 100*pick(z < 0, b.ErrorRate, a.ErrorRate), z, p, pct)
	} else {
		cmp.ErrorRate.Statement = fmt.Sprintf("no significant difference in error rate at %s (%.3g%% vs %.3g%%, p=%.3g)", pct, 100*a.ErrorRate, 100*b.ErrorRate, p)
	}

	t, df, p := welchT(a.LatencyP95Ms, b.LatencyP95Ms)
	cmp.Latency = Test{Method: "Welch's t-test on per-device p95 latency", Statistic: t, DF: df, PValue: p, Significant: p < alpha}
	switch {
	case a.LatencyP95Ms.Count < 2 || b.LatencyP95Ms.Count < 2:
		cmp.Latency.Statement = "not enough devices with latency to compare (two per arm needed)"
	case cmp.Latency.Significant:
		cmp.Latency.Better = pick(t < 0, a.Name, b.Name)
		cmp.Latency.Statement = fmt.Sprintf("%s is faster (mean p95 %.3g ms vs %.3g ms, t=%.2f, df=%.1f, p=%.3g): significant at %s",
			cmp.Latency.Better, pick(t < 0, a.LatencyP95Ms.Mean, b.LatencyP95Ms.Mean), pick(t < 0, b.LatencyP95Ms.Mean, a.LatencyP95Ms.Mean), t, df, p, pct)
	default:
		cmp.Latency.Statement = fmt.Sprintf("no significant difference in p95 latency at %s (%.3g ms vs %.3g ms, p=%.3g)", pct, a.LatencyP95Ms.Mean, b.LatencyP95Ms.Mean, p)
	}

	t, df, p = welchT(a.Output, b.Output)
	cmp.Output = Test{Method: "Welch's t-test on sampled output means", Statistic: t, DF: df, PValue: p, Significant: p < alpha}
	switch {
	case a.Output.Count < 2 || b.Output.Count < 2:
		cmp.Output.Statement = "not enough sampled outputs to compare"
	case cmp.Output.Significant:
		cmp.Output.Statement = fmt.Sprintf("the output distributions differ (mean %.4g vs %.4g, t=%.2f, p=%.3g): significant at %s", a.Output.Mean, b.Output.Mean, t, p, pct)
	default:
		cmp.Output.Statement = fmt.Sprintf("no significant difference in mean output at %s (%.4g vs %.4g, p=%.3g)", pct, a.Output.Mean, b.Output.Mean, p)
	}

	switch er, lat := cmp.ErrorRate.Better, cmp.Latency.Better; {
	case er != "" && (lat == "" || lat == er):
		cmp.Winner = er
	case er == "" && lat != "":
		cmp.Winner = lat
	}
	switch {
	case !cmp.Enough:
		cmp.Verdict = "not enough reports yet for a conclusion"
		if cmp.Winner != "" {
			cmp.Verdict += fmt.Sprintf(" (%s leads so far)", cmp.Winner)
		}
	case cmp.Winner != "":
		cmp.Verdict = fmt.Sprintf("%s (%s) wins at %s confidence: %s; %s", cmp.Winner, armBundle(cmp, cmp.Winner), pct, cmp.ErrorRate.Statement, cmp.Latency.Statement)
	case cmp.ErrorRate.Better != "":
		cmp.Verdict = "no winner: the arms trade error rate against latency; " + cmp.ErrorRate.Statement + "; " + cmp.Latency.Statement
	default:
		cmp.Verdict = "no significant difference between the arms: " + cmp.ErrorRate.Statement + "; " + cmp.Latency.Statement
	}
}

func armBundle(cmp *Comparison, name string) string {
	for _, a := range cmp.Arms {
		if a.Name == name {
			return a.Bundle.ID()
		}
	}
	return ""
}

func pick[T any](first bool, a, b T) T {
	if first {
		return a
	}
	return b
}

// Compare returns an experiment's comparison: computed now while it runs,
// the final one once it completed.
func (e *Engine) Compare(ctx context.Context, id string) (*Comparison, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	rn, ok := e.runs[id]
	if !ok || rn.r.State != StateRunning && rn.r.State != StatePaused {
		r := (*Rollout)(nil)
		if ok {
			r = rn.r
		} else {
			var err error
			if r, err = e.load(id); err != nil {
				return nil, err
			}
		}
		if r.Spec.Kind != KindExperiment {
			return nil, fmt.Errorf("%w: %s is not an experiment", ErrInvalid, id)
		}
		if r.Comparison == nil {
			return nil, fmt.Errorf("%w: experiment %s ended (%s) before a comparison was made", ErrState, id, r.State)
		}
		cp := *r.Comparison
		return &cp, nil
	}
	if rn.r.Spec.Kind != KindExperiment {
		return nil, fmt.Errorf("%w: %s is not an experiment", ErrInvalid, id)
	}
	return e.compare(ctx, rn, e.now())
}

// PromoteExperiment promotes arm (its name) of experiment id into a new
// rollout described by spec (kind rollout; its target defaults to the
// experiment's, its bundle to the arm's, and must be the arm's if set).
// The experiment ends (promoted) and hands its devices to the rollout,
// which records, for each, the version it ran before the experiment: a
// rollback returns there. Allowed while the experiment is running, paused
// or completed.
func (e *Engine) PromoteExperiment(ctx context.Context, id, arm string, spec *Spec) (*Rollout, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	xr, err := e.activeRun(id, "promote")
	if err != nil {
		return nil, err
	}
	x := xr.r
	if x.Spec.Kind != KindExperiment {
		return nil, fmt.Errorf("%w: %s is not an experiment (use Promote)", ErrInvalid, id)
	}
	if x.State == StateRollingBack {
		return nil, stateErr(x, "promote", "it is rolling back")
	}
	ai := -1
	for i, a := range x.Spec.Experiment.Arms {
		if a.Name == arm {
			ai = i
		}
	}
	if ai < 0 {
		return nil, fmt.Errorf("%w: experiment %s has no arm %q (arms: %s, %s)", ErrInvalid, id, arm,
			x.Spec.Experiment.Arms[0].Name, x.Spec.Experiment.Arms[1].Name)
	}
	if spec == nil {
		return nil, fmt.Errorf("%w: a rollout spec is needed (waves, gates)", ErrInvalid)
	}
	s := *spec // plan validates it and deep-copies it; only strings are set here
	if s.Kind == "" {
		s.Kind = KindRollout
	}
	if s.Kind != KindRollout {
		return nil, &FieldError{Path: "kind", Msg: fmt.Sprintf("must be %q to promote an arm", KindRollout)}
	}
	if s.Target == "" {
		s.Target = x.Spec.Target
	}
	want := x.Spec.Experiment.Arms[ai].Bundle
	if s.Bundle == "" {
		s.Bundle = want
	} else if s.Bundle != want {
		return nil, &FieldError{Path: "bundle", Msg: fmt.Sprintf("is %s, but arm %q runs %s", s.Bundle, arm, want)}
	}
	p, err := e.plan(ctx, &s, e.newID())
	if err != nil {
		return nil, err
	}
	prev := map[string]*protocol.BundleID{}
	for _, d := range xr.devs {
		if d.PreviousKnown {
			prev[d.ID] = d.Previous
		}
	}
	rn, err := e.create(p, prev, id)
	if err != nil {
		return nil, err
	}
	now := e.now()
	x.State, x.PromotedTo, x.Reason = StatePromoted, rn.r.ID, fmt.Sprintf("arm %q (%s) promoted into rollout %s", arm, want, rn.r.ID)
	xr.release = true
	xr.event(now, EventPromotedTo, x.Step, x.Reason)
	if err := e.flush(xr); err != nil {
		return nil, err
	}
	delete(e.runs, id)
	if err := e.advance(ctx, rn); err != nil {
		e.log.Warn("rollout: advancing a promoted rollout", "rollout", rn.r.ID, "err", err)
	}
	return rn.snapshot(), nil
}
