// Command fleetd is the edgefleet control plane daemon: device inventory,
// MQTT link (embedded broker or an external one), bundle registry and the
// HTTP API fleetctl drives. The daemon is package controlplane/fleetd;
// this is its command line. See docs/operations.md.
//
//	fleetd [--config FILE] [--data-dir DIR] [--http-listen ADDR] [--mqtt-listen ADDR]
//	       [--public-url URL] [--broker-external URL] [--log-level LEVEL] [--set KEY=VALUE]...
//	fleetd mosquitto-config --out DIR [--service-user _fleetd]...
//	fleetd version
//
// Exit codes: 0 stopped cleanly (or --help, version), 1 failed at run
// time (an address in use, a store that cannot be opened), 2 bad command
// line or configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/shared/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "mosquitto-config":
			return mosquittoConfig(args[1:], stdout, stderr)
		case "version":
			if len(args) > 1 {
				fmt.Fprintf(stderr, "fleetd: version takes no arguments, got %q\n", args[1])
				return 2
			}
			fmt.Fprintf(stdout, "fleetd %s (%s %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return 0
		}
	}
	fs := flag.NewFlagSet("fleetd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `fleetd: the edgefleet control plane

Usage:
  fleetd [flags]                        run the daemon
  fleetd mosquitto-config --out DIR [--service-user NAME]...
                                        write an external mosquitto's configuration
  fleetd version                        print the version

Exit codes: 0 stopped cleanly, 1 failed while running (an address in use,
a store that cannot be opened), 2 bad command line or configuration.

Flags:
`)
		fs.PrintDefaults()
	}
	configFile := fs.String("config", "", "YAML configuration file")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	// Flags that set one configuration key each, overriding the file.
	keys := []struct{ flag, key, usage string }{
		{"data-dir", "dataDir", "data directory (default " + fleetd.DefaultDataDir + ")"},
		{"http-listen", "http.listen", "HTTP API address (default " + fleetd.DefaultHTTPListen + ")"},
		{"public-url", "http.publicURL", "HTTP base URL as devices reach it (registry downloads)"},
		{"mqtt-listen", "broker.listen", "embedded MQTT broker address (default " + fleetd.DefaultMQTTListen + ")"},
		{"broker-external", "broker.external", "use this external MQTT 5 broker (tcp://host:1883) instead of the embedded one"},
	}
	vals := map[string]*string{}
	for _, k := range keys {
		vals[k.flag] = fs.String(k.flag, "", k.usage+" [config key "+k.key+"]")
	}
	insecure := fs.Bool("insecure-accept-any-key", false, "with no registry.trustedKeys, store pushed bundles without checking who signed them (INSECURE; logged loudly) [config key registry.insecureAcceptAnyKey]")
	var sets []string
	fs.Func("set", "set configuration KEY=VALUE, e.g. --set desired.lifetime=72h (repeatable)", func(s string) error {
		sets = append(sets, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "fleetd: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}

	cfg := &fleetd.Config{}
	if *configFile != "" {
		var err error
		if cfg, err = fleetd.LoadConfig(*configFile); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 2
		}
	}
	fail := false
	fs.Visit(func(f *flag.Flag) {
		for _, k := range keys {
			if k.flag == f.Name {
				if err := cfg.Set(k.key, *vals[k.flag]); err != nil {
					fmt.Fprintf(stderr, "%v (--%s)\n", err, k.flag)
					fail = true
				}
			}
		}
	})
	if *insecure {
		if err := cfg.Set("registry.insecureAcceptAnyKey", "true"); err != nil {
			fmt.Fprintf(stderr, "%v (--insecure-accept-any-key)\n", err)
			fail = true
		}
	}
	for _, s := range sets {
		key, val, ok := strings.Cut(s, "=")
		if !ok {
			fmt.Fprintf(stderr, "fleetd: --set %q: want KEY=VALUE\n", s)
			fail = true
		} else if err := cfg.Set(key, val); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			fail = true
		}
	}
	if fail {
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Announce = stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := fleetd.New(*cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		if errors.Is(err, fleetd.ErrConfig) {
			return 2
		}
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	return 0
}

func mosquittoConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetd mosquitto-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory to write edgefleet.conf, edgefleet.acl, edgefleet.passwd and service user passwords to")
	var users []string
	fs.Func("service-user", "MQTT service user, one per fleetd replica (default _fleetd; repeatable)", func(s string) error {
		users = append(users, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: fleetd mosquitto-config --out DIR [--service-user _fleetd-1]...")
		return 2
	}
	if err := fleetd.WriteMosquittoConfig(*out, users, stdout); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	return 0
}
