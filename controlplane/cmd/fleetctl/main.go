// Command fleetctl is the edgefleet command-line tool: it builds, signs
// and verifies model bundles and drives the control plane. The commands
// live in package controlplane/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgefleet/edgefleet/controlplane/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
