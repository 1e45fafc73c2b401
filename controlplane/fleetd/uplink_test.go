package fleetd_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// installer is the agent side of an install for the uplink: it
// downloads the bundle from the desired state's URLs and verifies and
// unpacks it with the agent's own code path (bundle.VerifyAndUnpack
// against the publisher's key), then reports it active.
type installer struct {
	t     testing.TB
	trust string // public key file
	dir   string

	mu     sync.Mutex
	active *protocol.BundleID
}

func (a *installer) Apply(ctx context.Context, d *protocol.DesiredState, progress uplink.ProgressFunc) error {
	progress(protocol.PhaseDownloading, nil)
	dir := filepath.Join(a.dir, fmt.Sprint(d.Seq))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	bpath, spath := filepath.Join(dir, "b.bundle"), filepath.Join(dir, "b.bundle.sig")
	for _, f := range []struct{ url, path string }{{d.Bundle.URL, bpath}, {d.Bundle.SigURL, spath}} {
		resp, err := http.Get(f.url)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s %v", f.url, resp.Status, err)
		}
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			return err
		}
	}
	progress(protocol.PhaseVerifying, nil)
	trust, err := bundle.LoadTrustRoot(a.trust)
	if err != nil {
		return err
	}
	m, err := bundle.VerifyAndUnpack(ctx, bpath, spath, trust, filepath.Join(dir, "unpacked"), bundle.Limits{})
	if err != nil {
		return uplink.WithReason("verify", err)
	}
	a.mu.Lock()
	a.active = &protocol.BundleID{Name: m.Name, Version: m.Version}
	a.mu.Unlock()
	return nil
}

func (a *installer) Reported() protocol.ReportedState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return protocol.ReportedState{AgentVersion: "0.1.0", Labels: map[string]string{"hw": "sim"}, Active: a.active, Provider: "cpu"}
}

// TestAgentUplink connects the agent's real uplink (agent/uplink, with its
// bbolt outbox) to fleetd: status, reported state, outbox records drained
// and counted once, and a bundle assigned, downloaded, verified and
// reported active.
func TestAgentUplink(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, baseConfig(t))
	e, err := ts.api.Enroll(ctx, ts.enrolTok, "edge-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	var wg sync.WaitGroup
	for w := range 10 { // concurrent appends share fsyncs (group commit)
		wg.Go(func() {
			for i := range 30 {
				if _, err := ob.Append(ctx, protocol.RecordMetrics, fmt.Appendf(nil, `{"window":"1m","requests":%d}`, w*30+i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if _, err := uplink.AppendEvent(ctx, ob, protocol.Event{Type: protocol.EventAgentStarted}); err != nil {
		t.Fatal(err)
	}
	pub := testPublisher(t)
	agent := &installer{t: t, trust: pub.publicKey(), dir: t.TempDir()}
	up, err := uplink.New(uplink.Config{DeviceID: "edge-1", Brokers: e.Brokers, Username: e.Username, Password: e.Password,
		StateDir: filepath.Join(dir, "uplink"), ReportDebounce: 20 * time.Millisecond, MinBackoff: 50 * time.Millisecond},
		agent, ob, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- up.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
	}()

	testenv.EventuallyState(t, "the outbox drained into fleetd", func() (bool, string) {
		r, err := ts.api.Records(ctx, "edge-1", client.RecordsQuery{Limit: 1})
		if err != nil {
			return false, err.Error()
		}
		return r.Stats.Delivered == 301 && ob.Stats().Records == 0, fmt.Sprintf("%+v, outbox %+v", r.Stats, ob.Stats())
	})
	ts.push(t, pub, "vad", "1.2.0", 32<<10)
	a, err := ts.api.Assign(ctx, "edge-1", "vad@1.2.0", "")
	if err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyState(t, "the agent reporting vad@1.2.0 active", func() (bool, string) {
		dev, err := ts.api.Device(ctx, "edge-1")
		if err != nil || dev.Reported == nil {
			return false, fmt.Sprint(err)
		}
		r := dev.Reported
		ok := dev.Status.Online && r.AppliedSeq == a.Desired.Seq && r.Active != nil && r.Active.ID() == "vad@1.2.0" &&
			r.Install != nil && r.Install.Phase == protocol.PhaseSucceeded && r.Labels["hw"] == "sim"
		return ok, fmt.Sprintf("online %v, reported %+v install %+v", dev.Status.Online, r, r.Install)
	})
	// The install events arrive as records too.
	testenv.EventuallyState(t, "install events", func() (bool, string) {
		r, err := ts.api.Records(ctx, "edge-1", client.RecordsQuery{Kind: "event"})
		if err != nil {
			return false, err.Error()
		}
		types := map[string]bool{}
		for _, rec := range r.Records {
			ev, err := protocol.DecodeEvent(rec.Payload)
			if err != nil {
				return false, err.Error()
			}
			types[string(ev.Type)] = true
		}
		return types["agent.started"] && types["install.succeeded"], fmt.Sprint(types)
	})
}
