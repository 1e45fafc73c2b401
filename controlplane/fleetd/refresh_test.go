package fleetd_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
)

// TestDesiredRefresh moves fleetd's clock forward and checks that the
// refresh loop re-issues a desired state the device has not applied once
// it is refreshAfter old, and any desired state shortly before it
// expires, each time with a new seq, a fresh expiry and working URLs.
func TestDesiredRefresh(t *testing.T) {
	ctx := context.Background()
	clk := cptest.NewClock(time.Now())
	cfg := baseConfig(t)
	cfg.Now = clk.Now
	cfg.Desired.Lifetime = fleetd.Duration(time.Hour)
	cfg.Desired.RefreshAfter = fleetd.Duration(24 * time.Second) // checked every second
	ts := startServer(t, cfg)
	pw := ts.enroll(t, "dev-1", nil)
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	d.subscribeDesired()
	ts.push(t, testPublisher(t), "vad", "1.0.0", 8<<10)
	a, err := ts.api.Assign(ctx, "dev-1", "vad@1.0.0", "")
	if err != nil {
		t.Fatal(err)
	}
	first := d.nextDesired(0)

	// Not applied, 25s old: re-issued.
	clk.Advance(25 * time.Second)
	second := d.nextDesired(first.Seq)
	if second.Seq != a.Desired.Seq+1 || !second.IssuedAt.After(first.IssuedAt) || second.ExpiresAt.Sub(second.IssuedAt) != time.Hour ||
		second.Bundle.URL == first.Bundle.URL || second.Action != first.Action {
		t.Fatalf("re-issued %+v after %+v", second, first)
	}
	fetch(t, second.Bundle.URL) // valid at fleetd's (moved) time

	// Applied: left alone until it nears expiry, then re-issued.
	d.report(second.Seq, nil)
	clk.Advance(time.Hour - 20*time.Second) // 20s left, below refreshAfter
	third := d.nextDesired(second.Seq)
	if third.Seq != second.Seq+1 || third.Bundle.ID() != "vad@1.0.0" {
		t.Fatalf("near expiry: %+v", third)
	}
	dev, err := ts.api.Device(ctx, "dev-1")
	if err != nil || dev.Desired.Seq < third.Seq {
		t.Fatalf("inventory desired = %+v, %v", dev.Desired, err)
	}
}
