package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/client"
)

// fleetctl's exit codes, for scripts (docs/cli.md and fleetctl --help
// list them; exitCodesHelp is that table).
const (
	// ExitOK: the command did what it was asked.
	ExitOK = 0
	// ExitError: any error not listed below (fleetd unreachable, a bad
	// file, a refused request).
	ExitError = 1
	// ExitUsage: the command line itself is wrong: unknown command or
	// flag, missing or extra argument, bad flag value.
	ExitUsage = 2
	// ExitNotFound: what was named does not exist (a device, bundle or
	// rollout on fleetd, or a local file).
	ExitNotFound = 3
	// ExitRefused: fleetd refused by policy or conflict: the devices are
	// held by another rollout, the action does not fit the rollout's
	// state, the bundle's key is not trusted.
	ExitRefused = 4
	// ExitUnwanted: the outcome a command watched for is not the one
	// wanted: the rollout ended rolled back, aborted or failed; drift was
	// found (drift --exit-code).
	ExitUnwanted = 5
	// ExitTimeout: a --timeout passed before the outcome was known.
	ExitTimeout = 6
)

// exitCodesHelp is the table of exit codes, as fleetctl --help ends.
const exitCodesHelp = `Exit codes:
  0  success
  1  error (fleetd unreachable, bad input, any other failure)
  2  usage: unknown command, flag or context, missing or extra argument,
     bad flag value
  3  not found: the device, bundle, rollout or file named does not exist
  4  refused: conflict or policy (devices held by another rollout, an
     action the rollout's state does not allow, an untrusted key)
  5  unwanted outcome: the rollout waited on ended rolled back, aborted or
     failed; drift found (drift --exit-code)
  6  timeout: --timeout passed before the outcome was known`

// exitError carries an exit code other than the one exitCode would
// derive from the error itself.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode makes err exit with code.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// usagef is a command-line error (ExitUsage).
func usagef(format string, args ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, args...))
}

// exitCode is the exit code for err (nil: ExitOK).
func exitCode(err error) int {
	var ee *exitError
	var ce *client.Error
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce):
		switch ce.Status {
		case http.StatusNotFound:
			return ExitNotFound
		case http.StatusConflict, http.StatusForbidden:
			return ExitRefused
		}
		return ExitError
	case errors.Is(err, fs.ErrNotExist):
		return ExitNotFound
	case errors.Is(err, context.DeadlineExceeded):
		return ExitTimeout
	case strings.HasPrefix(err.Error(), "required flag(s) "),
		strings.HasPrefix(err.Error(), "if any flags in the group "):
		// cobra's own checks of MarkFlagRequired and flag groups, which
		// return plain errors.
		return ExitUsage
	}
	return ExitError
}

// groupCommands makes every command that only groups others (rollout,
// bundle, ...) refuse an unknown subcommand with ExitUsage and a
// did-you-mean, where cobra would print the help and exit 0, and print
// its help when run bare.
func groupCommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		groupCommands(c)
	}
	if !cmd.HasSubCommands() || cmd.Run != nil || cmd.RunE != nil {
		return
	}
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2 // cobra's own default
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return usagef("%s (run '%s --help' for its commands)", msg, cmd.CommandPath())
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
}
