package uplink

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

func TestDrainInOrder(t *testing.T) {
	b := startBroker(t)
	f := newFleetd(t, b.URL(), fleetdUser)
	cfg := testConfig(t, b.URL())
	cfg.BatchRecords = 100
	r := newRig(t, cfg)

	// A backlog from before the connection: predictions with an event
	// every 100 records, and a few records of other kinds.
	var want []uint64
	for i := range 1000 {
		if i%100 == 50 {
			id, err := AppendEvent(context.Background(), r.ob, protocol.Event{Type: protocol.EventProviderFallback, Message: "cuda unavailable"})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, id)
			continue
		}
		kind := protocol.RecordPrediction
		if i%100 == 99 {
			kind = protocol.RecordMetrics
		}
		want = append(want, r.appendRecord(kind, predictionPayload(i)))
	}
	u := r.start()
	testenv.Eventually(t, "the outbox to drain", func() bool { return r.ob.Stats().Records == 0 })
	testenv.Eventually(t, "fleetd to receive every record", func() bool { return len(dedup(f.recordIDs())) == len(want) })

	// In order, each once (nothing failed, so no duplicates either).
	if err := equalIDs(f.recordIDs(), want); err != nil {
		t.Fatalf("received ids: %v", err)
	}
	batches, compressed := f.batches()
	if compressed == 0 {
		t.Errorf("none of %d batches was compressed", len(batches))
	}
	for _, bt := range batches {
		if len(bt.Records) > cfg.BatchRecords || bt.DeviceID != devID {
			t.Errorf("batch of %d records for %q", len(bt.Records), bt.DeviceID)
		}
		for _, rec := range bt.Records {
			if rec.Kind != protocol.RecordPrediction && rec.Kind != protocol.RecordMetrics {
				t.Errorf("record %d of kind %q", rec.ID, rec.Kind)
			}
		}
	}
	evs := f.eventsOf(protocol.EventProviderFallback)
	if len(evs) != 10 || evs[0].Message != "cuda unavailable" || evs[0].DeviceID != devID {
		t.Errorf("%d provider.fallback events, first %+v", len(evs), evs[0])
	}
	st := u.Stats()
	if st.Records != 1000 || st.Events != 10 || st.Batches != uint64(len(batches)) || st.PublishFailures != 0 {
		t.Errorf("stats %+v (%d batches received)", st, len(batches))
	}
	if s := r.ob.Stats(); s.Acked != 1000 {
		t.Errorf("outbox stats %+v", s)
	}

	// Records appended while connected are sent right away.
	more := r.appendRecords(3)
	testenv.Eventually(t, "the new records", func() bool { return len(dedup(f.recordIDs())) == len(want)+3 })
	if got := f.recordIDs()[len(want):]; !slices.Equal(got, more) {
		t.Errorf("new records %v, want %v", got, more)
	}
}

// TestBacklogInterleavesLive: records appended after the connection came
// up reach fleetd while the backlog from before is still being sent, not
// after it; both streams arrive in order and nothing is lost.
func TestBacklogInterleavesLive(t *testing.T) {
	b := startBroker(t)
	p := newProxy(t, b.Addr())
	f := newFleetd(t, b.URL(), fleetdUser)
	// Hold the link as soon as fleetd sees the first telemetry batch: the
	// uplink is then stuck waiting for the PUBACK of a backlog message,
	// with most of the backlog still in the outbox.
	var once sync.Once
	f.setHook(func(m mqttMsg) {
		if m.kind == protocol.KindTelemetry {
			once.Do(func() { p.pause(true) })
		}
	})
	cfg := testConfig(t, p.url())
	cfg.BatchRecords = 50
	r := newRig(t, cfg)
	backlog := r.appendRecords(2000)
	r.start()
	testenv.Eventually(t, "the first backlog batch", func() bool { return len(f.recordIDs()) > 0 })
	live := r.appendRecords(3)
	p.pause(false)
	testenv.Eventually(t, "the outbox to drain", func() bool { return r.ob.Stats().Records == 0 })
	testenv.Eventually(t, "fleetd to receive every record", func() bool {
		return len(dedup(f.recordIDs())) == len(backlog)+len(live)
	})

	got := dedup(f.recordIDs())
	at := slices.Index(got, live[0])
	if at < 0 || !slices.Equal(got[at:at+len(live)], live) {
		t.Fatalf("live records %v not received together in order (first at %d)", live, at)
	}
	// Before them: the batches sent before the pause took effect and the
	// one whose PUBACK was held, at most a few.
	if at > 4*cfg.BatchRecords {
		t.Errorf("live records arrived after %d backlog records; want them after a few batches, not behind the backlog", at)
	}
	if rest := len(got) - at - len(live); rest < len(backlog)/2 {
		t.Errorf("only %d backlog records came after the live ones", rest)
	}
	var rest []uint64
	for _, id := range got {
		if !slices.Contains(live, id) {
			rest = append(rest, id)
		}
	}
	if err := equalIDs(rest, backlog); err != nil {
		t.Errorf("backlog: %v", err)
	}
}

// ascendingRuns is the fewest ascending sequences ids interleaves
// (greedily, each id goes on the sequence with the largest last id below
// it).
func ascendingRuns(ids []uint64) int {
	var tails []uint64
	for _, id := range ids {
		best := -1
		for i, t := range tails {
			if t < id && (best < 0 || t > tails[best]) {
				best = i
			}
		}
		if best < 0 {
			tails = append(tails, id)
		} else {
			tails[best] = id
		}
	}
	return len(tails)
}

func TestAckOnlyAfterPuback(t *testing.T) {
	b := startBroker(t)
	f := newFleetd(t, b.URL(), fleetdUser)
	p := newProxy(t, b.Addr())
	cfg := testConfig(t, p.url())
	// Short, so that the paused link below shows timeouts soon; still
	// far above a loopback PUBACK on a busy machine.
	cfg.PublishTimeout = time.Second
	r := newRig(t, cfg)
	u := r.start()
	r.waitConnected()
	// The short PublishTimeout also bounds the connection's setup (online
	// status, SUBACK, reported state); a setup that was too slow for it is
	// made again, and a reported state whose PUBACK was late is published
	// again. Wait until one reported state has been acknowledged, so that
	// nothing of the setup is still in flight when the link is paused.
	testenv.Eventually(t, "the connect-time publishes", func() bool {
		return len(f.reported()) >= 1 && u.Stats().ReportedPublished >= 1
	})

	// The broker never sees the publish, so no PUBACK: the records stay.
	p.pause(true)
	ids := r.appendRecords(5)
	testenv.Eventually(t, "a publish to time out", func() bool { return u.Stats().PublishFailures >= 2 })
	if n := r.ob.Stats().Records; n != 5 {
		t.Fatalf("outbox holds %d records without a PUBACK, want 5", n)
	}
	if got := f.recordIDs(); len(got) != 0 {
		t.Fatalf("fleetd received %v through a paused link", got)
	}

	p.pause(false)
	testenv.Eventually(t, "the outbox to drain", func() bool { return r.ob.Stats().Records == 0 })
	testenv.Eventually(t, "fleetd to receive the records", func() bool { return len(dedup(f.recordIDs())) == 5 })
	if got := dedup(f.recordIDs()); !slices.Equal(got, ids) {
		t.Errorf("received %v, want %v", got, ids)
	}
}

// TestBrokerKilledMidDrain kills mosquitto while the uplink drains a
// growing outbox, restarts it on the same port and checks that fleetd gets
// every record at least once and the outbox ends empty.
func TestBrokerKilledMidDrain(t *testing.T) {
	b := startBroker(t)
	f1 := newFleetd(t, b.URL(), fleetdUser)
	// The proxy only lets the test hold the uplink back until the
	// restarted broker has fleetd subscribed again (mosquitto here keeps
	// no sessions across restarts).
	p := newProxy(t, b.Addr())
	cfg := testConfig(t, p.url())
	cfg.BatchRecords = 50
	r := newRig(t, cfg)

	const total = 1500
	var (
		mu       sync.Mutex
		appended []uint64
	)
	appendedN := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(appended)
	}
	appenderDone := make(chan struct{})
	resume := make(chan struct{})
	go func() {
		defer close(appenderDone)
		for i := range total {
			if i == total/2 {
				<-resume // the second half is appended while the broker is down
			}
			id, err := r.ob.Append(context.Background(), protocol.RecordPrediction, predictionPayload(i))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			appended = append(appended, id)
			mu.Unlock()
		}
	}()
	u := r.start()
	testenv.Eventually(t, "the drain to get going", func() bool { return len(f1.recordIDs()) >= 200 })

	p.refuse(true)
	b.Kill()
	testenv.Eventually(t, "the uplink to notice", func() bool { return !u.Connected() })
	close(resume)
	testenv.Eventually(t, "records to pile up offline", func() bool { return appendedN() >= total/2+300 })
	if n := r.ob.Stats().Records; n < 300 {
		t.Fatalf("outbox holds %d records while the broker is down", n)
	}

	b.Start()
	f2 := newFleetd(t, b.URL(), fleetdUser)
	p.refuse(false)
	<-appenderDone
	testenv.Eventually(t, "the backlog to drain", func() bool { return r.ob.Stats().Records == 0 })
	// All acked records reached the broker; wait for fleetd to have them.
	testenv.Eventually(t, "fleetd to receive every record", func() bool {
		return len(dedup(append(f1.recordIDs(), f2.recordIDs()...))) >= total
	})

	got := dedup(append(f1.recordIDs(), f2.recordIDs()...))
	slices.Sort(got)
	if err := equalIDs(got, appended); err != nil {
		t.Fatalf("received ids (deduplicated): %v", err)
	}
	// Each connection's stream is in order apart from resends: the
	// backlog in order, interleaved with the records appended since the
	// connection came up, in order too.
	for i, ids := range [][]uint64{dedup(f1.recordIDs()), dedup(f2.recordIDs())} {
		if n := ascendingRuns(ids); n > 2 {
			t.Errorf("fleetd %d: ids are %d interleaved ascending streams, want the backlog and the live one at most", i+1, n)
		}
	}
	if st := u.Stats(); st.ConnectionsLost < 1 || st.Records < total {
		t.Errorf("stats %+v", st)
	}
	if s := r.ob.Stats(); s.Dropped != 0 || s.Acked != total {
		t.Errorf("outbox stats %+v", s)
	}
}

func TestUnsendableRecordsDropped(t *testing.T) {
	f, r := newFleetRig(t)
	good1 := r.appendRecords(2)
	bad := []struct{ kind, payload string }{
		{protocol.RecordPrediction, "not json"},
		{"Bad Kind", `{"x":1}`},
		{RecordEvent, `{"type":"Not A Type"}`},
		{RecordEvent, `[1,2]`},
		{protocol.RecordDrift, strings.Repeat(`"`, 1) + strings.Repeat("\x00", 10) + `"`},
	}
	for _, c := range bad {
		r.appendRecord(c.kind, []byte(c.payload))
	}
	good2 := r.appendRecords(2)
	u := r.start()
	testenv.Eventually(t, "the good records", func() bool { return len(dedup(f.recordIDs())) >= 4+len(bad) })
	testenv.Eventually(t, "the outbox to drain", func() bool { return r.ob.Stats().Records == 0 })

	// The good records all arrive, in order; the buffer.dropped events
	// reporting the bad ones were appended after the connection came up,
	// so they may come in between (the live stream).
	want := append(append([]uint64(nil), good1...), good2...)
	var got []uint64
	for _, id := range dedup(f.recordIDs()) {
		if slices.Contains(want, id) {
			got = append(got, id)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("received the good records as %v, want %v", got, want)
	}
	drops := f.eventsOf(protocol.EventBufferDropped)
	if len(drops) != len(bad) {
		t.Fatalf("%d buffer.dropped events, want %d", len(drops), len(bad))
	}
	for _, e := range drops {
		if e.Reason != ReasonUnsendable || e.Progress == nil || e.Progress.Done != 1 {
			t.Errorf("event %+v", e)
		}
	}
	if st := u.Stats(); st.Unsendable != uint64(len(bad)) {
		t.Errorf("Unsendable %d, want %d", st.Unsendable, len(bad))
	}
}

// TestLargeRecords: records near the wire limit travel alone, compressible
// ones above it travel compressed, incompressible ones above it are
// dropped as unsendable.
func TestLargeRecords(t *testing.T) {
	f, r := newFleetRig(t)
	random := func(n int) []byte {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[rand.IntN(36)]
		}
		return []byte(`"` + string(buf) + `"`)
	}
	payloads := [][]byte{
		random(100 << 10), random(100 << 10), random(100 << 10), // each fits, two do not fit together
		[]byte(`"` + strings.Repeat("a", 900<<10) + `"`), // 900 KiB, compresses well
		random(300 << 10), // over the limit even alone
		predictionPayload(1),
	}
	var ids []uint64
	for _, p := range payloads {
		ids = append(ids, r.appendRecord(protocol.RecordDrift, p))
	}
	u := r.start()
	testenv.Eventually(t, "the outbox to drain", func() bool { return r.ob.Stats().Records == 0 })
	telemetryIDs := func() []uint64 {
		var out []uint64
		batches, _ := f.batches()
		for _, b := range batches {
			for _, rec := range b.Records {
				out = append(out, rec.ID)
			}
		}
		return dedup(out)
	}
	testenv.Eventually(t, "fleetd to receive the sendable records", func() bool { return len(telemetryIDs()) == 5 })
	want := append(append([]uint64(nil), ids[:4]...), ids[5])
	if got := telemetryIDs(); !slices.Equal(got, want) {
		t.Errorf("received %v, want %v", got, want)
	}
	if drops := f.eventsOf(protocol.EventBufferDropped); len(drops) != 1 {
		t.Errorf("%d buffer.dropped events, want 1", len(drops))
	}
	for _, m := range f.messages(protocol.KindTelemetry) {
		if len(m.payload) > protocol.MaxPayloadSize {
			t.Errorf("a %d-byte payload went out", len(m.payload))
		}
	}
	if st := u.Stats(); st.Unsendable != 1 {
		t.Errorf("Unsendable %d, want 1", st.Unsendable)
	}
}
