package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/shared/drift"
)

func newProfileCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "profile",
		Short: "Build reference drift profiles",
		Long: `A reference profile describes a model's inputs (after pre-processing) and
outputs on reference data, so that devices and fleetd can tell when live
traffic drifts away from it. It ships in the bundle as profile.json (the
spec's profile: field). See docs/drift.md.`,
	}
	cmd.AddCommand(newProfileBuildCmd(a))
	return cmd
}

func newProfileBuildCmd(a *app) *cobra.Command {
	var input, schema, file string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "build --input DATA --schema SCHEMA [--out FILE]",
		Short: "Build a reference drift profile from data and a schema",
		Long: `Build a reference drift profile from DATA, a CSV file whose header row
names the columns or a 2-D float32/float64 .npy array whose columns are
the schema's features in order, and SCHEMA, a YAML or JSON file listing
the features (name, kind numerical|categorical, optional test and
threshold overrides, optional tensor source for the agent) and options.
FILE (default profile.json) is written atomically; the same data and
schema give the same bytes.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := drift.LoadSchema(schema)
			if err != nil {
				return err
			}
			d, err := drift.ReadFile(input, s)
			if err != nil {
				return err
			}
			if len(d.Ignored) > 0 {
				fmt.Fprintf(a.stderr, "fleetctl: note: columns not in the schema, ignored: %s\n", strings.Join(d.Ignored, ", "))
			}
			a.log.Debug("building profile", "input", input, "rows", d.Rows(), "features", len(s.Features))
			p, err := drift.Build(s, d)
			if err != nil {
				return fmt.Errorf("%s: %w", input, err)
			}
			if err := p.WriteFile(file); err != nil {
				return err
			}
			fi, err := os.Stat(file)
			if err != nil {
				return err
			}
			if out.machine() {
				res := profileResult{File: file, Size: fi.Size(), ID: p.ID(), Rows: d.Rows()}
				for _, f := range p.Features {
					test, dflt := f.Test, f.Test == ""
					if dflt {
						test = drift.DefaultTest(f.Kind, f.Count)
					}
					res.Features = append(res.Features, profileFeature{
						Name: f.Name, Kind: string(f.Kind), Values: f.Count, Missing: f.Missing, Test: string(test), DefaultTest: dflt,
					})
				}
				return out.write(a.stdout, res)
			}
			fmt.Fprintf(a.stdout, "wrote %s (%s, profile %s, %d rows)\n", file, formatBytes(fi.Size()), p.ID(), d.Rows())
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "FEATURE\tKIND\tVALUES\tMISSING\tTEST\tSUMMARY")
			for _, f := range p.Features {
				test := string(f.Test)
				if test == "" {
					test = string(drift.DefaultTest(f.Kind, f.Count)) + " (default)"
				}
				var sum string
				if f.Numerical != nil {
					n := f.Numerical
					sum = fmt.Sprintf("mean %s std %s range [%s, %s], %d bins, sample %d", profileNum(n.Mean), profileNum(n.Std), profileNum(n.Min), profileNum(n.Max), len(n.Counts)-2, len(n.Sample))
				} else {
					c := f.Categorical
					sum = fmt.Sprintf("%d categories (+%s: %d)", len(c.Categories), drift.OtherCategory, c.Counts[len(c.Counts)-1])
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", f.Name, f.Kind, f.Count, f.Missing, test, sum)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "reference data: a .csv file with a header row, or a 2-D float .npy file")
	cmd.Flags().StringVar(&schema, "schema", "", "the features: a YAML or JSON schema file")
	cmd.Flags().StringVar(&file, "out", "profile.json", "the profile file to write")
	cmd.MarkFlagRequired("input")
	cmd.MarkFlagRequired("schema")
	out.register(cmd)
	return cmd
}

// profileResult is what profile build prints with -o json or yaml.
type profileResult struct {
	File     string           `json:"file"`
	Size     int64            `json:"size"`
	ID       string           `json:"id"`
	Rows     int              `json:"rows"`
	Features []profileFeature `json:"features"`
}

type profileFeature struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Values      int64  `json:"values"`
	Missing     int64  `json:"missing"`
	Test        string `json:"test"`
	DefaultTest bool   `json:"defaultTest"`
}

// profileNum formats a number briefly.
func profileNum(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }
