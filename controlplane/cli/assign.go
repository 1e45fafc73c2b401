package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

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
			c, err := rf.client()
			if err != nil {
				return err
			}
			action := "install"
			if rollback {
				action = "rollback"
			}
			res, err := c.Assign(cmd.Context(), args[0], args[1], action)
			if err != nil {
				return err
			}
			if out.machine() {
				return out.write(a.stdout, res)
			}
			d := res.Desired
			fmt.Fprintf(a.stdout, "%s: desired seq %d: %s %s (expires %s)\n", d.DeviceID, d.Seq, d.Action, d.Bundle.ID(), formatTime(d.ExpiresAt))
			if !res.Published {
				fmt.Fprintln(a.stdout, "  not on the broker yet: fleetd keeps retrying")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&rollback, "rollback", false, "mark this as a rollback to a version the device ran before")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

func newEnrollCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var tokenFile string
	var labelArgs []string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "enroll DEVICE [--label KEY=VALUE]... [--enrol-token-file FILE]",
		Short: "Enrol a device and print its MQTT credentials (shown once)",
		Long: `Enrol DEVICE with an enrolment token (not the operator token): fleetd
returns the device's MQTT username and password, shown this once, and the
broker URLs to connect to. The token comes from --enrol-token-file,
$` + envEnrolToken + `, or ./` + defaultDataDir + "/" + enrolTokenRel + ` when it exists.`,
		Args: exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			lbls := map[string]string{}
			for _, l := range labelArgs {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return usagef("--label %q: want KEY=VALUE", l)
				}
				lbls[k] = v
			}
			tok, err := enrolToken(tokenFile)
			if err != nil {
				return err
			}
			c, err := client.New(rf.serverURL(), "", nil)
			if err != nil {
				return err
			}
			e, err := c.Enroll(cmd.Context(), tok, args[0], lbls)
			if err != nil {
				return err
			}
			if out.machine() {
				return out.write(a.stdout, e)
			}
			tw := newTable(a.stdout)
			fmt.Fprintf(tw, "device\t%s\n", e.DeviceID)
			fmt.Fprintf(tw, "username\t%s\n", e.Username)
			fmt.Fprintf(tw, "password\t%s\n", e.Password)
			fmt.Fprintf(tw, "brokers\t%s\n", strings.Join(e.Brokers, ", "))
			fmt.Fprintf(tw, "labels\t%s\n", labels(lbls))
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(a.stderr, "fleetctl: the password is shown only this once; put it in the device's uplink password file.")
			return nil
		},
	}
	cmd.Flags().StringVar(&tokenFile, "enrol-token-file", "", "file with the enrolment token")
	cmd.Flags().StringArrayVar(&labelArgs, "label", nil, "inventory label KEY=VALUE (repeatable)")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

func enrolToken(file string) (string, error) {
	switch {
	case file != "":
		return readToken(file, "--enrol-token-file")
	case os.Getenv(envEnrolToken) != "":
		return strings.TrimSpace(os.Getenv(envEnrolToken)), nil
	}
	def := filepath.Join(defaultDataDir, enrolTokenRel)
	if _, err := os.Stat(def); err != nil {
		return "", fmt.Errorf("no enrolment token: give --enrol-token-file or set $%s", envEnrolToken)
	}
	return readToken(def, "default enrolment token file")
}
