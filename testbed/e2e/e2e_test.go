package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/testbed/fleet"
)

const (
	// devices is the fleet's size.
	devices = 20
	// offlinePredictions are made on every agent while the broker is cut.
	offlinePredictions = 10
	// version is the bundle rolled out.
	version = "5.0.0"
)

// TestEmbeddedBroker runs the scenario on fleetd's embedded broker and
// its file registry.
func TestEmbeddedBroker(t *testing.T) {
	scenario(t, fleet.Options{Broker: fleet.BrokerEmbedded, Registry: fleet.RegistryFiles})
}

// TestMosquittoMinIO runs the scenario with both external servers at
// once (to keep the suite short): mosquitto as the broker, configured
// from fleetd's generated files with devices provisioned by enrolment,
// and the registry on MinIO, from which the agents download with
// presigned URLs.
func TestMosquittoMinIO(t *testing.T) {
	scenario(t, fleet.Options{Broker: fleet.BrokerMosquitto, Registry: fleet.RegistryMinIO})
}

// scenario: 20 enrolled agents come online; a signed Silero VAD bundle is
// pushed and assigned to each, and every device reports it active; each
// agent answers predictions with it, and everything it recorded reaches
// fleetd. Then the broker connection is cut: fleetd sees every device go
// offline, the agents keep answering with the active version and their
// outboxes grow by every prediction, while fleetd receives nothing. Once
// the link is restored every buffered record is delivered exactly once:
// per device (also when the link flaps while the outboxes drain),
// fleetd's delivered count equals the records the agent appended, the stored record ids are exactly the agent's (distinct and
// without a gap), every prediction made offline is there once, and the
// outboxes end empty.
func scenario(t *testing.T, o fleet.Options) {
	ctx := t.Context()
	art := fleet.TestArtifacts(t)
	pub := fleet.TestPublisher(t)
	b := fleet.SileroBundle(t, t.TempDir(), version, fleet.SileroOptions{Publisher: pub, Artifacts: art})

	o.Devices = devices
	o.Artifacts = art
	o.TrustKeys = []string{pub.PublicKey}
	o.SampleRate = 1
	o.BatchRecords = 4 // several batches per agent
	o.MetricsInterval = 5 * time.Second
	f := fleet.Start(t, o)
	if h, err := f.API.Health(ctx); err != nil || h.Broker != map[fleet.BrokerKind]string{fleet.BrokerEmbedded: "embedded", fleet.BrokerMosquitto: "external"}[o.Broker] ||
		h.Registry != map[fleet.RegistryKind]string{fleet.RegistryFiles: "fs", fleet.RegistryMinIO: "s3"}[o.Registry] {
		t.Fatalf("fleetd health %+v, %v; want broker %s, registry %s", h, err, o.Broker, o.Registry)
	}
	f.WaitAll(t, "every device online and reporting", func(d api.Device) bool { return fleet.Online(d) && d.Reported != nil })
	devs, err := f.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range devs {
		if want := fleet.DefaultLabels(i); !maps.Equal(d.Labels, want) || d.Reported == nil || !maps.Equal(d.Reported.Labels, want) {
			t.Errorf("%s: inventory labels %v, reported %v; want %v", d.ID, d.Labels, d.Reported, want)
		}
	}
	if canary, err := f.API.Devices(ctx, "ring=canary"); err != nil || len(canary) != devices/10 {
		t.Errorf("selector ring=canary: %d devices, %v; want %d", len(canary), err, devices/10)
	}

	// Roll the bundle out to everyone.
	if err := f.Push(ctx, b); err != nil {
		t.Fatal(err)
	}
	seqs, err := f.AssignAll(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	f.WaitAll(t, b.ID()+" active on every device", fleet.Active(b.ID()))
	for _, a := range f.Agents {
		st, err := a.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Active == nil || st.Active.ID != b.ID() || st.Uplink == nil || st.Uplink.AcceptedSeq != seqs[a.ID] {
			t.Fatalf("%s: agent status active %v, uplink %+v; want %s at seq %d", a.ID, st.Active, st.Uplink, b.ID(), seqs[a.ID])
		}
	}
	if o.Registry == fleet.RegistryMinIO {
		d, err := f.API.Device(ctx, f.Agents[0].ID)
		if err != nil || d.Desired == nil || !strings.HasPrefix(d.Desired.Bundle.URL, "http://"+f.MinIO.Addr+"/") {
			t.Fatalf("desired state %+v, %v: want a presigned MinIO URL", d, err)
		}
	}

	// Online predictions reach fleetd.
	ids := map[string][]string{} // request ids per device, all of them
	predictAll(t, f, art, "online", 2, ids)
	drained(t, f, ids)

	// Cut the link: fleetd sees every device go, by its last will.
	if n := f.CutBroker(); n < devices {
		t.Fatalf("cut %d connections, want at least %d", n, devices)
	}
	f.WaitAll(t, "every device offline", fleet.Offline)
	eventually(t, "every agent's uplink disconnected", func() (bool, string) {
		for _, a := range f.Agents {
			st, err := a.Status()
			if err != nil || st.Uplink == nil || st.Uplink.Connected {
				return false, fmt.Sprintf("%s: %+v %v", a.ID, st.Uplink, err)
			}
		}
		return true, ""
	})
	// Counted once the broker has sent every last will (so it read its
	// last packet from every device) and every agent knows it is cut: a
	// record in flight at the cut is in the count, not a record received
	// while cut.
	before := deliveredCounts(t, f)
	buffered := map[string]int{}
	for _, a := range f.Agents {
		st, err := a.Status()
		if err != nil {
			t.Fatal(err)
		}
		buffered[a.ID] = st.Buffer.Records
	}
	start := time.Now()
	predictAll(t, f, art, "offline", offlinePredictions, ids)
	t.Logf("%d predictions on %d offline agents: %v", offlinePredictions*devices, devices, time.Since(start).Round(time.Millisecond))
	eventually(t, "every offline prediction in its agent's outbox", func() (bool, string) {
		for _, a := range f.Agents {
			st, err := a.Status()
			if err != nil {
				return false, err.Error()
			}
			if st.Buffer.Records < buffered[a.ID]+offlinePredictions || st.Buffer.Dropped != 0 {
				return false, fmt.Sprintf("%s: outbox %+v, had %d records before the cut", a.ID, st.Buffer, buffered[a.ID])
			}
		}
		return true, ""
	})
	if after := deliveredCounts(t, f); !maps.Equal(before, after) {
		t.Fatalf("fleetd received records while the broker was cut: before %v, after %v", before, after)
	}

	// Restore, with a flap: the link drops again while the first agents
	// back are draining (publishes in flight lose their PUBACK and are
	// sent again). Then everything buffered arrives, once.
	f.RestoreBroker()
	eventually(t, "half the agents reconnected", func() (bool, string) {
		open, _, _ := f.Proxy.Stats()
		return open >= devices/2, fmt.Sprintf("%d connections", open)
	})
	f.CutBroker()
	f.RestoreBroker()
	f.WaitAll(t, "every device online again", fleet.Online)
	drained(t, f, ids)
	f.WaitAll(t, b.ID()+" still active everywhere", fleet.Active(b.ID()))
}

// predictAll makes n predictions on every agent, all agents at once, and
// checks that each is answered by the bundle rolled out with Silero's
// output. It records the request ids in ids.
func predictAll(t *testing.T, f *fleet.Fleet, art fleet.Artifacts, phase string, n int, ids map[string][]string) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, a := range f.Agents {
		wg.Go(func() {
			for i := range n {
				id := fmt.Sprintf("%s-%s-%d", a.ID, phase, i)
				body, err := art.TensorRequest(id)
				if err != nil {
					t.Error(err)
					return
				}
				p, err := a.Predict(t.Context(), "silero-vad", body, false)
				if err != nil {
					t.Error(err)
					return
				}
				out, ok := p.Output("output")
				if p.ModelVersion != version || p.Bundle != "silero-vad@"+version || p.ID != id || !ok || math.Abs(out-fleet.SileroOutput) > 1e-4 {
					t.Errorf("%s: answer %+v (bundle %s), want silero-vad %s with output %v", a.ID, p, p.Bundle, version, fleet.SileroOutput)
					return
				}
				mu.Lock()
				ids[a.ID] = append(ids[a.ID], id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// drained waits until every agent's outbox is empty and fleetd counts as
// many delivered records for the device as the agent ever appended, then
// checks the records fleetd stored against the agent's: their ids are
// distinct and consecutive (outbox ids increase by one per record), as
// many as the agent appended, and every prediction request in ids is
// there exactly once.
func drained(t *testing.T, f *fleet.Fleet, ids map[string][]string) {
	t.Helper()
	ctx := t.Context()
	stored := map[string]*api.Records{}
	eventually(t, "every outbox drained into fleetd", func() (bool, string) {
		devs, err := f.Devices(ctx)
		if err != nil {
			return false, err.Error()
		}
		for i, a := range f.Agents {
			st, err := a.Status()
			if err != nil {
				return false, err.Error()
			}
			d := devs[i]
			if st.Buffer.Records != 0 || st.Buffer.Dropped != 0 || d.Records.Delivered != st.Buffer.Appended || d.Records.Held != d.Records.Delivered {
				return false, fmt.Sprintf("%s: outbox %+v, fleetd %+v", a.ID, st.Buffer, d.Records)
			}
			// The agent appends records of its own (events, health) at
			// any time, so what fleetd stores is compared with a count
			// that did not move while the records were read.
			r, err := f.API.Records(ctx, a.ID, client.RecordsQuery{Limit: 10000})
			if err != nil {
				return false, err.Error()
			}
			after, err := a.Status()
			if err != nil {
				return false, err.Error()
			}
			if after.Buffer.Appended != st.Buffer.Appended {
				return false, fmt.Sprintf("%s: appended %d records while fleetd's were read", a.ID, after.Buffer.Appended-st.Buffer.Appended)
			}
			got := make([]uint64, 0, len(r.Records))
			for _, rec := range r.Records {
				got = append(got, rec.ID)
			}
			slices.Sort(got)
			n := uint64(len(got))
			distinct := uint64(len(slices.Compact(slices.Clone(got))))
			if n == 0 || n != st.Buffer.Appended || distinct != n || got[n-1]-got[0]+1 != n {
				return false, fmt.Sprintf("%s: fleetd stored %d records (%d distinct ids, %s); the agent appended %d records with consecutive ids",
					a.ID, n, distinct, idRange(got), st.Buffer.Appended)
			}
			stored[a.ID] = r
		}
		return true, ""
	})
	for _, a := range f.Agents {
		r := stored[a.ID]
		seen := map[string]int{}
		for _, rec := range r.Records {
			if rec.Kind != protocol.RecordPrediction {
				continue
			}
			var p protocol.PredictionRecord
			if err := json.Unmarshal(rec.Payload, &p); err != nil {
				t.Fatalf("%s: prediction record %d: %v", a.ID, rec.ID, err)
			}
			if p.Model != "silero-vad@"+version || p.Code != 200 {
				t.Errorf("%s: prediction record %s", a.ID, rec.Payload)
			}
			seen[p.RequestID]++
		}
		for _, id := range ids[a.ID] {
			if seen[id] != 1 {
				t.Errorf("%s: prediction %s stored %d times, want once", a.ID, id, seen[id])
			}
		}
		if len(seen) != len(ids[a.ID]) {
			t.Errorf("%s: %d distinct predictions stored, %d made", a.ID, len(seen), len(ids[a.ID]))
		}
	}
	var dup uint64
	devs, err := f.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		dup += d.Records.Duplicates
	}
	var n int
	for _, r := range stored {
		n += len(r.Records)
	}
	t.Logf("drained: %d records delivered by %d devices, %d redeliveries deduplicated", n, len(stored), dup)
}

func deliveredCounts(t *testing.T, f *fleet.Fleet) map[string]uint64 {
	t.Helper()
	devs, err := f.Devices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, d := range devs {
		out[d.ID] = d.Records.Delivered
	}
	return out
}

// eventually polls cond every 50 ms until it holds, failing the test
// after fleet.WaitTimeout with cond's last word.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(fleet.WaitTimeout)
	for {
		ok, state := cond()
		if ok {
			t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last: %s", what, state)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(context.Cause(t.Context()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// idRange describes sorted ids.
func idRange(ids []uint64) string {
	if len(ids) == 0 {
		return "none"
	}
	return fmt.Sprintf("ids %d..%d", ids[0], ids[len(ids)-1])
}
