package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
)

// outputFlag is the -o/--output flag of commands that print results:
// table (default), wide (the table with more columns, where a command has
// them), json (the API's objects), yaml (the same, as YAML) and name (the
// ids only, one per line, for xargs). Files are never -o: a file a
// command reads is -f/--file (as kubectl's), one it writes --out.
type outputFlag struct{ format string }

// outputFormats are -o's values.
var outputFormats = []string{"table", "wide", "json", "yaml", "name"}

// register adds -o/--output to cmd and validates it before cmd runs.
func (o *outputFlag) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.format, "output", "o", "table", "output format: "+strings.Join(outputFormats, ", "))
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if !slices.Contains(outputFormats, o.format) {
			hint := ""
			if cmd.Flags().Lookup("out") != nil {
				// -o FILE, as fleetctl once took it.
				hint = "; -o is the output format: give the file to write with --out " + o.format
			}
			return usagef("unknown output format %q (want one of %s)%s", o.format, strings.Join(outputFormats, ", "), hint)
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}

// machine reports whether the output is for programs (json, yaml, name):
// the command prints its result with write instead of a table.
func (o *outputFlag) machine() bool {
	return o.format == "json" || o.format == "yaml" || o.format == "name"
}

// wide reports whether the table should have its extra columns.
func (o *outputFlag) wide() bool { return o.format == "wide" }

// write prints v as JSON, YAML (from its JSON form, so both name fields
// alike) or its names.
func (o *outputFlag) write(w io.Writer, v any) error {
	switch o.format {
	case "yaml":
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			return err
		}
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return err
		}
		return enc.Close()
	case "name":
		names, ok := resourceNames(v)
		if !ok {
			return usagef("-o name: this command's result has no names; use -o json or yaml")
		}
		for _, n := range names {
			if _, err := fmt.Fprintln(w, n); err != nil {
				return err
			}
		}
		return nil
	}
	return writeJSON(w, v)
}

// resourceNames are the ids -o name prints for the results that have
// them.
func resourceNames(v any) ([]string, bool) {
	var names []string
	switch v := v.(type) {
	case api.DeviceList:
		for _, d := range v.Devices {
			names = append(names, d.ID)
		}
	case *api.Device:
		names = []string{v.ID}
	case *api.Enrolment:
		names = []string{v.DeviceID}
	case api.BundleList:
		for _, b := range v.Bundles {
			names = append(names, b.ID())
		}
	case api.RolloutList:
		for _, r := range v.Rollouts {
			names = append(names, r.ID)
		}
	case *rollout.Rollout:
		names = []string{v.ID}
	case api.EventList:
		for _, e := range v.Events {
			names = append(names, e.ID)
		}
	case *api.RolloutStatus:
		names = []string{v.ID}
	case *api.Keys:
		for _, k := range v.Keys {
			names = append(names, k.ID)
		}
	case contextList:
		for _, c := range v.Contexts {
			names = append(names, c.Name)
		}
	case buildResult:
		names = []string{v.ID}
	case profileResult:
		names = []string{v.ID}
	case pullResult:
		names = []string{v.ID()}
	default:
		return nil, false
	}
	return names, true
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns an aligned-columns writer; call Flush when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// formatBytes is n in B, kB, MB or GB (powers of 1000).
func formatBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}
