package fleetd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// BenchmarkDriftQuery measures a drift report over 100 devices and a day
// of 5-minute Silero windows (28,800 records of the real profile's seven
// features), stored as ingest stores them:
//
//   - cold: every device-hour read from the records store, decoded,
//     merged and cached (the cache emptied before each query);
//   - warm: the same query again, the whole hours from the cache and the
//     current hour from the store;
//
// µs/device-hour divides a query by the 2,400 device-hours it spans;
// cache-MiB is the cache's size once warm.
func BenchmarkDriftQuery(b *testing.B) {
	const (
		devices = 100
		hours   = 24
		perHour = 12
	)
	ctx := context.Background()
	dir := b.TempDir()
	s, err := New(Config{
		DataDir: filepath.Join(dir, "data"),
		HTTP:    HTTPConfig{Listen: "127.0.0.1:0"},
		Broker:  BrokerConfig{Listen: "127.0.0.1:0"},
		Logger:  slog.New(slog.DiscardHandler), Announce: io.Discard,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	// The Silero bundle's profile, in a signed bundle in the registry.
	profile := filepath.Join(testenv.Root(b), "testbed", "bundles", "silero-vad", "profile.json")
	p, err := drift.LoadProfile(profile)
	if err != nil {
		b.Fatal(err)
	}
	pub, err := testbundle.NewPublisher(filepath.Join(dir, "keys"))
	if err != nil {
		b.Fatal(err)
	}
	bn, err := pub.BuildFake(ctx, dir, "vad", "1.0.0", []byte("fake"), profile)
	if err != nil {
		b.Fatal(err)
	}
	out := bn.Path
	if _, err := s.reg.Put(ctx, out, out+".sig"); err != nil {
		b.Fatal(err)
	}

	// 16 distinct windows of 9,375 predictions drawn from the reference.
	rng := rand.New(rand.NewPCG(1, 2))
	payloads := make([]json.RawMessage, 16)
	for i := range payloads {
		sum := drift.NewSummary(p)
		row := make([]float64, len(p.Features))
		for range 9375 {
			for j := range row {
				smp := p.Features[j].Numerical.Sample
				row[j] = smp[rng.IntN(len(smp))]
			}
			sum.Observe(row)
			sum.ObserveHealth(time.Duration(300+rng.IntN(200))*time.Microsecond, false)
		}
		enc, err := sum.MarshalBase64JSON()
		if err != nil {
			b.Fatal(err)
		}
		payloads[i] = json.RawMessage(fmt.Sprintf(`{"model":"vad@1.0.0","profile":%q,"summary":%s}`, p.ID(), enc))
	}
	enrol, err := os.ReadFile(filepath.Join(dir, "data", EnrolTokenFile))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	start := now.Truncate(time.Hour).Add(-(hours - 1) * time.Hour)
	ids := make([]string, devices)
	for d := range devices {
		ids[d] = fmt.Sprintf("dev-%03d", d)
		if _, err := s.inv.Enroll(ctx, ids[d], nil, strings.TrimSpace(string(enrol))); err != nil {
			b.Fatal(err)
		}
		recs := make([]telemetry.Record, 0, hours*perHour)
		for w := range hours * perHour {
			at := start.Add(time.Duration(w) * 5 * time.Minute).Add(time.Duration(d) * time.Second)
			if at.After(now) {
				break
			}
			recs = append(recs, telemetry.Record{Device: ids[d], Epoch: "e", ID: uint64(w + 1), Kind: protocol.RecordDrift, Time: at, Payload: payloads[(d+w)%len(payloads)]})
		}
		if err := s.storeRecords(ids[d], "e", recs, nil); err != nil {
			b.Fatal(err)
		}
	}
	q := DriftQuery{Bundle: protocol.BundleID{Name: "vad", Version: "1.0.0"}, Devices: ids, Since: start}
	query := func(b *testing.B) {
		r, err := s.Drift(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		if r.Reporting != devices || r.Report.Drift {
			b.Fatalf("%d devices reporting, drift %v", r.Reporting, r.Report.Drift)
		}
	}
	perDeviceHour := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/(devices*hours), "µs/device-hour")
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			s.drift.mu.Lock()
			s.drift.hours, s.drift.bytes = nil, 0
			s.drift.lru.Init()
			s.drift.mu.Unlock()
			query(b)
		}
		perDeviceHour(b)
	})
	b.Run("warm", func(b *testing.B) {
		query(b)
		for b.Loop() {
			query(b)
		}
		perDeviceHour(b)
		s.drift.mu.Lock()
		b.ReportMetric(float64(s.drift.bytes)/(1<<20), "cache-MiB")
		s.drift.mu.Unlock()
	})
}

// FuzzDriftRecord: whatever a device sends as a drift record, reading it
// neither panics nor accepts a summary that does not re-encode and decode
// to the same bytes; a record naming no bundle is skipped without error.
func FuzzDriftRecord(f *testing.F) {
	p, err := drift.LoadProfile(filepath.Join(testenv.Root(f), "testbed", "bundles", "silero-vad", "profile.json"))
	if err != nil {
		f.Fatal(err)
	}
	sum := drift.NewSummary(p)
	sum.Observe([]float64{0.01, 0.3, -40, -45, -50, -60, 0.2})
	sum.ObserveHealth(time.Millisecond, false)
	enc, _ := sum.MarshalBase64JSON()
	js, _ := sum.MarshalJSON()
	f.Add([]byte(fmt.Sprintf(`{"model":"vad@1.0.0","profile":%q,"summary":%s}`, p.ID(), enc)))
	f.Add([]byte(fmt.Sprintf(`{"model":"vad@1.0.0","summary":%s}`, js)))
	f.Add([]byte(`{"model":"vad@1.0.0","summary":"RUZEUw=="}`))
	f.Add([]byte(`{"model":"","summary":"x"}`))
	f.Add([]byte(`{"model":"vad@1.0.0"}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		model, sum, err := decodeDriftRecord(payload, "")
		switch {
		case model == "":
			if sum != nil || err != nil {
				t.Fatalf("no model, but summary %v, error %v", sum, err)
			}
		case err != nil:
			if sum != nil {
				t.Fatal("a summary and an error")
			}
		default:
			b1, err := sum.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			again, err := drift.DecodeSummary(b1)
			if err != nil {
				t.Fatalf("re-decoding: %v", err)
			}
			if b2, _ := again.MarshalBinary(); string(b1) != string(b2) {
				t.Fatal("re-encoding differs")
			}
			if other, _, _ := decodeDriftRecord(payload, model+"x"); other != "" {
				t.Fatalf("only %q: got %q", model+"x", other)
			}
		}
	})
}

// FuzzParseSince: since/until parameters parse as an RFC 3339 time or a
// non-negative duration before now, or fail; never a time after now from
// a duration.
func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"1h", "90m", "0s", "-1h", "2026-03-01T12:00:00Z", "2026-03-01T12:00:00.5+02:00", "yesterday", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		got, err := parseSince(v, now)
		if err != nil {
			return
		}
		if want, perr := time.Parse(time.RFC3339Nano, v); perr == nil {
			if !got.Equal(want) {
				t.Fatalf("%q: %v, want %v", v, got, want)
			}
			return
		}
		if got.After(now) {
			t.Fatalf("%q: %v is after now", v, got)
		}
	})
}
