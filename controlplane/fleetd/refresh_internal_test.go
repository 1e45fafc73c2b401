package fleetd

import (
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

func TestNeedsRefresh(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	ds := &protocol.DesiredState{Seq: 5, IssuedAt: t0, ExpiresAt: t0.Add(7 * day)}
	applied := &protocol.ReportedState{AppliedSeq: 5}
	older := &protocol.ReportedState{AppliedSeq: 4}
	for _, tc := range []struct {
		name string
		dev  inventory.Device
		at   time.Time
		want bool
	}{
		{"no desired state", inventory.Device{}, t0.Add(30 * day), false},
		{"fresh, not applied", inventory.Device{Desired: ds}, t0.Add(23 * time.Hour), false},
		{"a day old, never reported", inventory.Device{Desired: ds}, t0.Add(day), true},
		{"a day old, older seq applied", inventory.Device{Desired: ds, Reported: older}, t0.Add(day), true},
		{"a day old, applied", inventory.Device{Desired: ds, Reported: applied}, t0.Add(day), false},
		{"applied, 5 days old", inventory.Device{Desired: ds, Reported: applied}, t0.Add(5 * day), false},
		{"applied, a day before expiry", inventory.Device{Desired: ds, Reported: applied}, t0.Add(6 * day), true},
		{"applied, expired", inventory.Device{Desired: ds, Reported: applied}, t0.Add(8 * day), true},
	} {
		if got := needsRefresh(&tc.dev, tc.at, day); got != tc.want {
			t.Errorf("%s: needsRefresh = %v, want %v", tc.name, got, tc.want)
		}
	}
	for ra, want := range map[time.Duration]time.Duration{day: time.Hour, 48 * time.Hour: time.Hour, 24 * time.Second: time.Second, time.Second: time.Second, time.Hour: 150 * time.Second} {
		if got := refreshCheckInterval(ra); got != want {
			t.Errorf("refreshCheckInterval(%s) = %s, want %s", ra, got, want)
		}
	}
}
