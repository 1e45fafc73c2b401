// Command demo is `make demo`: edgefleet end to end on one machine, with
// the real binaries.
//
// It generates a publisher key, builds, signs and verifies the Silero VAD
// bundle, starts fleetd on embedded defaults (loopback ports it picks),
// enrols a handful of devices and starts an edge-agent process for each
// (own configuration, data directory and labels), pushes the bundle and
// rolls it out in waves. Then it streams synthetic audio through every
// agent's inference API (a noisier room on some devices than on others),
// builds a deliberately bad version whose pre-processor is slow, rolls it
// out, and shows the canary breaching the latency gate and fleetd rolling
// every device back on its own. It narrates each step in plain words with
// the fleetctl commands it runs, ends with a summary of what happened and
// where the data lives, and stops everything it started when it ends,
// fails or is interrupted.
//
// Usage (from the checkout, after make build):
//
//	demo [--agents N] [--bake D] [--workdir DIR] [--plain]
//
// Exit status: 0 when every step did what it says, 1 when one failed, 2
// for a command-line mistake, 130 when interrupted (SIGINT), 143 when
// terminated (SIGTERM, SIGHUP).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/term"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errInterrupted and errTerminated end the demo on a signal.
var (
	errInterrupted = errors.New("interrupted")
	errTerminated  = errors.New("terminated")
)

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.StringVar(&cfg.Repo, "repo", "", "the edgefleet checkout (default: found from the working directory)")
	fs.StringVar(&cfg.Bin, "bin", "", "directory with fleetd, edge-agent and fleetctl (default REPO/bin)")
	fs.StringVar(&cfg.Work, "workdir", "", "workspace to create, must not exist (default REPO/.cache/demo/TIME; the 3 latest runs are kept)")
	fs.IntVar(&cfg.Agents, "agents", 5, "edge agents to run, 3 to 8")
	fs.DurationVar(&cfg.Bake, "bake", 5*time.Second, "bake time of each rollout wave")
	plain := fs.Bool("plain", false, "plain output, no spinner or colours, even on a terminal")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: demo [flags]\n\nRuns edgefleet end to end on this machine with the real binaries (see make demo).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if cfg.Agents < 3 || cfg.Agents > len(fleetPlan) {
		fmt.Fprintf(stderr, "demo: --agents must be 3 to %d, got %d\n", len(fleetPlan), cfg.Agents)
		return 2
	}
	if cfg.Bake < 0 || cfg.Bake > 10*time.Minute {
		fmt.Fprintf(stderr, "demo: --bake must be 0 to 10m, got %v\n", cfg.Bake)
		return 2
	}
	if err := cfg.resolvePaths(); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}
	cfg.Out = stdout
	if f, ok := stdout.(*os.File); ok && !*plain && term.IsTerminal(int(f.Fd())) {
		cfg.TTY = true
		cfg.Color = os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
		cfg.Width = func() int {
			w, _, err := term.GetSize(int(f.Fd()))
			if err != nil {
				return 0
			}
			return w
		}
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ctx, stopTimeout := context.WithTimeoutCause(ctx, *timeout, fmt.Errorf("the demo took longer than --timeout %v", *timeout))
	defer stopTimeout()

	d, err := newDemo(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		first := true
		for sig := range sigs {
			if first {
				first = false
				cause := errInterrupted
				if sig != os.Interrupt {
					cause = errTerminated
				}
				cancel(cause)
				continue
			}
			// A second signal while stopping: no more waiting.
			d.sup.KillAll()
		}
	}()

	err = d.Run(ctx)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errInterrupted):
		return 130
	case errors.Is(err, errTerminated):
		return 143
	default:
		return 1
	}
}

// resolvePaths finds the checkout and the binaries and makes every path
// absolute.
func (c *Config) resolvePaths() error {
	if c.Repo == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		repo, err := findRepo(wd)
		if err != nil {
			return err
		}
		c.Repo = repo
	}
	var err error
	if c.Repo, err = filepath.Abs(c.Repo); err != nil {
		return err
	}
	if c.Bin == "" {
		c.Bin = filepath.Join(c.Repo, "bin")
	}
	if c.Bin, err = filepath.Abs(c.Bin); err != nil {
		return err
	}
	if c.Work != "" {
		if c.Work, err = filepath.Abs(c.Work); err != nil {
			return err
		}
	}
	return nil
}

// findRepo walks up from dir to the edgefleet module's root.
func findRepo(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && isEdgefleetModule(b) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no edgefleet checkout at or above %s: run the demo from the checkout (make demo) or pass --repo", dir)
		}
	}
}

func isEdgefleetModule(gomod []byte) bool {
	for line := range splitLines(gomod) {
		if line == "module github.com/edgefleet/edgefleet" {
			return true
		}
	}
	return false
}
