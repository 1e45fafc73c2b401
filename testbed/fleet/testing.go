package fleet

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// WaitTimeout bounds WaitAll.
const WaitTimeout = 90 * time.Second

// Start is New for tests: the artifacts default to TestArtifacts, the
// logs of fleetd and every agent are kept (their last 256 KiB are printed
// if the test fails), and the fleet is closed when the test ends.
func Start(tb testing.TB, o Options) *Fleet {
	tb.Helper()
	if o.Artifacts.Root == "" {
		o.Artifacts = TestArtifacts(tb)
	}
	logs := &tailBuffer{max: 256 << 10}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	f, err := New(context.Background(), o)
	if err != nil {
		tb.Fatalf("starting the fleet: %v\nlogs:\n%s", err, logs.String())
	}
	tb.Cleanup(func() {
		if err := f.Close(); err != nil {
			tb.Errorf("closing the fleet: %v", err)
		}
		if tb.Failed() {
			tb.Logf("fleet logs (tail):\n%s", logs.String())
			if f.Mosquitto != nil {
				tb.Logf("mosquitto log (tail):\n%s", f.Mosquitto.Log())
			}
		}
	})
	return f
}

// WaitAll polls fleetd's devices API until cond holds for every device of
// the fleet, failing the test after WaitTimeout with the devices that
// were not there.
func (f *Fleet) WaitAll(tb testing.TB, what string, cond func(d api.Device) bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	start := time.Now()
	if err := f.Wait(ctx, cond); err != nil {
		tb.Fatalf("waiting for %s: %v", what, err)
	}
	tb.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
}

// Online is a WaitAll condition: fleetd has the device online.
func Online(d api.Device) bool { return d.Status.Online }

// Offline is a WaitAll condition: fleetd has the device offline.
func Offline(d api.Device) bool { return !d.Status.Online }

// Active returns a WaitAll condition: the device is online and reports
// bundle ("name@version") active after a successful install.
func Active(bundle string) func(api.Device) bool {
	return func(d api.Device) bool {
		r := d.Reported
		return d.Status.Online && r != nil && r.Active != nil && r.Active.ID() == bundle &&
			r.Install != nil && r.Install.Phase == "succeeded" && d.Desired != nil && r.AppliedSeq == d.Desired.Seq
	}
}
