package fleetd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestEmbeddedEndToEnd runs the device side of the protocol against
// fleetd with its embedded broker: enrol, connect, report, deliver
// telemetry and events at least once (counted once), get a bundle
// assigned and download it, go offline through the last will.
func TestEmbeddedEndToEnd(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, baseConfig(t))
	addr := ts.srv.MQTTAddr()

	pw := ts.enroll(t, "cam-1", map[string]string{"site": "plant-7"})
	d := mustDialDevice(t, addr, "cam-1", pw)
	d.online()
	d.report(0, map[string]string{"hw": "pi5"})

	testenv.EventuallyState(t, "cam-1 online with its reported state", func() (bool, string) {
		dev, err := ts.api.Device(ctx, "cam-1")
		if err != nil {
			return false, err.Error()
		}
		return dev.Status.Online && dev.Reported != nil && dev.Reported.Labels["hw"] == "pi5", fmt.Sprintf("%+v", dev.Status)
	})
	// The Ingest hook ran before the PUBACK: no waiting needed from here.
	b1 := batch("cam-1", "ep1", 1, 50)
	b2 := batch("cam-1", "ep1", 51, 80)
	for _, b := range []*protocol.TelemetryBatch{b1, b1, b2, b1, b2} {
		d.mustPublish(protocol.KindTelemetry, b)
	}
	ev := &protocol.Event{V: 1, DeviceID: "cam-1", Epoch: "ep1", ID: 81, Time: time.Now().UTC(), Type: protocol.EventAgentStarted}
	d.mustPublish(protocol.KindEvents, ev)
	d.mustPublish(protocol.KindEvents, ev)

	recs, err := ts.api.Records(ctx, "cam-1", client.RecordsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if recs.Stats.Delivered != 81 || recs.Stats.Duplicates != 131 || len(recs.Records) != 81 {
		t.Fatalf("records: stats %+v, %d returned; want 81 delivered once, 131 duplicates", recs.Stats, len(recs.Records))
	}
	if r := recs.Records[0]; r.ID != 1 || r.Kind != "prediction" || r.Epoch != "ep1" || compact(t, r.Payload) != string(b1.Records[0].Payload) {
		t.Errorf("first record = %+v", r)
	}
	// Newest first (order=desc): limit keeps the newest; since and until
	// bound the window either way.
	t0 := b1.Records[0].Time.Add(-time.Millisecond) // record n is at t0+n ms
	for _, tc := range []struct {
		q    client.RecordsQuery
		want []uint64
	}{
		{client.RecordsQuery{Kind: protocol.RecordPrediction, NewestFirst: true, Limit: 3}, []uint64{80, 79, 78}},
		{client.RecordsQuery{Kind: protocol.RecordPrediction, Limit: 3}, []uint64{1, 2, 3}},
		{client.RecordsQuery{NewestFirst: true, Since: t0.Add(10 * time.Millisecond), Until: t0.Add(13 * time.Millisecond)}, []uint64{12, 11, 10}},
		{client.RecordsQuery{Since: t0.Add(10 * time.Millisecond), Until: t0.Add(13 * time.Millisecond)}, []uint64{10, 11, 12}},
		{client.RecordsQuery{Kind: protocol.RecordPrediction, NewestFirst: true, Until: t0.Add(51 * time.Millisecond), Limit: 2}, []uint64{50, 49}},
	} {
		r, err := ts.api.Records(ctx, "cam-1", tc.q)
		if err != nil {
			t.Fatalf("Records(%+v): %v", tc.q, err)
		}
		var got []uint64
		for _, rec := range r.Records {
			got = append(got, rec.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Records(%+v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	events, err := ts.api.Records(ctx, "cam-1", client.RecordsQuery{Kind: "event"})
	if err != nil || len(events.Records) != 1 || events.Records[0].ID != 81 {
		t.Fatalf("events = %+v, %v", events, err)
	}
	if got := metric(t, ts, "fleetd_records_delivered_total"); got != 81 {
		t.Errorf("fleetd_records_delivered_total = %v", got)
	}
	if got := metric(t, ts, "fleetd_records_duplicate_total"); got != 131 {
		t.Errorf("fleetd_records_duplicate_total = %v", got)
	}

	// A bundle, pushed and assigned.
	pub := testPublisher(t)
	bpath := pub.build(t, "vad", "1.0.0", 300<<10)
	if _, created, err := ts.api.Push(ctx, bpath, bpath+".sig"); err != nil || !created {
		t.Fatalf("Push = %v, created %v", err, created)
	}
	if _, created, err := ts.api.Push(ctx, bpath, bpath+".sig"); err != nil || created {
		t.Fatalf("second Push = %v, created %v (want no-op)", err, created)
	}
	d.subscribeDesired()
	a1, err := ts.api.Assign(ctx, "cam-1", "vad@1.0.0", "")
	if err != nil || !a1.Published {
		t.Fatalf("Assign = %+v, %v", a1, err)
	}
	ds := d.nextDesired(0)
	if ds.Seq != a1.Desired.Seq || ds.Action != protocol.ActionInstall || ds.Bundle.ID() != "vad@1.0.0" {
		t.Fatalf("device got %+v, fleetd issued %+v", ds, a1.Desired)
	}
	g := protocol.Guard{DeviceID: "cam-1"}
	if err := g.Accept(ds, time.Now()); err != nil {
		t.Fatalf("the agent's guard refuses the desired state: %v", err)
	}
	if life := ds.ExpiresAt.Sub(ds.IssuedAt); life != 7*24*time.Hour {
		t.Errorf("desired lifetime = %s, want 7 days", life)
	}
	want, _ := os.ReadFile(bpath)
	if got := fetch(t, ds.Bundle.URL); sha256Hex(got) != sha256Hex(want) || ds.Bundle.SHA256 != sha256Hex(want) || ds.Bundle.Size != int64(len(want)) {
		t.Fatalf("downloaded bundle: %d bytes sha256 %s; pushed %d bytes %s; desired says %d %s",
			len(got), sha256Hex(got), len(want), sha256Hex(want), ds.Bundle.Size, ds.Bundle.SHA256)
	}
	if got, want := strings.TrimSpace(string(fetch(t, ds.Bundle.SigURL))), strings.TrimSpace(cptest.ReadFile(t, bpath+".sig")); got != want {
		t.Errorf("signature download = %q, want %q", got, want)
	}
	a2, err := ts.api.Assign(ctx, "cam-1", "vad@1.0.0", "rollback")
	if err != nil {
		t.Fatal(err)
	}
	ds2 := d.nextDesired(ds.Seq)
	if ds2.Seq != ds.Seq+1 || a2.Desired.Seq != ds2.Seq || ds2.Action != protocol.ActionRollback {
		t.Fatalf("second desired state = seq %d %s, first %d", ds2.Seq, ds2.Action, ds.Seq)
	}
	if err := g.Accept(ds2, time.Now()); err != nil {
		t.Fatalf("guard: %v", err)
	}
	// A device (re)subscribing gets the latest, retained.
	d2 := mustDialDevice(t, addr, "cam-1", pw) // takes the session over
	d2.subscribeDesired()
	if got := d2.nextDesired(0); got.Seq != ds2.Seq {
		t.Errorf("retained desired seq = %d, want %d", got.Seq, ds2.Seq)
	}

	// The last will marks it offline.
	d2.online()
	d2.cut()
	testenv.EventuallyState(t, "cam-1 offline by its will", func() (bool, string) {
		dev, err := ts.api.Device(ctx, "cam-1")
		if err != nil {
			return false, err.Error()
		}
		return !dev.Status.Online && dev.Status.Reason == "connection-lost", fmt.Sprintf("%+v", dev.Status)
	})
}

// TestMalformedMessages checks that bad device messages are dropped,
// counted by reason and never stop ingest.
func TestMalformedMessages(t *testing.T) {
	ts := startServer(t, baseConfig(t))
	pw := ts.enroll(t, "dev-1", nil)
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	for _, tc := range []struct {
		kind    protocol.Kind
		payload string
		reason  string
	}{
		{protocol.KindTelemetry, `not json`, "malformed"},
		{protocol.KindTelemetry, `{"v":2,"deviceId":"dev-1","records":[]}`, "version"},
		{protocol.KindTelemetry, `{"v":1,"deviceId":"dev-1","records":[]}`, "invalid"},
		{protocol.KindTelemetry, string(mustEncode(t, batch("dev-2", "", 1, 1))), "wrong_device"},
		{protocol.KindEvents, `{"v":1,"deviceId":"dev-1","id":0}`, "invalid"},
		{protocol.KindStatus, `[]`, "malformed"},
		{protocol.KindReported, `{"v":1}`, "invalid"},
		{protocol.KindTelemetry, "\x28\xb5\x2f\xfd garbage", "too_large"}, // the frame header declares a huge size
	} {
		before := metric(t, ts, `fleetd_ingest_refused_total{reason="`+tc.reason+`"}`)
		if err := d.publish(tc.kind, []byte(tc.payload)); err != nil {
			t.Fatalf("%s %q: the broker did not acknowledge (a refused message is dropped, not retried): %v", tc.kind, tc.payload, err)
		}
		if got := metric(t, ts, `fleetd_ingest_refused_total{reason="`+tc.reason+`"}`); got != before+1 {
			t.Errorf("%s %q: refused{%s} = %v, want %v", tc.kind, tc.payload, tc.reason, got, before+1)
		}
	}
	// Ingest still works.
	d.mustPublish(protocol.KindTelemetry, batch("dev-1", "", 1, 3))
	dev, err := ts.api.Device(context.Background(), "dev-1")
	if err != nil || dev.Records.Delivered != 3 {
		t.Fatalf("after bad messages: %+v, %v", dev, err)
	}
	if got := metric(t, ts, `fleetd_ingest_messages_total{kind="telemetry",result="refused"}`); got != 5 {
		t.Errorf("refused telemetry messages = %v, want 5", got)
	}
}

func mustEncode(t testing.TB, m protocol.Message) []byte {
	t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRestart restarts fleetd on the same data directory and checks that
// nothing was lost: devices and their credentials, desired seq, bundles,
// records and dedup, tokens.
func TestRestart(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, baseConfig(t))
	pw := ts.enroll(t, "dev-1", map[string]string{"ring": "canary"})
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	d.online()
	d.report(0, nil)
	d.mustPublish(protocol.KindTelemetry, batch("dev-1", "e", 1, 20))
	bpath := ts.push(t, testPublisher(t), "vad", "1.0.0", 64<<10)
	a1, err := ts.api.Assign(ctx, "dev-1", "vad@1.0.0", "")
	if err != nil {
		t.Fatal(err)
	}
	token := cptest.ReadFile(t, ts.cfg.DataDir+"/operator.token")

	ts.restart()
	if got := cptest.ReadFile(t, ts.cfg.DataDir+"/operator.token"); got != token {
		t.Errorf("operator token changed across a restart")
	}
	dev, err := ts.api.Device(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if dev.Labels["ring"] != "canary" || dev.Reported == nil || dev.Desired == nil || dev.Desired.Seq != a1.Desired.Seq || dev.Records.Delivered != 20 {
		t.Fatalf("after restart: %+v", dev)
	}
	if dev.Status.Online {
		t.Errorf("device still online after the broker restarted: %+v", dev.Status)
	}
	if bs, err := ts.api.Bundles(ctx, ""); err != nil || len(bs) != 1 || bs[0].ID() != "vad@1.0.0" {
		t.Fatalf("bundles after restart: %v, %v", bs, err)
	}
	// The device's credentials still work, the retained desired state is
	// there, dedup remembers, and the seq continues.
	d = mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	d.subscribeDesired()
	if got := d.nextDesired(0); got.Seq != a1.Desired.Seq {
		t.Errorf("retained desired after restart: seq %d, want %d", got.Seq, a1.Desired.Seq)
	}
	d.mustPublish(protocol.KindTelemetry, batch("dev-1", "e", 11, 30))
	r, err := ts.api.Records(ctx, "dev-1", client.RecordsQuery{})
	if err != nil || r.Stats.Delivered != 30 || r.Stats.Duplicates != 10 || len(r.Records) != 30 {
		t.Fatalf("records after restart: %+v, %v", r.Stats, err)
	}
	a2, err := ts.api.Assign(ctx, "dev-1", "vad@1.0.0", "")
	if err != nil || a2.Desired.Seq != a1.Desired.Seq+1 {
		t.Fatalf("assign after restart: %+v, %v", a2, err)
	}
	if got := d.nextDesired(a1.Desired.Seq); got.Seq != a2.Desired.Seq {
		t.Errorf("device got seq %d", got.Seq)
	}
	got := fetch(t, a2.Desired.Bundle.URL)
	if want, _ := os.ReadFile(bpath); string(got) != string(want) {
		t.Errorf("download after restart differs")
	}
}

// TestStopped checks that a stopped fleetd acknowledges nothing (the
// device keeps the message and sends it again) and serves no API.
func TestStopped(t *testing.T) {
	ts := startServer(t, baseConfig(t))
	pw := ts.enroll(t, "dev-1", nil)
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	d.mustPublish(protocol.KindTelemetry, batch("dev-1", "", 1, 1))
	ts.stop()
	if err := d.publish(protocol.KindTelemetry, mustEncode(t, batch("dev-1", "", 2, 2))); err == nil {
		t.Fatalf("a publish after shutdown was acknowledged")
	}
	var ce *client.Error
	if _, err := ts.api.Health(context.Background()); err == nil || errors.As(err, &ce) {
		t.Errorf("API after shutdown: %v", err)
	}
}

func compact(t testing.TB, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestDeleteDevice deletes a device and enrols it again under the same
// id: the new one starts without records, never sees its predecessor's
// retained desired state, and its seq continues above the old one.
func TestDeleteDevice(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, baseConfig(t))
	pw := ts.enroll(t, "dev-1", nil)
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	d.mustPublish(protocol.KindTelemetry, batch("dev-1", "e", 1, 5))
	ts.push(t, testPublisher(t), "vad", "1.0.0", 4<<10)
	old, err := ts.api.Assign(ctx, "dev-1", "vad@1.0.0", "")
	if err != nil {
		t.Fatal(err)
	}
	d.close()
	if err := ts.api.DeleteDevice(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.api.Device(ctx, "dev-1"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("deleted device: %v", err)
	}
	if _, err := dialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw); err == nil {
		t.Fatalf("a deleted device could connect")
	}

	pw = ts.enroll(t, "dev-1", nil)
	d = mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	d.subscribeDesired()
	a, err := ts.api.Assign(ctx, "dev-1", "vad@1.0.0", "")
	if err != nil {
		t.Fatal(err)
	}
	if first := d.nextDesired(0); first.Seq != a.Desired.Seq || first.Seq <= old.Desired.Seq {
		t.Fatalf("first desired state after re-enrolment: seq %d; old %d, new %d", first.Seq, old.Desired.Seq, a.Desired.Seq)
	}
	if dev, err := ts.api.Device(ctx, "dev-1"); err != nil || dev.Records != (telemetry.Stats{}) {
		t.Fatalf("re-enrolled device: %+v, %v", dev, err)
	}
}
