package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestEventsConfig: the fleetd.yaml the demo writes is a valid fleetd
// configuration whose subscription reaches the demo's receiver with a
// signature it accepts.
func TestEventsConfig(t *testing.T) {
	work := t.TempDir()
	if err := os.Mkdir(filepath.Join(work, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	var out, tr bytes.Buffer
	d := &demo{work: work, n: plainNarrator(&out, &tr)}
	args, err := d.startEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer d.closeEvents()
	if strings.Join(args, " ") != "--config fleetd.yaml" || !strings.Contains(out.String(), "CloudEvents receiver") {
		t.Fatalf("args %v, narration %q", args, out.String())
	}
	cfg, err := fleetd.LoadConfig(filepath.Join(work, eventsConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = filepath.Join(work, "fleetd-data")
	cfg.HTTP.Listen, cfg.Broker.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Registry.InsecureAcceptAnyKey = true
	srv, err := fleetd.New(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	run := testenv.Start(srv.Run)
	defer run.Stop(20 * time.Second)
	data, _ := json.Marshal(notify.RollbackData{Rollout: "ro-1", Bundle: "silero-vad@5.0.1", Automatic: true, Gate: "latencyP95"})
	if err := srv.Events().Add(notify.Event{ID: "ro-1-9", Type: notify.TypeRolledBack, Source: srv.Events().Source("rollouts"),
		Subject: "ro-1", Time: time.Now(), Bundles: []string{"silero-vad@5.0.1"}, Data: data}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, err := d.events.rcv.Wait(ctx, func(e cloudevents.Event) bool { return e.ID() == "ro-1-9" })
	if err != nil {
		t.Fatalf("%v; receiver problems %v", err, d.events.rcv.Problems())
	}
	if e.Subject() != "ro-1" {
		t.Errorf("event %s", e)
	}
}
