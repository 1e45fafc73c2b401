package agent

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// TestProcessInstallRetried runs the edge-agent binary against mosquitto,
// with fleetd's side played by a paho client: a desired state whose
// download the registry refuses (503) is retried with backoff, reported
// retrying with its attempt, reason and next try, and installed once the
// registry serves again, without a new desired state; one whose
// signature does not verify fails for good, not retried.
func TestProcessInstallRetried(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	reg := newRegistry(t, v1, v2)
	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int64
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			refused.Add(1)
			http.Error(w, "registry restarting", http.StatusServiceUnavailable)
			return
		}
		http.Redirect(w, r, reg.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(flaky.Close)
	ref := func(b built) protocol.BundleRef {
		r := reg.ref(t, b)
		r.URL, r.SigURL = flaky.URL+"/"+filepath.Base(b.path), flaky.URL+"/"+filepath.Base(b.sig)
		return r
	}

	f, s := newUplinkSetup(t, "  retryMin: 2s\n  retryMax: 4s\n")
	d := startDaemon(t, s)
	d.waitReady(t, s)
	f.until(t, "online status", func() bool { return f.status != nil && f.status.State == protocol.StateOnline })

	if err := f.PublishDesired(desired(1, protocol.ActionInstall, ref(v1))); err != nil {
		t.Fatal(err)
	}
	retries := func() (n int) {
		for _, e := range f.events {
			if e.Type == protocol.EventInstallRetrying && e.Seq == 1 && e.Reason == ReasonDownload {
				n++
			}
		}
		return n
	}
	f.until(t, "two install.retrying events and the device reporting retrying", func() bool {
		in := f.reported.Install
		return retries() >= 2 && in != nil && in.Seq == 1 && in.Phase == protocol.PhaseRetrying
	})
	f.mu.Lock()
	in := *f.reported.Install
	f.mu.Unlock()
	if in.Attempt < 2 || in.Reason != ReasonDownload || in.NextAttemptAt == nil || in.Error == "" {
		t.Errorf("reported while retrying: %+v", in)
	}
	down.Store(false)
	f.until(t, "1.0.0 installed by a retry", func() bool {
		r := f.reported
		return r.Active != nil && r.Active.ID() == "silero-vad@1.0.0" && r.Install != nil && r.Install.Phase == protocol.PhaseSucceeded
	})
	if refused.Load() < 2 {
		t.Errorf("the registry refused %d requests, want 2 or more", refused.Load())
	}

	// A signature that does not verify (v1's for v2) is final.
	bad := ref(v2)
	bad.SigURL = ref(v1).SigURL
	if err := f.PublishDesired(desired(2, protocol.ActionInstall, bad)); err != nil {
		t.Fatal(err)
	}
	f.until(t, "seq 2 failed for good", func() bool {
		in := f.reported.Install
		return in != nil && in.Seq == 2 && in.Phase == protocol.PhaseFailed
	})
	f.mu.Lock()
	in = *f.reported.Install
	n := retries()
	for _, e := range f.events {
		if e.Type == protocol.EventInstallRetrying && e.Seq == 2 {
			t.Errorf("seq 2 retried: %+v", e)
		}
	}
	f.mu.Unlock()
	if in.Reason != ReasonSignature || in.NextAttemptAt != nil || in.Attempt != 1 {
		t.Errorf("reported after the bad signature: %+v", in)
	}
	d.stop(t)
	if n < 2 {
		t.Errorf("%d retries of seq 1", n)
	}
}
