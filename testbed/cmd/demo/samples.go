package main

// Data samples for the feature store: the demo's good bundle carries a
// sampling policy, the agents keep a share of the model's inputs and
// outputs, and fleetd writes them as Hive-partitioned Parquet into its
// registry's directory (docs/integrations.md).

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/configfile"
)

const (
	// demoSampleRate is the share of requests the good bundle samples:
	// the agents answer about 31 requests a second each.
	demoSampleRate = 0.05
	// demoSampleBudget is each device's daily byte budget; a Silero
	// sample (its 512-sample frame, the 2x1x128 state and the outputs)
	// takes about 6 KB, so a device keeps about 170 a day.
	demoSampleBudget = 1 << 20
	// demoSamplesDir is where fleetd writes the files: the file
	// registry's directory, folder samples.
	demoSamplesDir = "fleetd-data/registry/samples"
)

// demoSampling is the good bundle's sampling policy.
func demoSampling() *bundle.SamplingSpec {
	return &bundle.SamplingSpec{Rate: demoSampleRate, MaxBytesPerDay: configfile.ByteSize(demoSampleBudget)}
}

// samplesArgs are fleetd's flags for the demo's sample files: written
// two seconds after a sample arrives (the default is five minutes).
func samplesArgs() []string {
	return []string{"--set", "samples.flushAge=2s"}
}

// sampleFile is one Parquet file fleetd wrote.
type sampleFile struct {
	path string // relative to the workspace
	rows int64
}

// sampleFiles lists the Parquet files under the samples directory.
func (d *demo) sampleFiles() ([]sampleFile, error) {
	var out []sampleFile
	root := filepath.Join(d.work, filepath.FromSlash(demoSamplesDir))
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == root {
				return filepath.SkipAll
			}
			return err
		}
		if e.IsDir() || !strings.HasSuffix(p, ".parquet") || strings.HasPrefix(e.Name(), ".") {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, sampleFile{path: d.rel(p), rows: pf.NumRows()})
		return nil
	})
	slices.SortFunc(out, func(a, b sampleFile) int { return strings.Compare(a.path, b.path) })
	return out, err
}

// narrateSamples waits for fleetd's first Parquet sample files and shows
// them, with how to read them.
func (d *demo) narrateSamples(ctx context.Context) error {
	d.n.Say("The bundle's signed manifest has a sampling policy, sampling: {rate: %g, maxBytesPerDay: %s}: every agent keeps",
		demoSampleRate, configfile.ByteSize(demoSampleBudget))
	d.n.Say("that share of the requests' model inputs (after the pre-processor) and outputs as outbox records; fleetd")
	d.n.Say("writes them as Parquet, Hive-partitioned, into its registry's directory (%s).", demoSamplesDir)
	var files []sampleFile
	err := waitFor(ctx, 30*time.Second, func() (bool, error) {
		var err error
		files, err = d.sampleFiles()
		return len(files) > 0, err
	})
	if err != nil {
		return fmt.Errorf("no Parquet sample file in %s: %w%s", demoSamplesDir, err, tailFile(filepath.Join(d.work, "logs", "fleetd.log"), 8))
	}
	var rows int64
	for _, f := range files {
		d.n.Out(fmt.Sprintf("%s  %d rows", f.path, f.rows))
		rows += f.rows
	}
	d.n.Say("%d samples in %d file(s) so far; more arrive as the streams go on. DuckDB, pandas or Feast read them as they", rows, len(files))
	d.n.Say("are (docs/integrations.md has the schema), e.g. in DuckDB:")
	d.n.Out("SELECT device_id, version, count(*) AS samples, avg(output_output[1]) AS speech")
	d.n.Out("FROM read_parquet('" + demoSamplesDir + "/**/*.parquet', hive_partitioning = true) GROUP BY ALL;")
	return nil
}
