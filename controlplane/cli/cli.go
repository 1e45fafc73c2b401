// Package cli implements fleetctl's commands as a library, so that they
// run in-process in tests and the binary (controlplane/cmd/fleetctl) stays
// a thin main. Each command group lives in its own file (keys.go,
// bundle.go, ...) and registers itself on the root command in newRoot.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/version"
)

// Run runs fleetctl with args (without the program name), writing results
// to stdout and diagnostics to stderr, and returns the process exit code
// (ExitOK, ExitError, ExitUsage, ...; see exit.go). An error is printed as
// "fleetctl: <message>".
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, stdout, stderr, nil)
}

// checkFunc checks a staged bundle before it is written; see
// bundle.BuildOptions.Check.
type checkFunc func(ctx context.Context, dir string, m *bundle.Manifest, log *slog.Logger) error

// modelCheck loads the model through ONNX Runtime and runs every smoke
// vector, exactly as a device does before activating the bundle.
func modelCheck(ctx context.Context, dir string, m *bundle.Manifest, log *slog.Logger) error {
	return model.Check(ctx, dir, m, model.Options{})
}

// app is the state one invocation shares between its commands.
type app struct {
	stdout, stderr io.Writer
	verbose        bool
	log            *slog.Logger
	check          checkFunc
}

// run is Run with the bundle check injectable (nil means model.Check).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, check checkFunc) int {
	if check == nil {
		check = modelCheck
	}
	a := &app{stdout: stdout, stderr: stderr, check: check, log: slog.New(slog.DiscardHandler)}
	root := newRoot(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "fleetctl: %v\n", err)
	}
	return exitCode(err)
}

func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "fleetctl",
		Short: "Ship ML models to fleets of edge devices",
		Long: `fleetctl builds, signs and verifies model bundles, and drives the
edgefleet control plane.

` + exitCodesHelp,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{},
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			level := slog.LevelWarn
			if a.verbose {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return withCode(ExitUsage, fmt.Errorf("%w (usage: %s)", err, cmd.UseLine()))
	})
	root.PersistentFlags().BoolVarP(&a.verbose, "verbose", "v", false, "log progress to stderr")
	root.PersistentFlags().String("context", "", "talk to fleetd as context `NAME` says (see fleetctl config; default $"+envContext+" or the current context)")
	_ = root.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return contextNames(), cobra.ShellCompDirectiveNoFileComp
	})
	root.AddCommand(
		newKeysCmd(a),
		newBundleCmd(a),
		newVersionCmd(a),
		newDevicesCmd(a),
		newAssignCmd(a),
		newEnrollCmd(a),
		newRolloutCmd(a),
		newExperimentCmd(a),
		newProfileCmd(a),
		newDriftCmd(a),
		newEventsCmd(a),
		newConfigCmd(a),
	)
	// completion bash|zsh|fish|powershell, added now (cobra would add it
	// when run) so that groupCommands treats it as the other groups.
	root.InitDefaultCompletionCmd()
	groupCommands(root)
	return root
}

func newVersionCmd(a *app) *cobra.Command {
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print fleetctl's version",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out.machine() {
				return out.write(a.stdout, map[string]string{"version": version.Version})
			}
			_, err := fmt.Fprintln(a.stdout, version.Version)
			return err
		},
	}
	out.register(cmd)
	return cmd
}

// exactArgs requires the named positional arguments, and says which are
// missing or extra with the command's usage.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usagef("%s: missing %s (usage: %s)", cmd.CommandPath(), strings.Join(names[len(args):], " "), cmd.UseLine())
		case len(args) > len(names):
			return usagef("%s: unexpected argument %q (usage: %s)", cmd.CommandPath(), args[len(names)], cmd.UseLine())
		}
		return nil
	}
}
