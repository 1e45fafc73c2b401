package e2e_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/testbed/fleet"
)

// TestInstallRetried: a desired state whose download fails (the registry
// cannot serve the bundle) is retried by the device with backoff, shown
// retrying in `fleetctl devices show` (attempt, reason, last error, next
// try), and installed once the registry serves the bundle again, with no
// new assignment.
func TestInstallRetried(t *testing.T) {
	e := startRollouts(t, 1, fleet.Options{RetryMin: 200 * time.Millisecond, RetryMax: 400 * time.Millisecond})
	ctx := t.Context()
	v2 := e.bundle("2.0.0", "")
	e.push(v2)
	// Cut the download: the registry's copy of the bundle goes away.
	blob := filepath.Join(e.f.Dir(), "fleetd", "registry", "bundles", v2.Manifest.Name, v2.Manifest.Version, "bundle")
	if err := os.Rename(blob, blob+".away"); err != nil {
		t.Fatal(err)
	}
	seqs, err := e.f.AssignAll(ctx, v2.ID())
	if err != nil {
		t.Fatal(err)
	}
	id := e.f.Agents[0].ID
	retrying := func(attempts int) func(api.Device) bool {
		return func(d api.Device) bool {
			if d.Reported == nil {
				return false
			}
			in := d.Reported.Install
			return in != nil && in.Seq == seqs[id] && in.Phase == protocol.PhaseRetrying && in.Attempt >= attempts
		}
	}
	e.f.WaitAll(t, id+" retrying its download a second time", retrying(2))
	show := e.fleetctl("devices", "show", id)
	if !strings.Contains(show, v2.ID()+": retrying (attempt ") || !strings.Contains(show, "download, next try ") ||
		!strings.Contains(show, "install error") {
		t.Errorf("devices show while retrying:\n%s", show)
	}

	if err := os.Rename(blob+".away", blob); err != nil {
		t.Fatal(err)
	}
	e.f.WaitAll(t, v2.ID()+" active after the retries", fleet.Active(v2.ID()))
	devs, err := e.f.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in := devs[0].Reported.Install
	if in.Seq != seqs[id] || in.Attempt < 3 || in.NextAttemptAt != nil {
		t.Errorf("install status after the retries %+v: want seq %d, attempt 3 or more", in, seqs[id])
	}
}
