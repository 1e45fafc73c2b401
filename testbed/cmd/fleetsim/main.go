// Command fleetsim runs a fleet of simulated devices in one process
// against a real fleetd, to see how fleetd and the MQTT link behave at
// fleet scale.
//
// Every simulated device is a real edge agent (package agent, through
// testbed/fleet): its own data directory with the bundle store and a
// bbolt outbox, its own unix socket serving the Open Inference Protocol,
// its own MQTT uplink with its enrolled credentials. The only thing the
// devices share is the loaded model (agent.WithModelCache: one ONNX
// Runtime session and pre-processor per bundle for the whole process);
// downloads, signature checks, unpacking, smoke-test bookkeeping,
// telemetry records and their delivery are per device and real.
//
// fleetsim enrols the devices, starts them, rolls a signed Silero VAD
// bundle out to all of them, then drives predictions at a given rate per
// device through each device's socket for a given duration, printing
// progress, and ends with a summary: time for all devices to connect and
// to take the bundle, predictions and records delivered per second,
// fleetd's ingest counters, whether every record arrived exactly once,
// and the process's memory.
//
// Usage (from inside the checkout, after make deps wasm):
//
//	go run ./testbed/cmd/fleetsim -devices 1000 -duration 1m
//	go run ./testbed/cmd/fleetsim -devices 200 -rate 5 -dir /dev/shm/fleetsim   # outboxes on tmpfs
//	go run ./testbed/cmd/fleetsim -server http://fleetd:8080 -token-file op.token -enrol-token-file enrol.token
//
// See docs/testbed.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	fs := flag.NewFlagSet("fleetsim", flag.ContinueOnError)
	var c simConfig
	fs.IntVar(&c.Devices, "devices", 1000, "simulated devices (real agents in this process)")
	fs.DurationVar(&c.Duration, "duration", time.Minute, "how long to drive predictions once the bundle is active everywhere")
	fs.Float64Var(&c.Rate, "rate", 1, "predictions per second per device (0: none)")
	fs.Float64Var(&c.SampleRate, "sample", 1, "buffer.predictionSampleRate: fraction of predictions recorded and sent to fleetd")
	fs.BoolVar(&c.Raw, "raw", false, "send 16-bit PCM through the bundle's WASM pre-processor instead of tensors")
	fs.DurationVar(&c.MetricsInterval, "metrics-interval", 10*time.Second, "how often each agent appends its metrics window")
	fs.IntVar(&c.BatchRecords, "batch", 0, "records per telemetry batch (0: the uplink's default, 256)")
	fs.DurationVar(&c.Progress, "progress", 5*time.Second, "progress line interval (0: none)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 2*time.Minute, "how long to wait after the load for every outbox to drain")
	fs.StringVar(&c.Dir, "dir", "", "directory for fleetd's and the agents' data (default: a temporary directory, removed at the end; a directory under /dev/shm puts the outboxes on tmpfs)")
	fs.BoolVar(&c.Keep, "keep", false, "keep -dir's contents at the end")
	fs.StringVar(&c.Broker, "broker", "embedded", "in-process fleetd's broker: embedded or mosquitto")
	fs.StringVar(&c.Registry, "registry", "files", "in-process fleetd's registry: files or minio")
	fs.StringVar(&c.Server, "server", "", "use the fleetd at this URL instead of starting one in process")
	fs.StringVar(&c.TokenFile, "token-file", "", "with -server: file holding the operator token")
	fs.StringVar(&c.EnrolTokenFile, "enrol-token-file", "", "with -server: file holding an enrolment token")
	fs.StringVar(&c.Prefix, "prefix", "sim-", "device id prefix")
	fs.StringVar(&c.Version, "version", "5.0.0", "version of the Silero VAD bundle built and rolled out")
	fs.BoolVar(&c.JSON, "json", false, "print the summary as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end of the load to this file")
	logLevel := fs.String("log-level", "warn", "log level of fleetd and the agents (debug, info, warn, error), on stderr")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: fleetsim [flags]\n\nRuns -devices real edge agents in this process against a real fleetd (in process, or -server),\nrolls a signed Silero VAD bundle out to them, drives predictions and reports what fleetd received.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "fleetsim: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "fleetsim: -log-level: %v\n", err)
		return 2
	}
	c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := c.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "fleetsim: %v\n", err)
		return 2
	}
	c.MemProfile = *memProfile
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleetsim: -cpuprofile: %v\n", err)
			return 2
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			fmt.Fprintf(os.Stderr, "fleetsim: -cpuprofile: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := run(ctx, c, os.Stdout)
	if s != nil {
		if perr := s.print(os.Stdout, c.JSON); perr != nil {
			fmt.Fprintf(os.Stderr, "fleetsim: %v\n", perr)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleetsim: %v\n", err)
		return 1
	}
	return 0
}
