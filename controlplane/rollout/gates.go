package rollout

import (
	"context"
	"fmt"
	"slices"
)

// installResult is the installSuccess gate, with whether its breach is
// already certain (more failures than the threshold allows even if every
// other device succeeds), which ends the step without waiting for the
// bake.
type installResult struct {
	GateResult
	certain bool
}

// stepDevices returns the step's devices that count (not removed, not
// skipped) and the mode they are in it.
func (rn *run) stepDevices(step Step) ([]*Device, Mode) {
	want := ModeInstall
	if step.Kind == StepShadow {
		want = ModeShadow
	}
	out := make([]*Device, 0, step.Size)
	for _, d := range rn.devs[:step.Size] {
		if d.Phase == PhaseRemoved || (d.Mode == want && d.Phase == PhaseSkipped) {
			continue
		}
		out = append(out, d)
	}
	return out, want
}

func (rn *run) installGate(step Step) installResult {
	g := rn.r.Spec.Gates.InstallSuccess
	devs, want := rn.stepDevices(step)
	n, inst, fail := len(devs), 0, 0
	for _, d := range devs {
		if d.Mode != want {
			continue
		}
		switch d.Phase {
		case PhaseInstalled:
			inst++
		case PhaseFailed:
			fail++
		}
	}
	res := installResult{GateResult: GateResult{
		Gate: GateInstallSuccess, Threshold: *g.Min, Reports: inst + fail, MinReports: g.MinReports.Of(n),
		Detail: fmt.Sprintf("%d of %d devices installed, %d failed, %d pending", inst, n, fail, n-inst-fail),
	}}
	if step.Kind == StepShadow {
		res.Detail = fmt.Sprintf("%d of %d devices run the candidate in shadow, %d failed, %d pending", inst, n, fail, n-inst-fail)
	}
	if res.Reports > 0 {
		res.Value = float64(inst) / float64(res.Reports)
	}
	switch {
	case n == 0:
		res.Status = GateSkipped
	case res.Reports < res.MinReports:
		res.Status = GateWaiting
	case res.Value < *g.Min:
		res.Status = GateBreach
	default:
		res.Status = GatePass
	}
	if n > 0 && float64(fail) > (1-*g.Min)*float64(n)+1e-9 {
		res.Status, res.certain = GateBreach, true
	}
	return res
}

// health asks the observer for q; its error names the bundle and the
// device.
func (e *Engine) health(ctx context.Context, q HealthQuery) (Health, error) {
	h, err := e.obs.Health(ctx, q)
	if err != nil {
		return Health{}, fmt.Errorf("health of %s on %s: %w", q.Bundle.ID(), q.Device, err)
	}
	return h, nil
}

// evaluate evaluates every gate of the step after its bake.
func (e *Engine) evaluate(ctx context.Context, rn *run, step Step, inst GateResult) ([]GateResult, error) {
	r := rn.r
	gates := r.Spec.Gates
	res := []GateResult{inst}
	devs, want := rn.stepDevices(step)
	n := len(devs)
	if step.Kind == StepShadow {
		if gates.ShadowAgreement == nil {
			return res, nil
		}
		g := gates.ShadowAgreement
		gr := GateResult{Gate: GateShadowAgreement, Threshold: *g.Min, MinReports: g.MinReports.Of(n)}
		var samples, agreed int64
		for _, d := range devs {
			if d.Mode != want || d.Phase != PhaseInstalled {
				continue
			}
			h, err := e.health(ctx, HealthQuery{Device: d.ID, Bundle: r.Bundle, Since: d.AssignedAt})
			if err != nil {
				return nil, err
			}
			if h.ShadowSamples > 0 {
				gr.Reports++
				samples += h.ShadowSamples
				agreed += min(h.ShadowAgreed, h.ShadowSamples)
			}
		}
		if samples > 0 {
			gr.Value = float64(agreed) / float64(samples)
		}
		gr.Detail = fmt.Sprintf("%d of %d shadow samples agreed", agreed, samples)
		gr.Status = ratioStatus(gr, n, gr.Value >= *g.Min)
		return append(res, gr), nil
	}
	if gates.ErrorRate == nil && gates.LatencyP95 == nil && gates.Drift == nil {
		return res, nil
	}
	var (
		errRate      = GateResult{Gate: GateErrorRate}
		reqs, errs   int64
		ratios       []float64
		eligible     int
		scores       []float64
		latencyGate  = gates.LatencyP95
		latency      = GateResult{Gate: GateLatencyP95}
		drift        = GateResult{Gate: GateDrift}
		haveBaseline = 0
	)
	for _, d := range devs {
		prevOK := d.Previous != nil && *d.Previous != r.Bundle
		if prevOK {
			eligible++
		}
		if d.Mode != want || d.Phase != PhaseInstalled {
			continue
		}
		h, err := e.health(ctx, HealthQuery{Device: d.ID, Bundle: r.Bundle, Since: d.AssignedAt})
		if err != nil {
			return nil, err
		}
		if h.Requests > 0 {
			errRate.Reports++
			reqs += h.Requests
			errs += min(h.Errors, h.Requests)
		}
		if h.DriftWindows > 0 {
			scores = append(scores, h.DriftScore)
		}
		if latencyGate != nil && prevOK && h.Requests > 0 && h.LatencyP95Ms > 0 {
			base, err := e.health(ctx, HealthQuery{
				Device: d.ID, Bundle: *d.Previous,
				Since: d.AssignedAt.Add(-latencyGate.Baseline.D()), Until: d.AssignedAt,
			})
			if err != nil {
				return nil, err
			}
			if base.Requests > 0 && base.LatencyP95Ms > 0 {
				haveBaseline++
				ratios = append(ratios, h.LatencyP95Ms/base.LatencyP95Ms)
			}
		}
	}
	if g := gates.ErrorRate; g != nil {
		errRate.Threshold, errRate.MinReports = *g.Max, g.MinReports.Of(n)
		if reqs > 0 {
			errRate.Value = float64(errs) / float64(reqs)
		}
		errRate.Detail = fmt.Sprintf("%d errors in %d requests", errs, reqs)
		errRate.Status = ratioStatus(errRate, n, errRate.Value <= *g.Max)
		res = append(res, errRate)
	}
	if g := latencyGate; g != nil {
		latency.Threshold, latency.MinReports, latency.Reports = *g.MaxRatio, g.MinReports.Of(eligible), haveBaseline
		latency.Value = median(ratios)
		latency.Detail = fmt.Sprintf("median of p95(new)/p95(previous) over %d devices (%d of the step's devices ran an earlier version)", haveBaseline, eligible)
		if eligible == 0 {
			latency.Status, latency.Detail = GateSkipped, "no device of this step ran an earlier version to compare with"
		} else {
			latency.Status = ratioStatus(latency, eligible, latency.Value <= *g.MaxRatio)
		}
		res = append(res, latency)
	}
	if g := gates.Drift; g != nil {
		drift.Threshold, drift.MinReports, drift.Reports = *g.MaxScore, g.MinReports.Of(n), len(scores)
		drift.Value = median(scores)
		drift.Detail = fmt.Sprintf("median drift score over %d devices", len(scores))
		drift.Status = ratioStatus(drift, n, drift.Value <= *g.MaxScore)
		res = append(res, drift)
	}
	return res, nil
}

// ratioStatus decides a gate with n candidate devices.
func ratioStatus(g GateResult, n int, ok bool) GateStatus {
	switch {
	case n == 0:
		return GateSkipped
	case g.Reports < g.MinReports:
		return GateWaiting
	case !ok:
		return GateBreach
	}
	return GatePass
}

// median returns the median of vs (0 for none); vs is reordered.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	m := len(vs) / 2
	if len(vs)%2 == 1 {
		return vs[m]
	}
	return (vs[m-1] + vs[m]) / 2
}
