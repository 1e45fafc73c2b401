package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
)

func newRolloutCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Staged rollouts with health gates and automatic rollback; A/B experiments",
		Long: `Move a bundle version through waves of devices, gated on their health, with
automatic fleet-wide rollback; or compare two versions on two cohorts.
See docs/rollouts.md for the spec.`,
	}
	cmd.AddCommand(newRolloutCreateCmd(a), newRolloutListCmd(a), newRolloutStatusCmd(a), newRolloutWaitCmd(a), newRolloutHistoryCmd(a))
	for _, act := range []struct{ name, short string }{
		{"pause", "Pause a rollout: nothing more is assigned or evaluated"},
		{"resume", "Resume a paused rollout (its bake and deadline move on by the pause)"},
		{"abort", "End a rollout, leaving every device as it is"},
		{"rollback", "Roll every device of a rollout back to the version it ran before"},
	} {
		cmd.AddCommand(newRolloutActionCmd(a, act.name, act.short))
	}
	cmd.AddCommand(newRolloutPromoteCmd(a))
	return cmd
}

// readSpec reads a spec file ("-": stdin) and checks it locally, so that
// mistakes are listed before anything is sent.
func readSpec(a *app, file string) ([]byte, error) {
	if file == "" {
		return nil, usagef("-f/--file is required (the rollout spec, YAML or JSON; - for stdin)")
	}
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, rollout.MaxSpecBytes+1))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, err
	}
	name := file
	if file == "-" {
		name = "<stdin>"
	}
	if _, err := rollout.CheckSpecFile(name, b); err != nil {
		return nil, fmt.Errorf("invalid spec:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return b, nil
}

func newRolloutCreateCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var file string
	var dryRun bool
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "create -f SPEC.yaml [--dry-run]",
		Short: "Check a rollout (or experiment) spec and start it",
		Long: `Check the spec (strictly: every problem is listed with its field and line),
then send it to fleetd, which checks it against the fleet and the registry
(the selector matches devices, the bundle exists, the gates can be
evaluated, no active rollout holds the devices) and starts it: the first
wave is assigned at once. --dry-run shows the plan (wave sizes, cohort
order) without starting anything.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := readSpec(a, file)
			if err != nil {
				return err
			}
			c, err := rf.client()
			if err != nil {
				return err
			}
			r, plan, err := c.CreateRollout(cmd.Context(), spec, dryRun)
			if err != nil {
				return err
			}
			if dryRun {
				if out.machine() {
					return out.write(a.stdout, plan)
				}
				fmt.Fprintf(a.stdout, "plan (nothing started): %d devices\n", len(plan.Devices))
				return printSteps(a.stdout, plan.Steps, -1)
			}
			if out.machine() {
				return out.write(a.stdout, r)
			}
			fmt.Fprintf(a.stdout, "created %s: %s\n", r.ID, what(r))
			return printStatus(a.stdout, &api.RolloutStatus{Rollout: *r})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the spec (YAML or JSON; - for stdin)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check and plan only")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

func newRolloutListCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List rollouts and experiments, newest first",
		Args:  exactArgs(),
	}
	return newFetchCmd(a, cmd, func(ctx context.Context, c *client.Client, _ []string) (api.RolloutList, error) {
		rs, err := c.Rollouts(ctx)
		return api.RolloutList{Rollouts: rs}, err
	}, printRollouts)
}

// printRollouts is the table of rollout list.
func printRollouts(w io.Writer, l api.RolloutList) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tWHAT\tSTEP\tINSTALLED\tFAILED\tCREATED\tREASON")
	for _, r := range l.Rollouts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\n", r.ID, r.State, what(r), stepText(r),
			r.Progress.Installed, r.Devices, r.Progress.Failed, formatTime(r.Created), orDash(r.Reason))
	}
	return tw.Flush()
}

func newRolloutStatusCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var watch, devices bool
	var interval time.Duration
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "status ID [--watch] [--devices]",
		Short: "Show a rollout: state, step, gates, progress, breach, comparison",
		Long: `Show a rollout's state, its current step (bake end, evidence deadline), what
it waits for, its devices' progress, the latest evaluation of its gates
(value, threshold, reports), the breach that stopped it, and for an
experiment the comparison of its arms. --devices lists every device.

--watch shows it again on every change (redrawn in place on a terminal,
appended otherwise) until it is no longer running or paused, riding out
lost connections to fleetd; it then exits 0 if the rollout succeeded (an
experiment: completed or promoted) and 5 if it was rolled back or
aborted.`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !watch {
				return fetchAndPrint(a, &rf, out, func(c *client.Client) (*api.RolloutStatus, error) {
					return c.Rollout(cmd.Context(), args[0], devices)
				}, printStatus)
			}
			c, err := rf.client()
			if err != nil {
				return err
			}
			v := newView(a.stdout, out)
			st, err := watchRollout(cmd.Context(), a, c, args[0], devices, interval, func(st *api.RolloutStatus) bool {
				v.show(st)
				return !activeState(st.State)
			})
			if err != nil {
				return err
			}
			return endedWell(st)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "show again on every change until it stops running")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often --watch asks fleetd")
	cmd.Flags().BoolVar(&devices, "devices", false, "list every target device")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

// waitConditions are the outcomes rollout wait --for waits for.
var waitConditions = []string{"completed", "paused"}

func newRolloutWaitCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var cond string
	var timeout, interval time.Duration
	cmd := &cobra.Command{
		Use:   "wait ID [--for=completed|paused] [--timeout D]",
		Short: "Wait until a rollout completes (or pauses); exit non-zero if it ends otherwise",
		Long: `Wait, as kubectl wait does, until the rollout reaches the condition:

  completed  it succeeded (an experiment: it completed, or an arm was
             promoted)
  paused     it is paused (by an operator, or by a breached gate with
             rollback.auto false)

Exits 0 when the condition holds, 5 when the rollout ended in a way that
means it never will (rolled back, aborted; for paused also succeeded),
and 6 when --timeout passes first. Lost connections to fleetd are ridden
out until the timeout.`,
		Args: exactArgs("ID"),
		PreRunE: func(*cobra.Command, []string) error {
			if !slices.Contains(waitConditions, cond) {
				return usagef("--for=%q: want one of %s", cond, strings.Join(waitConditions, ", "))
			}
			if timeout < 0 {
				return usagef("--timeout %v: want a positive duration (0: no limit)", timeout)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := rf.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			last := rollout.State("")
			st, err := watchRollout(ctx, a, c, args[0], false, interval, func(st *api.RolloutStatus) bool {
				if st.State != last {
					a.log.Info("rollout", "id", st.ID, "state", st.State, "step", stepText(&st.Rollout))
					last = st.State
				}
				return (cond == "paused" && st.State == rollout.StatePaused) || !activeState(st.State)
			})
			if errors.Is(err, context.DeadlineExceeded) && cmd.Context().Err() == nil {
				return withCode(ExitTimeout, fmt.Errorf("rollout %s: still %s after %v, not %s", args[0], last, timeout, cond))
			}
			if err != nil {
				return err
			}
			if cond == "paused" {
				if st.State == rollout.StatePaused {
					fmt.Fprintf(a.stdout, "%s: paused\n", st.ID)
					return nil
				}
				return withCode(ExitUnwanted, fmt.Errorf("rollout %s ended %s%s: it will not pause", st.ID, st.State, reasonText(&st.Rollout)))
			}
			if err := endedWell(st); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s: %s\n", st.ID, st.State)
			return nil
		},
	}
	cmd.Flags().StringVar(&cond, "for", "completed", "the condition: completed or paused")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long, exit 6 (0: wait as long as it takes)")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often to ask fleetd")
	rf.register(cmd)
	return cmd
}

// activeState reports whether a rollout in state s may still change by
// itself (the watch goes on).
func activeState(s rollout.State) bool {
	return s.Active() && s != rollout.StateCompleted
}

// endedWell is nil for a rollout that ended as hoped (succeeded; an
// experiment completed or promoted) and an ExitUnwanted error otherwise.
func endedWell(st *api.RolloutStatus) error {
	switch st.State {
	case rollout.StateSucceeded, rollout.StateCompleted, rollout.StatePromoted:
		return nil
	}
	return withCode(ExitUnwanted, fmt.Errorf("rollout %s ended %s%s", st.ID, st.State, reasonText(&st.Rollout)))
}

func reasonText(r *rollout.Rollout) string {
	if r.Reason == "" {
		return ""
	}
	return ": " + r.Reason
}

// watchRollout asks fleetd for the rollout every interval and calls seen
// with each answer until seen returns true, and returns that last status.
// A lost connection (or a fleetd error of its own, 5xx) is said on stderr
// and retried with backoff up to a minute; an answer that fleetd will not
// change (unknown rollout, refused token) ends the watch.
func watchRollout(ctx context.Context, a *app, c *client.Client, id string, devices bool, interval time.Duration, seen func(*api.RolloutStatus) bool) (*api.RolloutStatus, error) {
	backoff := interval
	failing := false
	for {
		st, err := c.Rollout(ctx, id, devices)
		switch {
		case err == nil:
			if failing {
				fmt.Fprintf(a.stderr, "fleetctl: reconnected to fleetd\n")
				failing, backoff = false, interval
			}
			if seen(st) {
				return st, nil
			}
			err = sleep(ctx, interval)
		case ctx.Err() == nil && transient(err):
			failing = true
			fmt.Fprintf(a.stderr, "fleetctl: %v; reconnecting in %v\n", err, backoff.Round(time.Millisecond))
			err = sleep(ctx, jitter(backoff))
			backoff = min(2*backoff, time.Minute)
		}
		if err != nil {
			return nil, err
		}
	}
}

// transient reports whether a request that failed with err may succeed
// when tried again: fleetd unreachable or failing on its side.
func transient(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status >= 500
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// jitter is d ± 20%, so that many watchers do not retry in step.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()-0.5)*0.4*float64(d))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func newRolloutHistoryCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "history ID",
		Short: "Show what happened to a rollout, oldest first",
		Args:  exactArgs("ID"),
	}
	return newFetchCmd(a, cmd, func(ctx context.Context, c *client.Client, args []string) (*api.RolloutHistory, error) {
		return c.RolloutHistory(ctx, args[0])
	}, printHistory)
}

// printHistory is the table of rollout history, a step numbered from 1
// ("-": none).
func printHistory(w io.Writer, h *api.RolloutHistory) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tEVENT\tSTEP\tMESSAGE")
	for _, ev := range h.Events {
		step := "-"
		if ev.Step >= 0 {
			step = fmt.Sprint(ev.Step + 1)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", formatTime(ev.Time), ev.Type, step, ev.Message)
	}
	return tw.Flush()
}

func newRolloutActionCmd(a *app, action, short string) *cobra.Command {
	var rf remoteFlags
	var note string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   action + " ID [--note TEXT]",
		Short: short,
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fetchAndPrint(a, &rf, out, func(c *client.Client) (*rollout.Rollout, error) {
				return c.RolloutAction(cmd.Context(), args[0], action, api.RolloutAction{Note: note})
			}, func(w io.Writer, r *rollout.Rollout) error {
				fmt.Fprintf(w, "%s: %s\n", r.ID, r.State)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&note, "note", "", "why (kept in the history)")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

func newRolloutPromoteCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var note, arm, file string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "promote ID [--note TEXT] | promote ID --arm NAME -f ROLLOUT.yaml",
		Short: "Skip the rest of a wave's bake and its gates; or promote an experiment's arm into a rollout",
		Long: `On a rollout: end the current wave early (its remaining bake and its gates
are skipped once its devices are assigned) and start the next.
On an experiment, with --arm and -f: start a rollout of that arm's version
with the waves and gates of the file (target and bundle default to the
experiment's target and the arm's version); it takes the experiment's
devices over, and its rollback returns them to what they ran before the
experiment.`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.RolloutAction{Note: note, Arm: arm}
			if file != "" {
				if arm == "" {
					return usagef("-f is for promoting an experiment's arm: give --arm too")
				}
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				req.Spec = string(b)
			}
			return fetchAndPrint(a, &rf, out, func(c *client.Client) (*rollout.Rollout, error) {
				return c.RolloutAction(cmd.Context(), args[0], "promote", req)
			}, func(w io.Writer, r *rollout.Rollout) error {
				if arm != "" {
					fmt.Fprintf(w, "promoted arm %s of %s into %s: %s\n", arm, args[0], r.ID, what(r))
					return printStatus(w, &api.RolloutStatus{Rollout: *r})
				}
				fmt.Fprintf(w, "%s: %s, %s\n", r.ID, r.State, stepText(r))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&note, "note", "", "why (kept in the history)")
	cmd.Flags().StringVar(&arm, "arm", "", "experiment arm to promote")
	cmd.Flags().StringVarP(&file, "file", "f", "", "rollout spec for the promoted arm")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

func what(r *rollout.Rollout) string {
	if r.Spec != nil && r.Spec.Kind == rollout.KindExperiment && len(r.Arms) == 2 {
		return fmt.Sprintf("A/B %s vs %s", r.Arms[0].ID(), r.Arms[1].ID())
	}
	return r.Bundle.ID()
}

func stepText(r *rollout.Rollout) string {
	s := r.CurrentStep()
	if s == nil {
		return fmt.Sprintf("%d/%d done", len(r.Steps), len(r.Steps))
	}
	return fmt.Sprintf("%d/%d %s", r.Step+1, len(r.Steps), s.Name)
}

func printSteps(w io.Writer, steps []rollout.Step, current int) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "\tSTEP\tKIND\tDEVICES\tBAKE")
	for i, s := range steps {
		mark := ""
		if i == current {
			mark = "▶"
		}
		fmt.Fprintf(tw, "%s\t%d %s\t%s\t%d\t%s\n", mark, i+1, s.Name, s.Kind, s.Size, s.Bake)
	}
	return tw.Flush()
}

func printStatus(w io.Writer, st *api.RolloutStatus) error {
	r := &st.Rollout
	tw := newTable(w)
	fmt.Fprintf(tw, "id\t%s\n", r.ID)
	if r.Spec != nil && r.Spec.Name != "" {
		fmt.Fprintf(tw, "name\t%s\n", r.Spec.Name)
	}
	fmt.Fprintf(tw, "what\t%s\n", what(r))
	if r.Lineage != nil {
		fmt.Fprintf(tw, "model lineage\t%s\n", lineageText(r.Lineage))
	}
	fmt.Fprintf(tw, "state\t%s\n", r.State)
	if r.Reason != "" {
		fmt.Fprintf(tw, "reason\t%s\n", r.Reason)
	}
	fmt.Fprintf(tw, "step\t%s\n", stepText(r))
	if !r.BakeUntil.IsZero() {
		fmt.Fprintf(tw, "bake until\t%s\n", formatTime(r.BakeUntil))
		fmt.Fprintf(tw, "deadline\t%s\n", formatTime(r.Deadline))
	}
	p := r.Progress
	fmt.Fprintf(tw, "devices\t%d: %d assigned, %d installed, %d installing, %d failed", r.Devices, p.Assigned, p.Installed, p.Installing, p.Failed)
	if p.Shadowing > 0 {
		fmt.Fprintf(tw, ", %d shadowing", p.Shadowing)
	}
	if p.RollbackSent+p.RollbackSkipped > 0 {
		fmt.Fprintf(tw, ", %d rolled back (%d had nothing to return to)", p.RollbackSent, p.RollbackSkipped)
	}
	fmt.Fprintln(tw)
	if p.Waiting != "" {
		fmt.Fprintf(tw, "waiting\t%s\n", p.Waiting)
	}
	if b := r.Breach; b != nil {
		if b.Evidence {
			fmt.Fprintf(tw, "breach\t%s: not enough evidence on step %d %q (%d of %d reports)\n", b.Gate, b.Step+1, b.StepName, b.Reports, b.MinReports)
		} else {
			fmt.Fprintf(tw, "breach\t%s on step %d %q: value %.4g, threshold %.4g (%d reports)\n", b.Gate, b.Step+1, b.StepName, b.Value, b.Threshold, b.Reports)
		}
	}
	if r.LastError != "" {
		fmt.Fprintf(tw, "last error\t%s\n", r.LastError)
	}
	if r.From != "" {
		fmt.Fprintf(tw, "from\texperiment %s\n", r.From)
	}
	if r.PromotedTo != "" {
		fmt.Fprintf(tw, "promoted to\t%s\n", r.PromotedTo)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Gates) > 0 {
		fmt.Fprintln(w)
		if err := printGates(w, r.Gates); err != nil {
			return err
		}
	}
	if cmp := r.Comparison; cmp != nil {
		fmt.Fprintln(w)
		if err := printComparison(w, cmp); err != nil {
			return err
		}
	}
	if len(r.Steps) > 0 {
		fmt.Fprintln(w)
		if err := printSteps(w, r.Steps, r.Step); err != nil {
			return err
		}
	}
	if len(st.DeviceList) > 0 {
		fmt.Fprintln(w)
		return printRolloutDevices(w, st.DeviceList)
	}
	return nil
}

// printGates is the table of the latest evaluation of a rollout's gates.
func printGates(w io.Writer, gates []rollout.GateResult) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "GATE\tSTATUS\tVALUE\tTHRESHOLD\tREPORTS\tDETAIL")
	for _, g := range gates {
		fmt.Fprintf(tw, "%s\t%s\t%.4g\t%.4g\t%d/%d\t%s\n", g.Gate, g.Status, g.Value, g.Threshold, g.Reports, g.MinReports, g.Detail)
	}
	return tw.Flush()
}

// printComparison is an experiment's arms side by side, then the tests'
// statements and the verdict.
func printComparison(w io.Writer, cmp *rollout.Comparison) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ARM\tBUNDLE\tDEVICES\tREPORTING\tREQUESTS\tERROR RATE\tP95 MS (MEAN)\tOUTPUT MEAN")
	for _, arm := range cmp.Arms {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d/%d\t%d\t%.3g%%\t%.3g\t%.4g\n", arm.Name, arm.Bundle.ID(), arm.Devices, arm.Reporting, arm.MinReports,
			arm.Requests, 100*arm.ErrorRate, arm.LatencyP95Ms.Mean, arm.Output.Mean)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range []rollout.Test{cmp.ErrorRate, cmp.Latency, cmp.Output} {
		fmt.Fprintf(w, "  %s: %s\n", t.Method, t.Statement)
	}
	fmt.Fprintf(w, "verdict: %s\n", cmp.Verdict)
	return nil
}

// printRolloutDevices is the table of status --devices.
func printRolloutDevices(w io.Writer, devs []rollout.DeviceStatus) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "DEVICE\tONLINE\tMODE\tPHASE\tPREVIOUS\tACTIVE\tROLLBACK\tERROR")
	for _, d := range devs {
		prev := "-"
		if d.Previous != nil {
			prev = d.Previous.ID()
		}
		act := "-"
		if d.Active != nil {
			act = d.Active.ID()
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Online, orDash(string(d.Mode)), orDash(string(d.Phase)), prev, act,
			orDash(string(d.Rollback)), orDash(d.Error+d.Note))
	}
	return tw.Flush()
}

// newExperimentCmd is the A/B face of the rollout commands: an experiment
// is a rollout of kind "experiment", so these are the same commands under
// the name an operator looks for.
func newExperimentCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "experiment",
		Short: "A/B experiments: two versions on two cohorts, compared (same as the rollout commands)",
		Long: `An experiment runs two bundle versions on two deterministic cohorts for a set
time and compares their error rate, latency and outputs with a confidence
statement; "promote --arm NAME -f rollout.yaml" starts a rollout of the
winner. Experiments are rollouts of kind "experiment" (docs/rollouts.md,
section 8): these commands are the rollout commands under another name.`,
	}
	cmd.AddCommand(newRolloutCreateCmd(a), newRolloutListCmd(a), newRolloutStatusCmd(a), newRolloutHistoryCmd(a),
		newRolloutActionCmd(a, "abort", "End an experiment, leaving every device as it is"),
		newRolloutPromoteCmd(a))
	return cmd
}
