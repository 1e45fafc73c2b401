package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/rollout"
)

// finish prints the summary: what happened, where the data lives, what
// was stopped; or, when err is not nil, where it failed and where to
// look.
func (d *demo) finish(err error) {
	n := d.n
	took := fmtSeconds(time.Since(d.start))
	if len(d.stillRunning) > 0 {
		n.Line("  Could not stop: %s", strings.Join(d.stillRunning, ", "))
	} else if d.stoppedProcs > 0 {
		n.Line("  Stopped %d process(es); nothing the demo started is still running.", d.stoppedProcs)
	}
	n.Line("")
	switch {
	case err == nil:
		n.Header("Summary")
	case errors.Is(err, errInterrupted), errors.Is(err, errTerminated):
		n.Header("The demo was %s during: %s", err, d.failedStep)
	default:
		n.Header("The demo FAILED during: %s", d.failedStep)
		n.Line("  %s", firstLine(err.Error()))
	}
	if err == nil {
		n.Line("  What happened")
		for _, l := range d.story() {
			n.Line("    • %s", l)
		}
	}
	n.Line("  Where the data lives: %s", d.work)
	for _, row := range d.dataMap() {
		n.Line("    %-9s %s", row[0], row[1])
	}
	if err == nil {
		n.Line("  To look around: cd %s; fleetd and the agents start again on their data with the commands above;", d.work)
		n.Line("  then fleetctl devices list, rollout list, rollout history ID, drift %s, ...", d.good.ID())
		n.Header("Done in %s: every step did what it said.", took)
	} else if errors.Is(err, errInterrupted) || errors.Is(err, errTerminated) {
		n.Line("  Exit after %s; make demo starts a fresh run in a new workspace.", took)
	} else {
		n.Line("  Exit after %s; logs/demo.log has every command the demo ran and its output, logs/ the processes' logs.", took)
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// story is what happened, in a few lines.
func (d *demo) story() []string {
	var out []string
	if r := d.first; r != nil {
		out = append(out, fmt.Sprintf("%s was built (model and smoke vectors checked), signed, verified and pushed, then rolled out to %d devices in waves of %s in %s (gate: installSuccess).",
			d.good.ID(), r.Devices, stepSizes(r.Steps), fmtSeconds(d.firstTook)))
	}
	var total, failed int
	byVersion := map[string]int{}
	for _, dev := range d.devices {
		if dev.stream == nil {
			continue
		}
		s := dev.stream.stats()
		total += s.OK
		failed += s.Failed
		for v, c := range s.ByVersion {
			byVersion[v] += c
		}
	}
	var versions []string
	for _, v := range sortedKeys(byVersion) {
		versions = append(versions, fmt.Sprintf("%d by %s", byVersion[v], v))
	}
	out = append(out, fmt.Sprintf("%d agents answered %d frames of synthetic audio over their unix sockets (%s), %d request(s) failed.",
		len(d.devices), total, strings.Join(versions, ", "), failed))
	if r := d.second; r != nil && r.Breach != nil {
		b := r.Breach
		reached := "the canary"
		if b.Step < len(r.Steps) && r.Steps[b.Step].Size != 1 {
			reached = fmt.Sprintf("%d devices", r.Steps[b.Step].Size)
		}
		out = append(out, fmt.Sprintf("%s (a pre-processor burning CPU on every call) reached %s only (step %q): gate %s breached with value %.1f against threshold %s (p95 new / p95 previous, %d/%d reports); fleetd rolled back on its own %s after the rollout started.",
			d.bad.ID(), reached, b.StepName, b.Gate, b.Value, fmtValue(b.Threshold), b.Reports, b.MinReports, fmtSeconds(d.rollbackTook)))
		out = append(out, fmt.Sprintf("Every device runs %s again (state %s).", d.good.ID(), r.State))
	}
	if !d.drift.Available {
		out = append(out, "Drift: not available in this build (fleetctl has no drift command yet).")
	} else {
		for _, v := range d.drift.Views {
			name := v.Selector
			if name == "" {
				name = "every device"
			}
			out = append(out, fmt.Sprintf("Drift of %s, %s: %s.", d.good.ID(), name, v.verdict()))
		}
	}
	return out
}

func stepSizes(steps []rollout.Step) string {
	var s []string
	for _, st := range steps {
		s = append(s, fmt.Sprint(st.Size))
	}
	return strings.Join(s, ", ")
}

// dataMap lists what is where in the workspace, for what exists.
func (d *demo) dataMap() [][2]string {
	exists := func(p string) bool {
		_, err := os.Stat(filepath.Join(d.work, p))
		return err == nil
	}
	var rows [][2]string
	if exists("fleetd-data") {
		rows = append(rows, [2]string{"fleetd", "fleetd-data/: inventory.db, records.db, rollouts.db, registry/, broker/, operator.token, enrol.token"})
	}
	if len(d.devices) > 0 {
		rows = append(rows, [2]string{"agents", "agents/<id>/: config.yaml, mqtt.password, data/ (state.json, bundles/, outbox.db)"})
	}
	if exists("keys") {
		rows = append(rows, [2]string{"keys", "keys/signing.key (private), keys/signing.pub"})
	}
	if exists("bundles") {
		var files []string
		for _, b := range []bundleInfo{d.good, d.bad} {
			if b.File != "" && exists(b.File) {
				files = append(files, b.File+"(.sig)")
			}
		}
		if len(files) > 0 {
			rows = append(rows, [2]string{"bundles", strings.Join(files, ", ") + "; specs/, rollouts/"})
		}
	}
	rows = append(rows, [2]string{"logs", "logs/: fleetd.log, <id>.log per agent, demo.log (every command run, with output), transcript.txt"})
	if d.sockDir != "" {
		rows = append(rows, [2]string{"sockets", d.sockDir + " (removed)"})
	}
	return rows
}
