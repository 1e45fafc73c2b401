// Command silero-profile builds the Silero VAD bundle's reference drift
// profile, testbed/bundles/silero-vad/profile.json, from synthetic speech:
// audio.Normal(seed) for the given duration, cut into 512-sample frames,
// each turned into the pre-processor's six features natively
// (frame.Transform, the code the WASM pre-processor runs) and run through
// the real model with ONNX Runtime for the speech probability. Run it from
// the repository root after `make deps`:
//
//	go run ./testbed/cmd/silero-profile
//
// The output is deterministic on a given machine (the features are pure
// Go; ONNX Runtime's last bits may differ between CPUs).
package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/testbed/audio"
	"github.com/edgefleet/edgefleet/testbed/bundles/silero-vad/pre/frame"
)

// Defaults: paths relative to the repository root.
const (
	defaultSchema  = "testbed/bundles/silero-vad/profile-schema.yaml"
	defaultProfile = "testbed/bundles/silero-vad/profile.json"
	defaultSeconds = 600
	defaultSeed    = 1
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), os.Args[1:], log); err != nil {
		fmt.Fprintf(os.Stderr, "silero-profile: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("silero-profile", flag.ContinueOnError)
	schemaPath := fs.String("schema", defaultSchema, "the profile schema")
	out := fs.String("o", defaultProfile, "the profile to write")
	seconds := fs.Int("seconds", defaultSeconds, "seconds of synthetic speech")
	seed := fs.Uint64("seed", defaultSeed, "audio.Normal seed")
	model := fs.String("model", filepath.Join(cacheDir(), "models", "silero_vad_v5.onnx"), "the Silero VAD v5 model (make deps)")
	ort := fs.String("ort", "", "the ONNX Runtime library (default: onnx.DefaultLibraryPath)")
	csvPath := fs.String("csv", "", "also write the data as CSV to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	s, err := drift.LoadSchema(*schemaPath)
	if err != nil {
		return err
	}
	sess, err := openModel(*ort, *model)
	if err != nil {
		return err
	}
	defer sess.Close()
	frames := *seconds * audio.SampleRate / frame.Samples
	log.Info("generating", "seconds", *seconds, "frames", frames, "seed", *seed)
	cols, err := reference(ctx, sess, s, audio.Normal(*seed), frames)
	if err != nil {
		return err
	}
	d, err := table(s, cols)
	if err != nil {
		return err
	}
	p, err := drift.Build(s, d)
	if err != nil {
		return err
	}
	if err := p.WriteFile(*out); err != nil {
		return err
	}
	log.Info("wrote profile", "path", *out, "id", p.ID())
	if *csvPath != "" {
		if err := writeCSV(*csvPath, s, cols); err != nil {
			return err
		}
		log.Info("wrote data", "path", *csvPath)
	}
	return nil
}

func cacheDir() string {
	if d := os.Getenv("EDGEFLEET_CACHE"); d != "" {
		return d
	}
	return filepath.Join(".cache", "deps")
}

// openModel initializes ONNX Runtime and loads the model.
func openModel(lib, model string) (*onnx.Session, error) {
	if lib == "" {
		var err error
		if lib, err = onnx.DefaultLibraryPath(); err != nil {
			return nil, err
		}
	}
	if err := onnx.Init(lib); err != nil {
		return nil, err
	}
	if _, err := os.Stat(model); err != nil {
		return nil, fmt.Errorf("the Silero VAD model: %w (run `make deps`)", err)
	}
	return onnx.NewSession(model, onnx.Options{})
}

// predict runs frames of audio c through the pre-processing transform and
// the model, handing each frame's tensors (the pre-processor's features,
// then the model's outputs) to fn.
func predict(ctx context.Context, sess *onnx.Session, c audio.Config, frames int, fn func(features, outputs []tensor.Tensor) error) error {
	g, err := audio.New(c)
	if err != nil {
		return err
	}
	buf := make([]byte, frame.Bytes)
	for range frames {
		if _, err := g.Read(buf); err != nil {
			return err
		}
		ts, err := frame.Transform(buf)
		if err != nil {
			return err
		}
		// ts: input, state, sr (the model's inputs), features.
		outs, err := sess.Run(ctx, ts[:3])
		if err != nil {
			return err
		}
		if err := fn(ts[3:], outs); err != nil {
			return err
		}
	}
	return nil
}

// reference collects frames of audio c into one column per schema
// feature, read from the feature's source tensor.
func reference(ctx context.Context, sess *onnx.Session, s *drift.Schema, c audio.Config, frames int) ([][]float64, error) {
	cols := make([][]float64, len(s.Features))
	err := predict(ctx, sess, c, frames, func(features, outputs []tensor.Tensor) error {
		for i, f := range s.Features {
			if f.Source == nil {
				return fmt.Errorf("feature %q has no source", f.Name)
			}
			v, err := read(f.Source, features, outputs)
			if err != nil {
				return fmt.Errorf("feature %q: %w", f.Name, err)
			}
			cols[i] = append(cols[i], v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cols, nil
}

// table is the columns as drift.Data.
func table(s *drift.Schema, cols [][]float64) (*drift.Data, error) {
	d := drift.NewData()
	for i, f := range s.Features {
		if err := d.SetNumerical(f.Name, cols[i]); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// read returns element Index of the (one-row) source tensor.
func read(src *drift.Source, groups ...[]tensor.Tensor) (float64, error) {
	for _, g := range groups {
		for _, t := range g {
			if t.Name != src.Tensor {
				continue
			}
			vals, err := t.Float64s()
			if err != nil {
				return 0, err
			}
			if src.Index >= len(vals) {
				return 0, fmt.Errorf("tensor %q has %d values, no index %d", t.Name, len(vals), src.Index)
			}
			return vals[src.Index], nil
		}
	}
	return 0, fmt.Errorf("no tensor %q", src.Tensor)
}

// writeCSV writes the columns with a header row, each value in the
// shortest form that parses back to the same float64.
func writeCSV(path string, s *drift.Schema, cols [][]float64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	var names []string
	for _, fs := range s.Features {
		names = append(names, fs.Name)
	}
	w.Write(names)
	row := make([]string, len(cols))
	for i := range cols[0] {
		for j := range cols {
			row[j] = strconv.FormatFloat(cols[j][i], 'g', -1, 64)
		}
		w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
