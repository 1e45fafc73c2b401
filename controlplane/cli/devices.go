package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

func newDevicesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "List and inspect the devices fleetd knows",
	}
	cmd.AddCommand(newDevicesListCmd(a), newDevicesShowCmd(a), newDevicesRecordsCmd(a), newDevicesDeleteCmd(a))
	return cmd
}

func newDevicesListCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var selector string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "list [--selector SELECTOR]",
		Short: "List devices, optionally by label selector",
		Long: `List the enrolled devices: connection state, what they run, what fleetd
wants them to run, when they were last heard from and how many records they
delivered. --selector picks devices by label, e.g. "ring=canary,hw!=pi4,gpu".`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fetchAndPrint(a, &rf, out, func(c *client.Client) (api.DeviceList, error) {
				devs, err := c.Devices(cmd.Context(), selector)
				return api.DeviceList{Devices: devs}, err
			}, func(w io.Writer, l api.DeviceList) error {
				return printDevices(w, l.Devices, out.wide())
			})
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. ring=canary,hw!=pi4")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

// printDevices is the table of devices list; wide adds the agent's
// version, the execution provider and the records buffered.
func printDevices(w io.Writer, devs []api.Device, wide bool) error {
	tw := newTable(w)
	head := "ID\tSTATE\tACTIVE\tDESIRED\tAPPLIED\tLAST SEEN\tRECORDS\tLABELS"
	if wide {
		head += "\tAGENT\tPROVIDER\tBUFFERED"
	}
	fmt.Fprintln(tw, head)
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s", d.ID, state(&d), active(&d), desired(&d), applied(&d),
			formatTime(d.LastSeen), d.Records.Delivered, labels(d.EffectiveLabels()))
		if wide {
			agent, provider, buffered := "-", "-", "-"
			if r := d.Reported; r != nil {
				agent, provider = orDash(r.AgentVersion), orDash(r.Provider)
				buffered = fmt.Sprint(r.Buffer.Records)
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s", agent, provider, buffered)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func state(d *api.Device) string {
	if d.Status.Online {
		return "online"
	}
	return "offline"
}

func active(d *api.Device) string {
	if a := d.Active(); a != nil {
		return a.ID()
	}
	return "-"
}

func desired(d *api.Device) string {
	if d.Desired == nil {
		return "-"
	}
	return fmt.Sprintf("%s (seq %d)", d.Desired.Bundle.ID(), d.Desired.Seq)
}

func applied(d *api.Device) string {
	if d.Reported == nil {
		return "-"
	}
	s := fmt.Sprintf("seq %d", d.Reported.AppliedSeq)
	if in := d.Reported.Install; in != nil {
		s += ", " + string(in.Phase)
	}
	return s
}

// installText describes the latest install: its phase and attempt, and
// for a failed one whether the agent tries again (when) or not.
func installText(in *protocol.InstallStatus, now time.Time) string {
	s := fmt.Sprintf("seq %d %s: %s", in.Seq, in.Bundle.ID(), in.Phase)
	var more []string
	if in.Attempt > 0 {
		more = append(more, fmt.Sprintf("attempt %d", in.Attempt))
	}
	if in.Reason != "" {
		more = append(more, in.Reason)
	}
	switch {
	case in.Phase == protocol.PhaseRetrying && in.NextAttemptAt != nil:
		more = append(more, fmt.Sprintf("next try %s (in %s)", formatTime(*in.NextAttemptAt), max(in.NextAttemptAt.Sub(now), 0).Round(time.Second)))
	case in.Phase == protocol.PhaseFailed:
		more = append(more, "not retried until the desired state changes")
	}
	if len(more) > 0 {
		s += " (" + strings.Join(more, ", ") + ")"
	}
	return s
}

func labels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func newDevicesShowCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show DEVICE",
		Short: "Show one device in detail",
		Args:  exactArgs("DEVICE"),
	}
	return newFetchCmd(a, cmd, func(ctx context.Context, c *client.Client, args []string) (*api.Device, error) {
		return c.Device(ctx, args[0])
	}, printDevice)
}

func printDevice(w io.Writer, d *api.Device) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "id\t%s\n", d.ID)
	st := state(d)
	if d.Status.Session > 0 {
		st += fmt.Sprintf(" (session %d since %s", d.Status.Session, formatTime(d.Status.Since))
		if d.Status.Reason != "" {
			st += ", " + d.Status.Reason
		}
		st += ")"
	}
	fmt.Fprintf(tw, "state\t%s\n", st)
	fmt.Fprintf(tw, "agent\t%s\n", orDash(d.Status.AgentVersion))
	fmt.Fprintf(tw, "labels\t%s\n", labels(d.Labels))
	fmt.Fprintf(tw, "enrolled\t%s by %s (%d times)\n", formatTime(d.Enrolment.At), d.Enrolment.Method, d.Enrolment.Count)
	fmt.Fprintf(tw, "last seen\t%s\n", formatTime(d.LastSeen))
	if r := d.Reported; r != nil {
		fmt.Fprintf(tw, "reported at\t%s\n", formatTime(d.ReportedAt))
		fmt.Fprintf(tw, "reported labels\t%s\n", labels(r.Labels))
		fmt.Fprintf(tw, "active\t%s\n", active(d))
		if d.Lineage != nil {
			fmt.Fprintf(tw, "model lineage\t%s\n", lineageText(d.Lineage))
		}
		lkg := "-"
		if r.LastKnownGood != nil {
			lkg = r.LastKnownGood.ID()
		}
		fmt.Fprintf(tw, "last known good\t%s\n", lkg)
		fmt.Fprintf(tw, "provider\t%s\n", orDash(r.Provider))
		fmt.Fprintf(tw, "applied\t%s\n", applied(d))
		if in := r.Install; in != nil {
			fmt.Fprintf(tw, "install\t%s\n", installText(in, time.Now()))
			if in.Error != "" {
				fmt.Fprintf(tw, "install error\t%s\n", in.Error)
			}
		}
		fmt.Fprintf(tw, "buffer\t%d records, %s, %d dropped\n", r.Buffer.Records, formatBytes(r.Buffer.Bytes), r.Buffer.Dropped)
	}
	if ds := d.Desired; ds != nil {
		fmt.Fprintf(tw, "desired\tseq %d: %s %s, issued %s, expires %s\n", ds.Seq, ds.Action, ds.Bundle.ID(), formatTime(ds.IssuedAt), formatTime(ds.ExpiresAt))
	} else {
		fmt.Fprintf(tw, "desired\t-\n")
	}
	fmt.Fprintf(tw, "records\t%d delivered, %d duplicates dropped, %d held\n", d.Records.Delivered, d.Records.Duplicates, d.Records.Held)
	return tw.Flush()
}

func newDevicesRecordsCmd(a *app) *cobra.Command {
	var rf remoteFlags
	q := client.RecordsQuery{NewestFirst: true}
	var since, until string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "records DEVICE [--kind KIND] [--since TIME|DURATION] [--until TIME|DURATION] [--limit N]",
		Short: "Show the records (telemetry and events) a device delivered",
		Long: `Show the records fleetd stored for a device, newest first (by the
device's time); --limit N shows the newest N (default 1000). --since and
--until bound the time (since <= time < until) and take an RFC 3339 time
(2026-03-01T12:00:00Z) or a duration back from now (15m, 2h). With -o json
or yaml the records come in the same order.`,
		Args: exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			var err error
			if q.Since, err = parseTimeFlag("--since", since, now); err != nil {
				return err
			}
			if q.Until, err = parseTimeFlag("--until", until, now); err != nil {
				return err
			}
			if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
				return usagef("--since %s is not before --until %s", formatTime(q.Since), formatTime(q.Until))
			}
			if q.Limit < 0 {
				return usagef("--limit %d: want a number from 1 to %d (0: fleetd's default)", q.Limit, telemetry.MaxQueryLimit)
			}
			return fetchAndPrint(a, &rf, out, func(c *client.Client) (*api.Records, error) {
				return c.Records(cmd.Context(), args[0], q)
			}, printRecords)
		},
	}
	cmd.Flags().StringVar(&q.Kind, "kind", "", "only records of this kind (prediction, metrics, event, ...)")
	cmd.Flags().StringVar(&since, "since", "", "only records from this time or this long ago on")
	cmd.Flags().StringVar(&until, "until", "", "only records before this time or this long ago")
	cmd.Flags().IntVar(&q.Limit, "limit", 0, "the newest N records (default 1000, at most 10000)")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

// printRecords is what devices records prints: the device's counts, then
// a table of the records with their payloads compacted and cut to 80
// characters.
func printRecords(w io.Writer, r *api.Records) error {
	fmt.Fprintf(w, "%s: %d delivered, %d duplicates dropped, %d held; showing %d, newest first\n",
		r.Device, r.Stats.Delivered, r.Stats.Duplicates, r.Stats.Held, len(r.Records))
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tKIND\tEPOCH\tID\tPAYLOAD")
	for _, rec := range r.Records {
		var buf bytes.Buffer
		p := string(rec.Payload)
		if json.Compact(&buf, rec.Payload) == nil {
			p = buf.String()
		}
		if len(p) > 80 {
			p = p[:77] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", formatTime(rec.Time), rec.Kind, orDash(rec.Epoch), rec.ID, p)
	}
	return tw.Flush()
}

// parseTimeFlag reads a --since or --until value: an RFC 3339 time, or a
// duration (not negative) back from now; "" is the zero time.
func parseTimeFlag(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("%s %q: want an RFC 3339 time (2026-03-01T12:00:00Z) or a duration back from now such as 15m", flag, v)
}

func newDevicesDeleteCmd(a *app) *cobra.Command {
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "delete DEVICE",
		Short: "Delete a device, its credentials and its records",
		Args:  exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := rf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteDevice(cmd.Context(), args[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "deleted %s\n", args[0])
			return err
		},
	}
	rf.register(cmd)
	return cmd
}
