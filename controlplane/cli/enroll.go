package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
)

func newEnrollCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var tokenFile string
	var labelArgs []string
	var ac agentConfigFlags
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "enroll DEVICE [--label KEY=VALUE]... [--enrol-token-file FILE] [--agent-config FILE --trust-key FILE.pub...]",
		Short: "Enrol a device and print its MQTT credentials (shown once), or write its agent configuration",
		Long: `Enrol DEVICE with an enrolment token (not the operator token): fleetd
returns the device's MQTT username and password, shown this once, and the
broker URLs to connect to. The token comes from --enrol-token-file,
$` + envEnrolToken + `, or ./` + defaultDataDir + "/" + enrolTokenRel + ` when it exists.

--agent-config FILE writes, instead of printing the password, a ready
edge-agent configuration for the device: the Debian package's default
configuration (firmware/edge-agent.yaml) with the device's id and labels,
--data-dir, the uplink to fleetd's first broker URL (or --broker) with the
device's username, and beside FILE:

  mqtt.password   the MQTT password (mode 0600), uplink.passwordFile
  trust/ID.pub    each --trust-key, the publisher keys the device pins
                  (trust.publicKeys: trust/*.pub)

Paths in FILE are relative to its directory, so the three install together
as /etc/edge-agent/{config.yaml,mqtt.password,trust/} (docs/operations.md,
"Your first device"). At least one --trust-key is required: a device
verifies every bundle against its own pinned keys, and takes none from
fleetd. Files are written atomically and never replaced without --force.
Everything is checked before fleetd is asked: a bad flag, an unreadable
key or an existing file enrols nothing.`,
		Args: exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			lbls := map[string]string{}
			for _, l := range labelArgs {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return usagef("--label %q: want KEY=VALUE", l)
				}
				lbls[k] = v
			}
			var files *agentFiles
			if ac.file != "" {
				var err error
				if files, err = planAgentConfig(id, lbls, ac); err != nil {
					return err
				}
			} else if err := ac.unused(cmd); err != nil {
				return err
			}
			tok, err := enrolToken(tokenFile)
			if err != nil {
				return err
			}
			c, err := client.New(rf.serverURL(), "", nil)
			if err != nil {
				return err
			}
			if files != nil {
				// Make the directories and temporary files now, so that an
				// unwritable place fails before the device is enrolled.
				if err := files.prepare(); err != nil {
					return err
				}
				defer files.abort()
			}
			e, err := c.Enroll(cmd.Context(), tok, id, lbls)
			if err != nil {
				return err
			}
			if files == nil {
				if out.machine() {
					return out.write(a.stdout, e)
				}
				if err := printEnrolment(a, e, lbls, ""); err != nil {
					return err
				}
				fmt.Fprintln(a.stderr, "fleetctl: the password is shown only this once; put it in the device's uplink password file.")
				return nil
			}
			if err := files.commit(e); err != nil {
				// The device is enrolled and its password exists only here:
				// print it rather than lose it.
				if out.machine() {
					out.write(a.stdout, e)
				} else {
					printEnrolment(a, e, lbls, "")
				}
				return fmt.Errorf("%s is enrolled (its credentials are printed above, shown this once), but its agent configuration was not written: %w", e.DeviceID, err)
			}
			msgs := a.stdout
			if out.machine() {
				if err := out.write(a.stdout, e); err != nil {
					return err
				}
				msgs = a.stderr
			} else if err := printEnrolment(a, e, lbls, files.display(files.password)); err != nil {
				return err
			}
			files.report(msgs)
			return nil
		},
	}
	cmd.Flags().StringVar(&tokenFile, "enrol-token-file", "", "file with the enrolment token")
	cmd.Flags().StringArrayVar(&labelArgs, "label", nil, "inventory label KEY=VALUE (repeatable); also the device's own labels with --agent-config")
	ac.register(cmd)
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

// printEnrolment is enroll's table; passwordFile, when set, is where the
// password went instead of the terminal.
func printEnrolment(a *app, e *api.Enrolment, lbls map[string]string, passwordFile string) error {
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "device\t%s\n", e.DeviceID)
	fmt.Fprintf(tw, "username\t%s\n", e.Username)
	if passwordFile != "" {
		fmt.Fprintf(tw, "password\t(in %s)\n", passwordFile)
	} else {
		fmt.Fprintf(tw, "password\t%s\n", e.Password)
	}
	fmt.Fprintf(tw, "brokers\t%s\n", strings.Join(e.Brokers, ", "))
	fmt.Fprintf(tw, "labels\t%s\n", labels(lbls))
	return tw.Flush()
}

// agentConfigFlags are enroll's flags for --agent-config.
type agentConfigFlags struct {
	file      string
	trustKeys []string
	dataDir   string
	broker    string
	force     bool
}

func (f *agentConfigFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.file, "agent-config", "", "write the device's edge-agent configuration to FILE (and mqtt.password, trust/ beside it) instead of printing the password")
	cmd.Flags().StringArrayVar(&f.trustKeys, "trust-key", nil, "with --agent-config: publisher public key (PEM) the device pins; repeatable, at least one")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", config.DefaultDataDir, "with --agent-config: the agent's dataDir on the device (absolute)")
	cmd.Flags().StringVar(&f.broker, "broker", "", "with --agent-config: the broker URL the device connects to (default: the first of fleetd's broker URLs)")
	cmd.Flags().BoolVar(&f.force, "force", false, "with --agent-config: replace files that exist")
}

// unused refuses the --agent-config flags without --agent-config.
func (f *agentConfigFlags) unused(cmd *cobra.Command) error {
	var set []string
	for _, name := range []string{"trust-key", "data-dir", "broker", "force"} {
		if cmd.Flags().Changed(name) {
			set = append(set, "--"+name)
		}
	}
	if len(set) > 0 {
		return usagef("%s: only with --agent-config FILE", strings.Join(set, ", "))
	}
	return nil
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
