package cli

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/client"
)

// fetchAndPrint is the body of a command that asks fleetd for one result
// and prints it: fetch gets the result with rf's client; out writes it
// with -o json, yaml or name, human prints it otherwise (to a.stdout).
func fetchAndPrint[T any](a *app, rf *remoteFlags, out *outputFlag, fetch func(*client.Client) (T, error), human func(io.Writer, T) error) error {
	c, err := rf.client()
	if err != nil {
		return err
	}
	v, err := fetch(c)
	if err != nil {
		return err
	}
	if out.machine() {
		return out.write(a.stdout, v)
	}
	return human(a.stdout, v)
}

// newFetchCmd completes cmd (its Use, Short, Long and Args set) into a
// command that takes only --server, --token-file and -o and runs
// fetchAndPrint: fetch gets the result for the arguments.
func newFetchCmd[T any](a *app, cmd *cobra.Command, fetch func(ctx context.Context, c *client.Client, args []string) (T, error), human func(io.Writer, T) error) *cobra.Command {
	var rf remoteFlags
	out := &outputFlag{}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return fetchAndPrint(a, &rf, out, func(c *client.Client) (T, error) {
			return fetch(cmd.Context(), c, args)
		}, human)
	}
	rf.register(cmd)
	out.register(cmd)
	return cmd
}
