package cli

import (
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

func TestInstallText(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	next := now.Add(42 * time.Second)
	b := protocol.BundleID{Name: "vad", Version: "2.0.0"}
	for _, tc := range []struct {
		name string
		in   protocol.InstallStatus
		want string
	}{
		{"succeeded", protocol.InstallStatus{Seq: 7, Bundle: b, Phase: protocol.PhaseSucceeded, Attempt: 1},
			"seq 7 vad@2.0.0: succeeded (attempt 1)"},
		{"retrying", protocol.InstallStatus{Seq: 7, Bundle: b, Phase: protocol.PhaseRetrying, Attempt: 2, Reason: "download", NextAttemptAt: &next},
			"seq 7 vad@2.0.0: retrying (attempt 2, download, next try " + formatTime(next) + " (in 42s))"},
		{"failed for good", protocol.InstallStatus{Seq: 7, Bundle: b, Phase: protocol.PhaseFailed, Attempt: 1, Reason: "signature"},
			"seq 7 vad@2.0.0: failed (attempt 1, signature, not retried until the desired state changes)"},
		{"older agent", protocol.InstallStatus{Seq: 7, Bundle: b, Phase: protocol.PhaseDownloading},
			"seq 7 vad@2.0.0: downloading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := installText(&tc.in, now); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
