// Command edge-agent is the edgefleet edge agent: it serves the device's
// models over the Open Inference Protocol on a unix socket, installs signed
// bundles safely and reports to fleetd over MQTT. See docs/agent.md.
//
//	edge-agent [run] [--config FILE]      the daemon (systemd: Type=notify)
//	edge-agent install [--sig SIG] FILE|URL
//	edge-agent rollback
//	edge-agent status [-o text|json]
//	edge-agent predict --bundle FILE (--request REQUEST.json | --raw FILE) [--key PUB]
//	edge-agent version
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
