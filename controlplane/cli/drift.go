package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/shared/drift"
)

func newDriftCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var q client.DriftQuery
	var exitOnDrift bool
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "drift NAME@VERSION [--selector SEL | --devices ID,... | --rollout ID] [--since 1h|TIME] [--until TIME]",
		Short: "Show a bundle's data drift, pooled over devices and time",
		Long: `Show the drift of a bundle version: fleetd merges the drift windows the
devices running it reported (every device, or those of --selector, --devices
or --rollout) over the time range, and compares the result with the bundle's
reference profile. The table has one line per feature (test, statistic with
its error bound, threshold, verdict, values in the merged windows) and a
summary line. -o json prints the whole report.

--since and --until take an RFC 3339 time or a duration meaning that long
ago (1h, 30m); --since defaults to fleetd's record retention. With
--rollout, NAME@VERSION may be omitted: it is the version the rollout
rolls out.

With --exit-code (as git diff --exit-code) fleetctl exits 5 when it
reports drift, and 0 when it reports none or has not enough data.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("%s: unexpected argument %q (usage: %s)", cmd.CommandPath(), args[1], cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				q.Bundle = args[0]
			}
			if q.Bundle == "" && q.Rollout == "" {
				return usagef("%s: missing NAME@VERSION (usage: %s)", cmd.CommandPath(), cmd.UseLine())
			}
			if q.Bundle != "" {
				if name, ver, ok := strings.Cut(q.Bundle, "@"); !ok || name == "" || ver == "" {
					return usagef("bundle %q: want NAME@VERSION", q.Bundle)
				}
			}
			for flag, v := range map[string]string{"--since": q.Since, "--until": q.Until} {
				if v == "" {
					continue
				}
				if _, err := time.Parse(time.RFC3339, v); err == nil {
					continue
				}
				if d, err := time.ParseDuration(v); err != nil || d < 0 {
					return usagef("%s %q: want an RFC 3339 time or a duration such as 1h", flag, v)
				}
			}
			set := 0
			for _, v := range []bool{q.Selector != "", len(q.Devices) > 0, q.Rollout != ""} {
				if v {
					set++
				}
			}
			if set > 1 {
				return usagef("give at most one of --selector, --devices and --rollout")
			}
			c, err := rf.client()
			if err != nil {
				return err
			}
			r, err := c.Drift(cmd.Context(), q)
			if err != nil {
				return err
			}
			if out.machine() {
				err = out.write(a.stdout, r)
			} else {
				err = printDrift(a.stdout, r)
			}
			if err == nil && exitOnDrift && r.Report.Drift {
				err = withCode(ExitUnwanted, fmt.Errorf("%s: drift found", r.Bundle))
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&q.Selector, "selector", "l", "", "devices by label selector, e.g. ring=canary")
	cmd.Flags().StringSliceVar(&q.Devices, "devices", nil, "devices by id (comma-separated)")
	cmd.Flags().StringVar(&q.Rollout, "rollout", "", "the devices of this rollout")
	cmd.Flags().StringVar(&q.Since, "since", "", "windows since this time or this long ago")
	cmd.Flags().StringVar(&q.Until, "until", "", "windows before this time or this long ago")
	cmd.Flags().BoolVar(&exitOnDrift, "exit-code", false, "exit 5 when drift is found")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

// printDrift prints the report as a table of features and a summary.
func printDrift(w io.Writer, r *api.DriftReport) error {
	rep := r.Report
	tw := newTable(w)
	fmt.Fprintln(tw, "FEATURE\tTEST\tSTATISTIC\tTHRESHOLD\tDRIFT\tVALUES\tSTATUS")
	for _, f := range rep.Features {
		stat, verdict := "-", "-"
		if f.Status != drift.StatusNotEnoughData {
			stat = fmt.Sprintf("%.4g", f.Statistic)
			if f.Bound > 0 {
				stat += fmt.Sprintf(" ± %.2g", f.Bound)
			}
			if f.PValue != nil {
				stat += fmt.Sprintf(" (p %.3g)", *f.PValue)
			}
			verdict = "no"
			if f.Drift {
				verdict = "DRIFT"
			}
		}
		threshold := fmt.Sprintf("%s %g", thresholdOp(f.Test), f.Threshold)
		status := string(f.Status)
		if f.Reason != "" {
			status += ": " + f.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", f.Name, f.Test, stat, threshold, verdict, f.Count, status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	switch {
	case rep.Status == drift.StatusNotEnoughData:
		fmt.Fprintf(&b, "%s: not enough data", r.Bundle)
	case rep.Drift:
		fmt.Fprintf(&b, "%s: DRIFT: %d of %d features drifted (share %.2f ≥ %g)", r.Bundle, rep.Drifted, rep.Tested, rep.Share, rep.DriftShare)
	default:
		fmt.Fprintf(&b, "%s: no drift: %d of %d features drifted (share %.2f < %g)", r.Bundle, rep.Drifted, rep.Tested, rep.Share, rep.DriftShare)
	}
	fmt.Fprintf(&b, "; %d of %d devices reporting, %d windows", r.Reporting, r.Devices, r.Windows)
	if r.Invalid > 0 {
		fmt.Fprintf(&b, " (%d invalid dropped)", r.Invalid)
	}
	h := rep.Health
	fmt.Fprintf(&b, ", %d predictions, %d errors", h.Predictions, h.Errors)
	if l := h.LatencyMs; l != nil {
		fmt.Fprintf(&b, ", latency p50/p95/p99 %.3g/%.3g/%.3g ms", l.P50, l.P95, l.P99)
	}
	fmt.Fprintf(&b, "; since %s", formatTime(r.Since))
	if !r.Until.IsZero() {
		fmt.Fprintf(&b, " until %s", formatTime(r.Until))
	}
	_, err := fmt.Fprintln(w, b.String())
	return err
}

// thresholdOp says how a test's statistic meets its threshold for drift.
func thresholdOp(t drift.Test) string {
	if drift.PValueTest(t) {
		return "p <"
	}
	return "≥"
}
