package main

// The demo's retraining trigger (docs/integrations.md, Retraining
// triggers): a CloudEvents receiver in the demo's own process on
// 127.0.0.1 (controlplane/notify/notifytest, built with the CloudEvents
// SDK), subscribed in the fleetd.yaml that stepFleetd starts fleetd with;
// after the bad version's rollback the demo prints the event it got.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/controlplane/notify/notifytest"
)

// eventsConfigFile is the fleetd configuration the demo writes, in the
// workspace.
const eventsConfigFile = "fleetd.yaml"

// eventSink is the demo's receiver of fleetd's events.
type eventSink struct {
	rcv *notifytest.Receiver
}

// startEvents starts the receiver, writes its signing secret
// (keys/events.secret) and fleetd.yaml subscribing it, and returns the
// fleetd arguments that read the file.
func (d *demo) startEvents() ([]string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	if err := os.WriteFile(filepath.Join(d.work, "keys", "events.secret"), []byte(secret+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing the events secret: %w", err)
	}
	rcv, err := notifytest.Start(key)
	if err != nil {
		return nil, fmt.Errorf("starting the CloudEvents receiver: %w", err)
	}
	d.events = &eventSink{rcv: rcv}
	cfg := fmt.Sprintf(`# fleetd's configuration, written by the demo (testbed/cmd/demo/events.go).
# The flags on fleetd's command line set the rest.
events:
  subscriptions:
    # The demo's own CloudEvents receiver, in its process: it checks the
    # webhook-signature (HMAC-SHA256 of id.timestamp.body) with the secret.
    - name: demo-receiver
      url: %s
      types: [%s, %s]
      secretFile: keys/events.secret
`, rcv.URL, notify.TypeGateBreached, notify.TypeRolledBack)
	if err := os.WriteFile(filepath.Join(d.work, eventsConfigFile), []byte(cfg), 0o644); err != nil {
		rcv.Close()
		return nil, fmt.Errorf("writing %s: %w", eventsConfigFile, err)
	}
	d.n.Say("%s subscribes a CloudEvents receiver that the demo runs on %s: fleetd will tell it of", eventsConfigFile, strings.TrimSuffix(rcv.URL, "/"))
	d.n.Say("gate breaches and rollbacks, signed with keys/events.secret (Standard Webhooks' webhook-signature).")
	return []string{"--config", eventsConfigFile}, nil
}

// closeEvents stops the receiver (cleanup).
func (d *demo) closeEvents() {
	if d.events != nil {
		d.events.rcv.Close()
		d.events = nil
	}
}

// showRollbackEvent waits for the rolled_back event of rollout id at the
// receiver and prints it, and what fleetctl events says of its delivery.
func (d *demo) showRollbackEvent(ctx context.Context, id string) error {
	if d.events == nil {
		return fmt.Errorf("no event receiver was started")
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	e, err := d.events.rcv.Wait(wctx, func(e cloudevents.Event) bool {
		return e.Type() == notify.TypeRolledBack && e.Subject() == id
	})
	if err != nil {
		if p := d.events.rcv.Problems(); len(p) > 0 {
			return fmt.Errorf("the receiver got no rollback event of %s (%v); it refused: %s", id, err, strings.Join(p, "; "))
		}
		return fmt.Errorf("the receiver got no rollback event of %s: %w", id, err)
	}
	var data notify.RollbackData
	if err := json.Unmarshal(e.Data(), &data); err != nil {
		return fmt.Errorf("the rollback event's data: %w", err)
	}
	d.n.Say("The receiver got fleetd's CloudEvent, its signature verified:")
	d.n.Out(fmt.Sprintf("  type %s, id %s, subject %s, source %s", e.Type(), e.ID(), e.Subject(), e.Source()))
	d.n.Out(fmt.Sprintf("  data: bundle %s, automatic %t, gate %s, %d devices told to roll back", data.Bundle, data.Automatic, data.Gate, data.DevicesSent))
	if _, err := d.fleetctl(ctx, "events", "--limit", "4"); err != nil {
		return err
	}
	if !data.Automatic || data.Rollout != id {
		return fmt.Errorf("the rollback event %s says automatic %t, rollout %q", e.ID(), data.Automatic, data.Rollout)
	}
	return nil
}
