package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
)

func newAssignCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var rollback bool
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "assign DEVICE NAME@VERSION [--rollback]",
		Short: "Deploy a bundle to one device",
		Long: `Issue DEVICE a desired state to run bundle NAME@VERSION from the registry:
the next sequence number, a fresh expiry and download URLs, published
retained on the device's desired topic. The device installs it when it is
(or comes back) online. --rollback marks it as a return to a version the
device ran before.`,
		Args: exactArgs("DEVICE", "NAME@VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !strings.Contains(args[1], "@") {
				return usagef("bundle %q: want NAME@VERSION", args[1])
			}
			action := "install"
			if rollback {
				action = "rollback"
			}
			return fetchAndPrint(a, &rf, out, func(c *client.Client) (*api.Assignment, error) {
				return c.Assign(cmd.Context(), args[0], args[1], action)
			}, func(w io.Writer, res *api.Assignment) error {
				d := res.Desired
				fmt.Fprintf(w, "%s: desired seq %d: %s %s (expires %s)\n", d.DeviceID, d.Seq, d.Action, d.Bundle.ID(), formatTime(d.ExpiresAt))
				if !res.Published {
					fmt.Fprintln(w, "  not on the broker yet: fleetd keeps retrying")
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&rollback, "rollback", false, "mark this as a rollback to a version the device ran before")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}
