package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// driftOutcome is what the drift step found, for the summary.
type driftOutcome struct {
	// Available: this fleetctl has a drift command.
	Available bool
	// Views are the reports shown, by selector ("" for every device).
	Views []driftView
}

type driftView struct {
	Selector string
	Report   api.DriftReport
}

// verdict sums a report up in a few words.
func (v driftView) verdict() string {
	r := v.Report
	if r.Report == nil || r.Windows == 0 || r.Report.Status == "not_enough_data" {
		return fmt.Sprintf("no drift window yet (%d of %d devices reported one)", r.Reporting, r.Devices)
	}
	var drifted []string
	for _, f := range r.Report.Features {
		if f.Drift {
			drifted = append(drifted, f.Name)
		}
	}
	verdict := "no drift"
	if r.Report.Drift {
		verdict = "DRIFT"
	}
	s := fmt.Sprintf("%s: %d of %d features drifted (%s), %d window(s) from %d of %d devices",
		verdict, r.Report.Drifted, r.Report.Tested, orNone(drifted), r.Windows, r.Reporting, r.Devices)
	return s
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// Step 14.
func (d *demo) stepDrift(ctx context.Context) (string, error) {
	help, err := d.sup.Run(ctx, d.work, d.childEnv(), filepath.Join(d.cfg.Bin, "fleetctl"), "drift", "--help")
	if err != nil || !strings.Contains(string(help.Stdout), "drift") {
		if ctx.Err() != nil {
			return "", context.Cause(ctx)
		}
		d.n.Say("Drift reporting is not available in this build: this fleetctl has no drift command yet, so what the")
		d.n.Say("devices heard cannot be compared with the bundle's reference profile here.")
		return "skipped: drift reporting is not available in this build", nil
	}
	d.drift.Available = true

	d.n.Say("Each agent summarizes the pre-processor's features (level, zero-crossing rate, four frequency bands) and the")
	d.n.Say("model's speech probability per window, and closes a window every 5 minutes, when it switches versions and")
	d.n.Say("when it stops. Rather than wait 5 minutes, the demo restarts the agents, as an agent upgrade or a power cut")
	d.n.Say("would: the window an agent closes while stopping waits in its outbox and reaches fleetd once it reconnects.")
	d.n.Say("The audio streams end here.")
	if err := d.restartAgents(ctx); err != nil {
		return "", err
	}
	var all api.DriftReport
	err = waitFor(ctx, 60*time.Second, func() (bool, error) {
		all = api.DriftReport{}
		if err := d.fleetJSON(ctx, &all, "drift", d.good.ID()); err != nil {
			return false, err
		}
		d.n.Progress(float64(all.Reporting)/float64(len(d.devices)), "%d of %d devices' drift windows are in", all.Reporting, len(d.devices))
		return all.Reporting == len(d.devices), nil
	})
	if err != nil {
		return "", fmt.Errorf("waiting for the devices' drift windows (%d of %d in): %w", all.Reporting, len(d.devices), err)
	}

	d.n.Say("fleetd merges the windows of the devices asked for and compares them with the profile in the bundle:")
	for _, sel := range []string{"region=eu", "region=" + noisyRegion} {
		args := []string{"drift", d.good.ID(), "--selector", sel}
		if _, err := d.fleetctl(ctx, args...); err != nil {
			return "", err
		}
		var rep api.DriftReport
		if err := d.fleetJSON(ctx, &rep, args...); err != nil {
			return "", err
		}
		v := driftView{Selector: sel, Report: rep}
		d.drift.Views = append(d.drift.Views, v)
		d.n.Say("%s: %s", sel, v.verdict())
	}
	var parts []string
	for _, v := range d.drift.Views {
		verdict, _, _ := strings.Cut(v.verdict(), ":")
		parts = append(parts, v.Selector+" "+verdict)
	}
	return "drift of " + d.good.ID() + ": " + strings.Join(parts, ", "), nil
}

// restartAgents stops the audio streams and every agent (SIGTERM, as
// systemd would), then starts the agents again with the same commands
// and waits until they are back online.
func (d *demo) restartAgents(ctx context.Context) error {
	if d.streamCancel != nil {
		d.streamCancel()
		d.streamWG.Wait()
	}
	var pids []string
	for _, dev := range d.devices {
		pids = append(pids, strconv.Itoa(dev.proc.Pid()))
	}
	d.n.Cmd(append([]string{"kill", "-TERM"}, pids...))
	var wg sync.WaitGroup
	for _, dev := range d.devices {
		wg.Go(func() { d.sup.Stop(dev.proc, 25*time.Second) })
	}
	wg.Wait()
	for _, dev := range d.devices {
		if err := dev.proc.Err(); err != nil {
			return fmt.Errorf("%s did not stop cleanly: %w%s", dev.ID, err, tailFile(dev.LogPath, 8))
		}
	}
	for _, dev := range d.devices {
		cfgPath := filepath.Join(dev.Dir, "config.yaml")
		d.n.Cmd([]string{"edge-agent", "--config", d.rel(cfgPath), "&"})
		p, err := d.sup.Start("edge-agent "+dev.ID, dev.Dir, d.childEnv(), dev.LogPath, filepath.Join(d.cfg.Bin, "edge-agent"), "--config", cfgPath)
		if err != nil {
			return err
		}
		dev.proc, dev.started = p, time.Now()
	}
	return d.waitOnline(ctx)
}
