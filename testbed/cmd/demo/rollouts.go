package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// watchRollout follows a rollout until it is no longer active (or
// timeout), narrating what changes: steps, devices, gates, state. It
// asks fleetd once a second, as fleetctl rollout status --watch does.
func (d *demo) watchRollout(ctx context.Context, id string, timeout time.Duration) (*api.RolloutStatus, error) {
	d.n.Say("Following it with fleetctl rollout status %s --devices -o json every second (--watch prints the same as tables):", id)
	var (
		prevState  rollout.State
		prevStep   = -1
		prevPhase  = map[string]string{}
		prevGate   = map[string]rollout.GateStatus{}
		installed  = map[string]time.Time{}
		st         api.RolloutStatus
		deadline   = time.Now().Add(timeout)
		canarySaid bool
	)
	for {
		st = api.RolloutStatus{}
		if err := d.fleetJSON(ctx, &st, "rollout", "status", id, "--devices"); err != nil {
			return nil, err
		}
		if st.Step != prevStep && st.Step < len(st.Steps) {
			s := st.Steps[st.Step]
			d.n.Say("step %d/%d %q: %d of %d devices, bake %s", st.Step+1, len(st.Steps), s.Name, s.Size, st.Devices, s.Bake.D())
			prevStep = st.Step
			prevGate = map[string]rollout.GateStatus{}
		}
		for _, dv := range st.DeviceList {
			phase := string(dv.Phase)
			if dv.Rollback != "" {
				phase = "rollback " + string(dv.Rollback)
			}
			if phase == prevPhase[dv.ID] || phase == "" {
				continue
			}
			prevPhase[dv.ID] = phase
			switch {
			case dv.Rollback == rollout.RollbackSent:
				prev := "its previous version"
				if dv.Previous != nil {
					prev = dv.Previous.ID()
				}
				d.n.Say("  %s: told to roll back to %s", dv.ID, prev)
			case dv.Rollback == rollout.RollbackSkipped:
				d.n.Say("  %s: nothing to roll back (%s)", dv.ID, dv.Note)
			case dv.Phase == rollout.PhaseInstalled:
				installed[dv.ID] = time.Now()
				d.n.Say("  %s: %s installed and serving", dv.ID, st.Bundle.ID())
			case dv.Phase == rollout.PhaseFailed:
				d.n.Say("  %s: failed: %s", dv.ID, dv.Error)
			case dv.Phase == rollout.PhaseAssigned || dv.Phase == rollout.PhaseInstalling:
				d.n.Say("  %s: %s (desired state seq %d sent over MQTT)", dv.ID, dv.Phase, dv.Seq)
			}
		}
		for _, g := range st.Gates {
			if prevGate[g.Gate] == g.Status {
				continue
			}
			prevGate[g.Gate] = g.Status
			d.n.Say("  gate %s: %s", g.Gate, describeGate(g))
		}
		if st.State != prevState {
			if prevState != "" || st.State != rollout.StateRunning {
				msg := string(st.State)
				if st.Reason != "" {
					msg += ": " + st.Reason
				}
				d.n.Say("rollout %s", msg)
			}
			prevState = st.State
		}
		if !canarySaid && d.canarySlow(&st, installed) {
			canarySaid = true
		}
		if !st.State.Active() {
			d.n.Progress(-1, "")
			return &st, nil
		}
		d.n.Progress(-1, "%s", d.rolloutStatusLine(&st, installed))
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("rollout %s is still %s after %v (%s)", id, st.State, timeout, st.Progress.Waiting)
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(time.Second):
		}
	}
}

// describeGate says what a gate result means.
func describeGate(g rollout.GateResult) string {
	switch g.Status {
	case rollout.GateWaiting:
		return fmt.Sprintf("waiting for evidence, %d of %d reports (%s)", g.Reports, g.MinReports, g.Detail)
	case rollout.GateSkipped:
		return "skipped: " + g.Detail
	}
	return fmt.Sprintf("%s, value %s, threshold %s, %d/%d reports (%s)", g.Status, fmtValue(g.Value), fmtValue(g.Threshold), g.Reports, g.MinReports, g.Detail)
}

func fmtValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e6 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// rolloutStatusLine is the live line while a rollout runs.
func (d *demo) rolloutStatusLine(st *api.RolloutStatus, installed map[string]time.Time) string {
	var b strings.Builder
	if st.Step < len(st.Steps) {
		fmt.Fprintf(&b, "step %d/%d %s · ", st.Step+1, len(st.Steps), st.Steps[st.Step].Name)
	}
	fmt.Fprintf(&b, "%d/%d installed", st.Progress.Installed, st.Progress.Assigned)
	w := st.Progress.Waiting
	switch {
	case strings.HasPrefix(w, "baking until ") && !st.BakeUntil.IsZero():
		fmt.Fprintf(&b, " · baking, %s left", fmtSeconds(max(0, time.Until(st.BakeUntil))))
	case strings.HasPrefix(w, "evidence for "):
		var waiting []string
		for _, g := range st.Gates {
			if g.Status == rollout.GateWaiting {
				waiting = append(waiting, g.Gate)
			}
		}
		verb := "waits"
		if len(waiting) != 1 {
			verb = "wait"
		}
		fmt.Fprintf(&b, " · %s %s for the next metrics report", strings.Join(waiting, " and "), verb)
		if eta := d.nextReport(installed); eta > 0 {
			fmt.Fprintf(&b, " (in ~%s)", fmtSeconds(eta))
		}
	case w != "":
		b.WriteString(" · " + w)
	}
	for id := range installed {
		if dev := d.device(id); dev != nil && dev.stream != nil && st.Bundle.Version == d.bad.Version {
			s := dev.stream.stats()
			fmt.Fprintf(&b, " · %s answers in p95 %s", id, fmtMs(s.P95[d.bad.Version]))
		}
	}
	return b.String()
}

// canarySlow says, once, how the canary's latency changed; it reports
// whether it did.
func (d *demo) canarySlow(st *api.RolloutStatus, installed map[string]time.Time) bool {
	if st.Bundle.Version != d.bad.Version {
		return false
	}
	for id, at := range installed {
		dev := d.device(id)
		if dev == nil || dev.stream == nil || time.Since(at) < 3*time.Second {
			continue
		}
		s := dev.stream.stats()
		if s.ByVersion[d.bad.Version] < 10 {
			continue
		}
		d.n.Say("  %s now answers in p95 %s on %s, against %s on %s (measured by its local application).",
			id, fmtMs(s.P95[d.bad.Version]), d.bad.Version, fmtMs(s.P95[d.good.Version]), d.good.Version)
		if eta := d.nextReport(map[string]time.Time{id: at}); eta > 0 {
			d.n.Say("  fleetd learns it from the agent's next metrics report, in about %s.", fmtSeconds(eta))
		}
		return true
	}
	return false
}

// nextReport is how long until the next metrics window of the devices
// in ids closes (agents append one a minute after they start, then every
// minute), the latest of them.
func (d *demo) nextReport(ids map[string]time.Time) time.Duration {
	var out time.Duration
	for id := range ids {
		dev := d.device(id)
		if dev == nil {
			continue
		}
		since := time.Since(dev.started)
		next := time.Minute - since%time.Minute
		out = max(out, next)
	}
	return out
}

func (d *demo) device(id string) *device {
	for _, dev := range d.devices {
		if dev.ID == id {
			return dev
		}
	}
	return nil
}

// Step 11.
func (d *demo) stepBaseline(ctx context.Context) (string, error) {
	d.n.Say("The latency gate compares each device's p95 on the new version with its own p95 on the version it ran")
	d.n.Say("before, from the metrics records the agents send once a minute. Rolling out before those exist would leave")
	d.n.Say("the gate without a baseline, so the demo waits for every device's first report on %s.", d.good.ID())
	start := time.Now()
	var eta time.Time
	for _, dev := range d.devices {
		eta = maxTime(eta, time.Now().Add(d.nextReport(map[string]time.Time{dev.ID: {}})))
	}
	reported := map[string]protocol.MetricsRecord{}
	err := waitFor(ctx, 150*time.Second, func() (bool, error) {
		for _, dev := range d.devices {
			if _, ok := reported[dev.ID]; ok {
				continue
			}
			var recs api.Records
			if err := d.fleetJSON(ctx, &recs, "devices", "records", dev.ID, "--kind", "metrics"); err != nil {
				return false, err
			}
			for _, r := range recs.Records {
				var m protocol.MetricsRecord
				if json.Unmarshal(r.Payload, &m) == nil && m.Model == d.good.ID() && m.Requests > 0 {
					reported[dev.ID] = m
					d.baselineP95[dev.ID] = m.P95Ms
					d.n.Say("  %s: %d requests, %d errors, p95 %.2f ms in its first minute", dev.ID, m.Requests, m.Errors, m.P95Ms)
					break
				}
			}
		}
		total := 0
		for _, dev := range d.devices {
			total += dev.stream.stats().OK
		}
		frac := float64(time.Since(start)) / float64(max(time.Second, eta.Sub(start)))
		d.n.Progress(frac, "%d of %d devices reported · %d answers streamed so far", len(reported), len(d.devices), total)
		return len(reported) == len(d.devices), nil
	})
	if err != nil {
		return "", fmt.Errorf("waiting for the devices' metrics: %w", err)
	}
	if _, err := d.fleetctl(ctx, "devices", "records", d.devices[0].ID, "--kind", "metrics", "--limit", "1"); err != nil {
		return "", err
	}
	var p95s []float64
	for _, m := range reported {
		p95s = append(p95s, m.P95Ms)
	}
	slices.Sort(p95s)
	return fmt.Sprintf("every device reported: p95 %.2f–%.2f ms on %s", p95s[0], p95s[len(p95s)-1], d.good.Version), nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Step 12.
func (d *demo) stepSecondRollout(ctx context.Context) (string, error) {
	r, took, err := d.rollOut(ctx, d.bad, true, 4*time.Minute)
	if err != nil {
		return "", err
	}
	id := r.ID
	d.second, d.secondTook = &r.Rollout, took
	if r.Breach != nil {
		d.rollbackTook = r.Breach.At.Sub(r.Created)
	}
	if _, err := d.fleetctl(ctx, "rollout", "status", id); err != nil {
		return "", err
	}
	switch {
	case r.State != rollout.StateRolledBack:
		return "", fmt.Errorf("rollout %s ended %s, not rolled_back: %s", id, r.State, r.Reason)
	case r.Breach == nil:
		return "", fmt.Errorf("rollout %s was rolled back without a breach: %s", id, r.Reason)
	case r.Breach.Gate != rollout.GateLatencyP95 || r.Breach.Evidence:
		return "", fmt.Errorf("rollout %s was rolled back, but not for latency: %s", id, r.Reason)
	}
	if err := d.showRollbackEvent(ctx, id); err != nil { // events.go
		return "", err
	}
	if err := d.checkConsole(ctx, map[string]string{d.first.ID: string(d.first.State), id: string(r.State)}); err != nil { // console.go
		return "", err
	}
	d.n.Say("The web console shows both rollouts: %srollouts", d.consoleURL())
	b := r.Breach
	return fmt.Sprintf("fleetd rolled %s back by itself: latencyP95 on %q was %.1f× the previous version's (threshold %s×)",
		d.bad.ID(), b.StepName, b.Value, fmtValue(b.Threshold)), nil
}

// Step 13.
func (d *demo) stepFleetCheck(ctx context.Context) (string, error) {
	if err := d.waitActive(ctx, d.good, 60*time.Second); err != nil {
		return "", err
	}
	if _, err := d.fleetctl(ctx, "devices", "list"); err != nil {
		return "", err
	}
	if d.second != nil {
		for _, dv := range d.secondDevices(ctx) {
			if dv.Mode == rollout.ModeInstall {
				if dev := d.device(dv.ID); dev != nil && dev.stream != nil {
					s := dev.stream.stats()
					d.n.Say("%s went back to its last-known-good slot (no download); its answers: %d from %s, %d from %s.",
						dv.ID, s.ByVersion[d.good.Version], d.good.Version, s.ByVersion[d.bad.Version], d.bad.Version)
				}
			}
		}
	}
	return fmt.Sprintf("all %d devices run %s again and keep answering", len(d.devices), d.good.ID()), nil
}

// secondDevices lists the bad rollout's devices (nil on an error).
func (d *demo) secondDevices(ctx context.Context) []rollout.DeviceStatus {
	var st api.RolloutStatus
	if err := d.fleetJSON(ctx, &st, "rollout", "status", d.second.ID, "--devices"); err != nil {
		return nil
	}
	return st.DeviceList
}
