// Command benchtable prints make bench's side-by-side table: each of our
// paths next to the peer it competes with, measured in the same run, in
// alternating rounds (ours, then the peer, then ours again...), with the
// minimum, median and maximum over the rounds and the ratio of the
// medians, in the row's unit (for µs/op above 1 is slower than the row
// compared with; for records/s above 1 is faster). One machine's noise
// moves both sides of a row alike, so the ratio is what a change is
// judged by.
//
// Rows:
//   - inference (agent/api BenchmarkInfer and BenchmarkInferRaw): Silero VAD
//     in the agent's process, over the unix socket as OIP JSON and as raw
//     PCM, against onnxruntime-node 1.24.1 running the same frame in
//     process (testbed/bench/ortpeer, installed by scripts/ortpeer.sh);
//   - outbox (agent/outbox BenchmarkAppend): durable appends against one
//     bbolt commit per record, the disk's fsync ceiling;
//   - drain (agent/uplink BenchmarkDrain): the outbox drained to mosquitto
//     against raw paho publishing the same batches, and one by one.
//
// Usage, from inside the checkout: benchtable [--rounds 3] [--only inference,outbox,drain]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/edgefleet/edgefleet/testbed/fleet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

// group is one table: the benchmarks of one package, each round's runs
// of them, and the rows shown from their results.
type group struct {
	name  string
	pkg   string // Go package directory, relative to the repository
	bench string // -test.bench pattern
	// benchtime is -test.benchtime; empty leaves go test's default.
	benchtime string
	peer      bool // also run the onnxruntime-node peer each round
	rows      []row
}

// row is one line of a table: a measurement and, for our paths, the
// measurement it is compared with.
type row struct {
	label string
	key   string // benchmark name without the -GOMAXPROCS suffix, or peerKey
	unit  string // "µs/op" or "records/s"
	vs    string // key of the row this one is compared with; "" for none
}

const peerKey = "onnxruntime-node"

var groups = []group{
	{
		name: "inference", pkg: "agent/api", bench: "^BenchmarkInfer(Raw)?$", benchtime: "3000x", peer: true,
		rows: []row{
			{"agent, model in process", "BenchmarkInfer/in-process", "µs/op", peerKey},
			{"agent, OIP JSON over the unix socket", "BenchmarkInfer/unix-socket", "µs/op", peerKey},
			{"agent, raw PCM over the unix socket", "BenchmarkInferRaw/unix-socket", "µs/op", peerKey},
			{"onnxruntime-node in process (peer)", peerKey, "µs/op", ""},
		},
	},
	{
		name: "outbox", pkg: "agent/outbox", bench: "^BenchmarkAppend$/^(outbox|bbolt-update)/appenders=(1|64)$", benchtime: "2000x",
		rows: []row{
			{"outbox, 1 appender", "BenchmarkAppend/outbox/appenders=1", "records/s", "BenchmarkAppend/bbolt-update/appenders=1"},
			{"outbox, 64 appenders", "BenchmarkAppend/outbox/appenders=64", "records/s", "BenchmarkAppend/bbolt-update/appenders=1"},
			{"bbolt, one fsync'd commit per record (ceiling)", "BenchmarkAppend/bbolt-update/appenders=1", "records/s", ""},
		},
	},
	{
		name: "drain", pkg: "agent/uplink", bench: "^BenchmarkDrain$/^(uplink|paho-batch|paho-each)$", benchtime: "20000x",
		rows: []row{
			{"uplink: outbox drained to mosquitto", "BenchmarkDrain/uplink", "records/s", "BenchmarkDrain/paho-batch"},
			{"paho, the same batches, no outbox", "BenchmarkDrain/paho-batch", "records/s", ""},
			{"paho, one QoS 1 publish per record", "BenchmarkDrain/paho-each", "records/s", "BenchmarkDrain/paho-batch"},
		},
	},
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("benchtable", flag.ContinueOnError)
	rounds := fs.Int("rounds", 3, "alternating rounds of each group")
	only := fs.String("only", "", "comma-separated groups to run (inference, outbox, drain); empty runs all")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if *rounds < 1 {
		return usageError{fmt.Errorf("--rounds %d: want at least 1", *rounds)}
	}
	selected := groups
	if *only != "" {
		selected = nil
		for name := range strings.SplitSeq(*only, ",") {
			i := slices.IndexFunc(groups, func(g group) bool { return g.name == name })
			if i < 0 {
				return usageError{fmt.Errorf("--only: unknown group %q (groups: inference, outbox, drain)", name)}
			}
			selected = append(selected, groups[i])
		}
	}
	art, err := fleet.FindArtifacts()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "benchtable-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	for _, g := range selected {
		results, err := measure(ctx, art, work, g, *rounds)
		if err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
		printTable(stdout, g, results, *rounds)
	}
	return nil
}

// measure runs a group's rounds and returns each key's values, one a round.
func measure(ctx context.Context, art fleet.Artifacts, work string, g group, rounds int) (map[string][]float64, error) {
	root := art.Root
	bin := filepath.Join(work, strings.ReplaceAll(g.pkg, "/", "_")+".test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./"+g.pkg)
	build.Dir, build.Stderr = root, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("building the %s tests: %w", g.pkg, err)
	}
	var peer []string
	if g.peer {
		var err error
		if peer, err = peerCommand(art); err != nil {
			return nil, err
		}
	}
	results := map[string][]float64{}
	for r := range rounds {
		fmt.Fprintf(os.Stderr, "benchtable: %s, round %d of %d\n", g.name, r+1, rounds)
		args := []string{"-test.run", "^$", "-test.bench", g.bench, "-test.count", "1"}
		if g.benchtime != "" {
			args = append(args, "-test.benchtime", g.benchtime)
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir, cmd.Stderr = filepath.Join(root, g.pkg), os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w\n%s", g.pkg, g.bench, err, out)
		}
		got, err := parseBench(out)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", g.pkg, err)
		}
		for k, v := range got {
			results[k] = append(results[k], v)
		}
		if peer != nil {
			ns, err := runPeer(ctx, peer)
			if err != nil {
				return nil, err
			}
			results[peerKey] = append(results[peerKey], ns)
		}
	}
	for _, rw := range g.rows {
		if len(results[rw.key]) != rounds {
			return nil, fmt.Errorf("%s: %d results in %d rounds (is the benchmark still named so?)", rw.key, len(results[rw.key]), rounds)
		}
	}
	return results, nil
}

// peerCommand is the command line of the onnxruntime-node peer: its
// script is copied beside the node_modules scripts/ortpeer.sh installed.
func peerCommand(art fleet.Artifacts) ([]string, error) {
	dir := os.Getenv("EDGEFLEET_ORTPEER")
	if dir == "" {
		dir = filepath.Join(art.Root, ".cache", "ortpeer")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "onnxruntime-node")); err != nil {
		return nil, fmt.Errorf("the onnxruntime-node peer is not installed in %s: run scripts/ortpeer.sh (make setup does)", dir)
	}
	script, err := os.ReadFile(filepath.Join(art.Root, "testbed", "bench", "ortpeer", "peer.mjs"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "peer.mjs"), script, 0o644); err != nil {
		return nil, err
	}
	return []string{"node", filepath.Join(dir, "peer.mjs"), "--model", art.SileroModel, "--runs", "2000"}, nil
}

// runPeer runs the peer once and returns its ns/op.
func runPeer(ctx context.Context, argv []string) (float64, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("onnxruntime-node peer: %w", err)
	}
	var res struct {
		NsPerOp float64 `json:"nsPerOp"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil || res.NsPerOp <= 0 {
		return 0, fmt.Errorf("onnxruntime-node peer: unexpected output %q", out)
	}
	return res.NsPerOp, nil
}

// benchLine is one result line of go test -bench: name, iterations, ns/op.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

// parseBench returns the ns/op of each benchmark in go test -bench output.
func parseBench(out []byte) (map[string]float64, error) {
	got := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ns, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: ns/op %q: %w", m[1], m[2], err)
		}
		got[m[1]] = ns
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("no benchmark results in:\n%s", out)
	}
	return got, nil
}

// printTable writes a group's table: min, median and max over the rounds in
// the row's unit, and the ratio of its median to the compared row's.
func printTable(w io.Writer, g group, results map[string][]float64, rounds int) {
	fmt.Fprintf(w, "\n%s (%d rounds, alternating)\n", g.name, rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\tunit\tmin\tmedian\tmax\tratio\tvs\t")
	for _, rw := range g.rows {
		vals := convert(results[rw.key], rw.unit)
		slices.Sort(vals)
		ratio, vs := "", ""
		if rw.vs != "" {
			// In the row's unit: above 1 is slower than the peer for
			// µs/op, faster for records/s.
			mine, theirs := median(vals), median(convert(results[rw.vs], rw.unit))
			ratio = fmt.Sprintf("%.2fx", mine/theirs)
			vs = rw.vs
			if i := slices.IndexFunc(g.rows, func(o row) bool { return o.key == rw.vs }); i >= 0 {
				vs = g.rows[i].label
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", rw.label, rw.unit,
			format(vals[0]), format(median(vals)), format(vals[len(vals)-1]), ratio, vs)
	}
	tw.Flush()
}

// convert turns ns/op values into the row's unit.
func convert(ns []float64, unit string) []float64 {
	out := make([]float64, len(ns))
	for i, v := range ns {
		switch unit {
		case "µs/op":
			out[i] = v / 1e3
		case "records/s":
			out[i] = 1e9 / v
		default:
			out[i] = v
		}
	}
	return out
}

func median(vals []float64) float64 {
	s := slices.Sorted(slices.Values(vals))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func format(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
