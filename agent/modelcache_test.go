package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// TestModelCache runs three agents in one process on one ModelCache: the
// same bundle is loaded once and served by all of them, another version
// is loaded beside it, and a model is closed when its last agent lets go
// of it.
func TestModelCache(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	cache := NewModelCache()
	t.Cleanup(func() { cache.Close() })
	ctx := t.Context()

	var agents []*running
	for range 3 {
		agents = append(agents, startAgent(t, newSetup(t, ""), WithModelCache(cache)))
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() {
			if _, err := a.Install(ctx, v1.path, v1.sig, InstallOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if n, loads := cache.Stats(); n != 1 || loads != 1 {
		t.Fatalf("after three installs of one bundle: %d models, %d loads; want 1, 1", n, loads)
	}
	check := func(a *running, version string) {
		t.Helper()
		r := infer(t, a.client, tensorRequest(t, ""), false)
		if r.ModelVersion != version || !near(r.output(t), sileroOutput) {
			t.Fatalf("answer %+v, want %s", r, version)
		}
		r = infer(t, a.client, pcmFrame(t), true)
		if r.ModelVersion != version || !near(r.output(t), sileroOutput) {
			t.Fatalf("raw answer %+v, want %s", r, version)
		}
	}
	for _, a := range agents {
		check(a, "1.0.0")
	}

	// One agent moves on: both versions are held.
	if _, err := agents[0].Install(ctx, v2.path, v2.sig, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	if n, loads := cache.Stats(); n != 2 || loads != 2 {
		t.Fatalf("after an upgrade: %d models, %d loads; want 2, 2", n, loads)
	}
	check(agents[0], "2.0.0")
	check(agents[1], "1.0.0")

	// Closing an agent keeps the model the others serve.
	agents[1].stop(t)
	check(agents[2], "1.0.0")
	if n, _ := cache.Stats(); n != 2 {
		t.Fatalf("after closing one of two agents on 1.0.0: %d models, want 2", n)
	}
	// Its rollback takes v1 from the cache again (v1 is still held by
	// agents[2]): no new load.
	if _, err := agents[0].Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	check(agents[0], "1.0.0")
	if n, loads := cache.Stats(); n != 1 || loads != 2 {
		t.Fatalf("after the rollback: %d models, %d loads; want 1 (v2 released), 2", n, loads)
	}
	agents[0].stop(t)
	agents[2].stop(t)
	if n, _ := cache.Stats(); n != 0 {
		t.Fatalf("after closing every agent: %d models held", n)
	}
	if err := cache.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestUplinkConfigOption checks that WithUplinkConfig sees the settings
// the configuration gave and that its changes reach the uplink: one
// record per telemetry batch.
func TestUplinkConfigOption(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	const password = "device-secret-0002"
	f := newFleet(t, "test-device", password)
	pw := filepath.Join(t.TempDir(), "mqtt.password")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSetup(t, fmt.Sprintf("uplink:\n  broker: tcp://%s\n  username: test-device\n  passwordFile: %s\n", f.addr, pw))
	var seen uplink.Config
	a := startAgent(t, s, WithUplinkConfig(func(c *uplink.Config) {
		seen = *c
		c.BatchRecords = 1
	}))
	if seen.DeviceID != "test-device" || seen.Password != password || len(seen.Brokers) != 1 || seen.StateDir == "" {
		t.Fatalf("the tune function saw %+v", seen)
	}
	if _, err := a.Install(t.Context(), v1.path, v1.sig, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		infer(t, a.client, tensorRequest(t, fmt.Sprint("batch-", i)), false)
	}
	f.until(t, "five predictions, one per batch", func() bool {
		n := 0
		for _, r := range f.records {
			if r.Kind == protocol.RecordPrediction {
				n++
			}
		}
		return n == 5 && len(f.batches) >= 5
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, n := range f.batches {
		if n != 1 {
			t.Errorf("telemetry batch %d has %d records, want 1", i, n)
		}
	}
}
