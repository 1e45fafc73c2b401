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
//     process (testbed/bench/ortpeer, installed by scripts/npm-apps.sh ortpeer);
//   - concurrency (agent/api BenchmarkInferConcurrent): 2 and 4 clients
//     keeping requests in flight over the socket against onnxruntime-node
//     keeping as many session.run calls in flight, requests/s and p99;
//   - outbox (agent/outbox BenchmarkAppend): durable appends against one
//     bbolt commit per record, the disk's fsync ceiling;
//   - drain (agent/uplink BenchmarkDrain): the outbox drained to mosquitto
//     against raw paho publishing the same batches, and one by one;
//   - cut (agent/uplink BenchmarkDrainAfterCut): the broker's port gone
//     while 100,000 records pile up, then back: the time to reconnect,
//     the backlog's drain rate and the delay of live records meanwhile,
//     against the targets of issue 17 (a ratio to a target says how far
//     inside it, in the row's unit).
//
// Usage, from inside the checkout: benchtable [--rounds 3] [--only inference,concurrency,outbox,drain,cut]
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
	// peers are the onnxruntime-node runs made each round after the
	// benchmarks, by the number of session.run calls kept in flight (1:
	// one after the other). Each gives its key (peerKey, or peerKey and
	// "/c=N") ns/op, and the key and " p99-µs" its p99 latency.
	peers []int
	rows  []row
}

// row is one line of a table: a measurement and, for our paths, the
// measurement it is compared with.
type row struct {
	label string
	// key is the benchmark's name without the -GOMAXPROCS suffix (its
	// ns/op), that name, a space and a unit it reports with
	// b.ReportMetric (that metric), or peerKey.
	key  string
	unit string // "µs/op", "records/s" or "requests/s" (converted from ns/op), or the metric's own
	vs   string // key of the row this one is compared with; "" for none
	// target, when vs is "", is the value this row is held to.
	target float64
}

const peerKey = "onnxruntime-node"

var groups = []group{
	{
		name: "inference", pkg: "agent/api", bench: "^BenchmarkInfer(Raw|Binary)?$", benchtime: "3000x", peers: []int{1},
		rows: []row{
			{label: "agent, model in process", key: "BenchmarkInfer/in-process", unit: "µs/op", vs: peerKey},
			{label: "agent, OIP JSON over the unix socket", key: "BenchmarkInfer/unix-socket", unit: "µs/op", vs: peerKey},
			{label: "agent, OIP binary tensors over the unix socket", key: "BenchmarkInferBinary/unix-socket", unit: "µs/op", vs: peerKey},
			{label: "agent, raw PCM over the unix socket", key: "BenchmarkInferRaw/unix-socket", unit: "µs/op", vs: peerKey},
			{label: "onnxruntime-node in process (peer)", key: peerKey, unit: "µs/op"},
		},
	},
	{
		name: "concurrency", pkg: "agent/api", bench: "^BenchmarkInferConcurrent$", benchtime: "3000x", peers: []int{2, 4},
		rows: []row{
			{label: "agent, 2 clients over the unix socket", key: "BenchmarkInferConcurrent/clients=2", unit: "requests/s", vs: peerKey + "/c=2"},
			{label: "onnxruntime-node, 2 runs in flight (peer)", key: peerKey + "/c=2", unit: "requests/s"},
			{label: "agent, 4 clients over the unix socket", key: "BenchmarkInferConcurrent/clients=4", unit: "requests/s", vs: peerKey + "/c=4"},
			{label: "onnxruntime-node, 4 runs in flight (peer)", key: peerKey + "/c=4", unit: "requests/s"},
			{label: "agent, 2 clients, p99 latency", key: "BenchmarkInferConcurrent/clients=2 p99-µs", unit: "µs", vs: peerKey + "/c=2 p99-µs"},
			{label: "onnxruntime-node, 2 in flight, p99 latency", key: peerKey + "/c=2 p99-µs", unit: "µs"},
			{label: "agent, 4 clients, p99 latency", key: "BenchmarkInferConcurrent/clients=4 p99-µs", unit: "µs", vs: peerKey + "/c=4 p99-µs"},
			{label: "onnxruntime-node, 4 in flight, p99 latency", key: peerKey + "/c=4 p99-µs", unit: "µs"},
		},
	},
	{
		name: "outbox", pkg: "agent/outbox", bench: "^BenchmarkAppend$/^(outbox|bbolt-update)/appenders=(1|64)$", benchtime: "2000x",
		rows: []row{
			{label: "outbox, 1 appender", key: "BenchmarkAppend/outbox/appenders=1", unit: "records/s", vs: "BenchmarkAppend/bbolt-update/appenders=1"},
			{label: "outbox, 64 appenders", key: "BenchmarkAppend/outbox/appenders=64", unit: "records/s", vs: "BenchmarkAppend/bbolt-update/appenders=1"},
			{label: "bbolt, one fsync'd commit per record (ceiling)", key: "BenchmarkAppend/bbolt-update/appenders=1", unit: "records/s"},
		},
	},
	{
		name: "drain", pkg: "agent/uplink", bench: "^BenchmarkDrain$/^(uplink|paho-batch|paho-each)$", benchtime: "20000x",
		rows: []row{
			{label: "uplink: outbox drained to mosquitto", key: "BenchmarkDrain/uplink", unit: "records/s", vs: "BenchmarkDrain/paho-batch"},
			{label: "paho, the same batches, no outbox", key: "BenchmarkDrain/paho-batch", unit: "records/s"},
			{label: "paho, one QoS 1 publish per record", key: "BenchmarkDrain/paho-each", unit: "records/s", vs: "BenchmarkDrain/paho-batch"},
		},
	},
	{
		name: "cut", pkg: "agent/uplink", bench: "^BenchmarkDrainAfterCut$", benchtime: "1x",
		rows: []row{
			{label: "reconnect after the broker's port returns", key: "BenchmarkDrainAfterCut reconnect-ms", unit: "ms", target: 2000},
			{label: "100,000-record backlog drained", key: "BenchmarkDrainAfterCut backlog-records/s", unit: "records/s", target: 20000},
			{label: "live records during the drain, p99 delay", key: "BenchmarkDrainAfterCut live-p99-ms", unit: "ms", target: 100},
			{label: "live records during the drain, max delay", key: "BenchmarkDrainAfterCut live-max-ms", unit: "ms"},
		},
	},
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("benchtable", flag.ContinueOnError)
	rounds := fs.Int("rounds", 3, "alternating rounds of each group")
	only := fs.String("only", "", "comma-separated groups to run (inference, concurrency, outbox, drain, cut); empty runs all")
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
				return usageError{fmt.Errorf("--only: unknown group %q (groups: inference, concurrency, outbox, drain, cut)", name)}
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
	if len(g.peers) > 0 {
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
		for _, c := range g.peers {
			res, err := runPeer(ctx, append(peer, "--concurrency", strconv.Itoa(c)))
			if err != nil {
				return nil, err
			}
			key := peerKey
			if c > 1 {
				key += "/c=" + strconv.Itoa(c)
			}
			results[key] = append(results[key], res.NsPerOp)
			results[key+" p99-µs"] = append(results[key+" p99-µs"], res.P99us)
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
// script is copied beside the node_modules scripts/npm-apps.sh ortpeer installed.
func peerCommand(art fleet.Artifacts) ([]string, error) {
	dir := os.Getenv("EDGEFLEET_ORTPEER")
	if dir == "" {
		dir = filepath.Join(art.Root, ".cache", "ortpeer")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "onnxruntime-node")); err != nil {
		return nil, fmt.Errorf("the onnxruntime-node peer is not installed in %s: run scripts/npm-apps.sh ortpeer (make setup does)", dir)
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

// peerResult is what the peer prints (testbed/bench/ortpeer/peer.mjs).
type peerResult struct {
	NsPerOp float64 `json:"nsPerOp"`
	P99us   float64 `json:"p99us"`
}

// runPeer runs the peer once.
func runPeer(ctx context.Context, argv []string) (peerResult, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return peerResult{}, fmt.Errorf("onnxruntime-node peer: %w", err)
	}
	var res peerResult
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil || res.NsPerOp <= 0 {
		return peerResult{}, fmt.Errorf("onnxruntime-node peer: unexpected output %q", out)
	}
	return res, nil
}

// benchLine is one result line of go test -bench: name, iterations, then
// value-unit pairs (ns/op first).
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(\S.*)$`)

// parseBench returns the ns/op of each benchmark in go test -bench output
// by its name, and each other value it reports by its name, a space and
// the unit.
func parseBench(out []byte) (map[string]float64, error) {
	got := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		if len(f) < 2 || f[1] != "ns/op" {
			continue
		}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %s %q: %w", m[1], f[i+1], f[i], err)
			}
			key := m[1]
			if f[i+1] != "ns/op" {
				key += " " + f[i+1]
			}
			got[key] = v
		}
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
		vals := convert(results[rw.key], rw.unit, isMetric(rw.key))
		slices.Sort(vals)
		ratio, vs := "", ""
		if rw.vs == "" && rw.target > 0 {
			ratio = fmt.Sprintf("%.2fx", median(vals)/rw.target)
			vs = "target " + format(rw.target)
		}
		if rw.vs != "" {
			// In the row's unit: above 1 is slower than the peer for
			// µs/op, faster for records/s.
			mine, theirs := median(vals), median(convert(results[rw.vs], rw.unit, isMetric(rw.vs)))
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
// isMetric reports whether key names a b.ReportMetric value ("name unit")
// rather than a benchmark's ns/op.
func isMetric(key string) bool { return strings.Contains(key, " ") }

// A metric's values (key with a unit) are in their unit already.
func convert(ns []float64, unit string, metric bool) []float64 {
	out := make([]float64, len(ns))
	for i, v := range ns {
		switch unit {
		case "µs/op":
			out[i] = v / 1e3
		case "records/s", "requests/s":
			if metric {
				out[i] = v
			} else {
				out[i] = 1e9 / v
			}
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
