package fleetd_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// driftProfile is a reference profile of three numerical features, each
// ~ N(0, 1) over 5,000 rows (so tested by normed Wasserstein, drift at
// 0.1).
func driftProfile(t testing.TB) *drift.Profile {
	t.Helper()
	s, err := drift.ParseSchema([]byte(`features:
  - {name: level, kind: numerical, source: {tensor: features, index: 0}}
  - {name: rate, kind: numerical, source: {tensor: features, index: 1}}
  - {name: score, kind: numerical, source: {tensor: output, index: 0}}
`))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	d := drift.NewData()
	for _, name := range []string{"level", "rate", "score"} {
		col := make([]float64, 5000)
		for i := range col {
			col[i] = rng.NormFloat64()
		}
		if err := d.SetNumerical(name, col); err != nil {
			t.Fatal(err)
		}
	}
	p, err := drift.Build(s, d)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// buildWithProfile builds and signs a bundle NAME-VERSION.bundle with a
// small fake model and profile p, and returns its path.
func (pub *publisher) buildWithProfile(t testing.TB, name, version string, p *drift.Profile) string {
	t.Helper()
	profile := filepath.Join(t.TempDir(), "profile.json")
	if err := p.WriteFile(profile); err != nil {
		t.Fatal(err)
	}
	return pub.MustBuildFake(t, name, version, []byte("not a model: fleetd never runs it"), profile).Path
}

// window is the payload of an agent's drift record (agent/drift.go): n
// predictions whose level is shifted by shift reference deviations.
func window(t testing.TB, p *drift.Profile, model string, seed uint64, n int, shift float64, end time.Time) json.RawMessage {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 2))
	s := drift.NewSummary(p)
	s.Start, s.End = end.Add(-5*time.Minute), end
	for range n {
		if err := s.Observe([]float64{rng.NormFloat64() + shift, rng.NormFloat64(), rng.NormFloat64()}); err != nil {
			t.Fatal(err)
		}
		s.ObserveHealth(3*time.Millisecond, false)
	}
	enc, err := s.MarshalBase64JSON()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]any{"model": model, "profile": s.Profile(), "start": s.Start, "end": s.End,
		"predictions": n, "errors": 0, "summary": json.RawMessage(enc)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// driftDevice is a simulated device sending drift records over MQTT.
type driftDevice struct {
	*device
	next uint64
}

func (d *driftDevice) send(t testing.TB, at time.Time, kind string, payload json.RawMessage) {
	t.Helper()
	d.next++
	d.mustPublish(protocol.KindTelemetry, &protocol.TelemetryBatch{V: 1, DeviceID: d.id, Epoch: "ep1",
		Records: []protocol.Record{{ID: d.next, Kind: kind, Time: at, Payload: payload}}})
}

func featureReport(t testing.TB, r *api.DriftReport, name string) drift.FeatureReport {
	t.Helper()
	for _, f := range r.Report.Features {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no feature %q in the report", name)
	return drift.FeatureReport{}
}

func drifted(r *api.DriftReport) []string {
	var out []string
	for _, f := range r.Report.Features {
		if f.Drift {
			out = append(out, f.Name)
		}
	}
	return out
}

// TestDriftReport: three devices send drift windows of a bundle over
// MQTT; fleetd merges them per selector, device list and time range
// (whole hours from its cache, partial ones from the store, late records
// seen), compares them with the profile read from the registry's bundle
// and reports the shifted feature only where shifted windows are merged.
func TestDriftReport(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, baseConfig(t))
	p := driftProfile(t)
	pub := testPublisher(t)
	for _, path := range []string{pub.buildWithProfile(t, "vad", "1.0.0", p), pub.build(t, "plain", "1.0.0", 1000)} {
		if _, _, err := ts.api.Push(ctx, path, path+".sig"); err != nil {
			t.Fatal(err)
		}
	}
	devs := map[string]*driftDevice{}
	for id, site := range map[string]string{"d1": "a", "d2": "a", "d3": "b"} {
		pw := ts.enroll(t, id, map[string]string{"site": site})
		devs[id] = &driftDevice{device: mustDialDevice(t, ts.srv.MQTTAddr(), id, pw)}
	}
	const vad = "vad@1.0.0"
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	// Hour 0 and 1: d1 and d2 normal, d3 shifted by 0.5σ; hour 2: d2 shifted.
	sends := []struct {
		dev   string
		min   int
		n     int
		shift float64
	}{
		{"d1", 10, 1000, 0}, {"d2", 20, 1000, 0}, {"d3", 30, 1000, 0.5},
		{"d1", 70, 1000, 0}, {"d3", 90, 1000, 0.5},
		{"d2", 130, 2000, 0.5},
	}
	for i, s := range sends {
		devs[s.dev].send(t, at(s.min), protocol.RecordDrift, window(t, p, vad, uint64(i), s.n, s.shift, at(s.min)))
	}
	// Not evidence: another bundle's window, a metrics record, a corrupt
	// summary of vad (counted invalid).
	devs["d1"].send(t, at(15), protocol.RecordDrift, window(t, p, "other@1.0.0", 99, 100, 3, at(15)))
	devs["d1"].send(t, at(16), protocol.RecordMetrics, json.RawMessage(`{"model":"vad@1.0.0","requests":10}`))
	devs["d1"].send(t, at(17), protocol.RecordDrift, json.RawMessage(`{"model":"vad@1.0.0","summary":"RUZEUw=="}`))

	query := func(q client.DriftQuery) *api.DriftReport {
		t.Helper()
		q.Bundle = vad
		r, err := ts.api.Drift(ctx, q)
		if err != nil {
			t.Fatalf("Drift(%+v): %v", q, err)
		}
		return r
	}
	rfc := func(tm time.Time) string { return tm.Format(time.RFC3339) }
	for _, c := range []struct {
		name                     string
		q                        client.DriftQuery
		devices, reporting, wins int
		invalid                  int
		count                    uint64
		drifted                  []string
	}{
		{"site a, hours 0-1", client.DriftQuery{Selector: "site=a", Since: rfc(t0), Until: rfc(at(120))}, 2, 2, 3, 1, 3000, nil},
		{"site b", client.DriftQuery{Selector: "site=b", Since: rfc(t0)}, 1, 1, 2, 0, 2000, []string{"level"}},
		{"all devices, hour 2 on", client.DriftQuery{Since: rfc(at(120))}, 3, 1, 1, 0, 2000, []string{"level"}},
		{"d1 by id", client.DriftQuery{Devices: []string{"d1"}, Since: rfc(t0)}, 1, 1, 2, 1, 2000, nil},
		// Partial hours at both ends: 0:15 to 1:35.
		{"partial hours", client.DriftQuery{Since: rfc(at(15)), Until: rfc(at(95))}, 3, 3, 4, 1, 4000, []string{"level"}},
		{"all, default range", client.DriftQuery{}, 3, 3, 6, 1, 7000, []string{"level"}},
		{"nothing in range", client.DriftQuery{Since: rfc(at(-60)), Until: rfc(t0)}, 3, 0, 0, 0, 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := query(c.q)
			if r.Bundle != vad || r.Devices != c.devices || r.Reporting != c.reporting || r.Windows != c.wins || r.Invalid != c.invalid {
				t.Errorf("devices %d, reporting %d, windows %d, invalid %d; want %d, %d, %d, %d",
					r.Devices, r.Reporting, r.Windows, r.Invalid, c.devices, c.reporting, c.wins, c.invalid)
			}
			if r.Report == nil || r.Report.Profile != p.ID() {
				t.Fatalf("report %+v", r.Report)
			}
			for _, name := range []string{"level", "rate", "score"} {
				if f := featureReport(t, r, name); f.Count != c.count {
					t.Errorf("%s: %d values, want %d", name, f.Count, c.count)
				}
			}
			if r.Report.Health.Predictions != c.count {
				t.Errorf("health: %d predictions, want %d", r.Report.Health.Predictions, c.count)
			}
			if c.count == 0 {
				if r.Report.Status != drift.StatusNotEnoughData {
					t.Errorf("empty report: status %q", r.Report.Status)
				}
				return
			}
			if got := drifted(r); !slices.Equal(got, c.drifted) {
				t.Errorf("drifted %v, want %v", got, c.drifted)
			}
			f := featureReport(t, r, "level")
			t.Logf("level: %s %.3f ± %.3f (threshold %g), share %.2f", f.Test, f.Statistic, f.Bound, f.Threshold, r.Report.Share)
		})
	}

	// A window of hour 0 arriving late (a device back online) counts,
	// although hour 0 was cached by the queries above.
	devs["d1"].send(t, at(40), protocol.RecordDrift, window(t, p, vad, 50, 500, 0, at(40)))
	if r := query(client.DriftQuery{Devices: []string{"d1"}, Since: rfc(t0), Until: rfc(at(60))}); r.Windows != 2 || r.Report.Health.Predictions != 1500 {
		t.Errorf("after a late window: %d windows, %d predictions; want 2, 1500", r.Windows, r.Report.Health.Predictions)
	}

	// The rollout gate's figure: the pooled share.
	score, reports, err := ts.srv.DriftScore(ctx, protocol.BundleID{Name: "vad", Version: "1.0.0"}, []string{"d2", "d3"}, at(0))
	if err != nil || reports != 2 || score != 1.0/3 {
		t.Errorf("DriftScore(d2, d3) = %v, %d, %v; want 1/3 (level of 3 features), 2 devices", score, reports, err)
	}
	if score, reports, err := ts.srv.DriftScore(ctx, protocol.BundleID{Name: "vad", Version: "1.0.0"}, []string{"d1"}, at(0)); err != nil || reports != 1 || score != 0 {
		t.Errorf("DriftScore(d1) = %v, %d, %v; want 0, 1", score, reports, err)
	}

	// A rollout's devices, and the version it rolls out.
	ro, _, err := ts.api.CreateRollout(ctx, []byte("target: site=b\nbundle: vad@1.0.0\nwaves: [{count: 1}]\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ts.api.Drift(ctx, client.DriftQuery{Rollout: ro.ID, Since: rfc(t0)})
	if err != nil {
		t.Fatal(err)
	}
	if r.Bundle != vad || r.Rollout != ro.ID || !slices.Equal(r.DeviceIDs, []string{"d3"}) || r.Windows != 2 || !slices.Equal(drifted(r), []string{"level"}) {
		t.Errorf("rollout %s: %s on %v, %d windows, drifted %v; want %s on [d3], 2 windows, [level]", ro.ID, r.Bundle, r.DeviceIDs, r.Windows, drifted(r), vad)
	}
	// The last report is on /metrics.
	if got := metric(t, ts, `fleetd_drift_share{bundle="`+vad+`"}`); got != r.Report.Share || got == 0 {
		t.Errorf("fleetd_drift_share = %g, want the report's %g", got, r.Report.Share)
	}
	for _, f := range r.Report.Features {
		if got := metric(t, ts, `fleetd_drift_statistic{bundle="`+vad+`",feature="`+f.Name+`"}`); got != f.Statistic {
			t.Errorf("fleetd_drift_statistic of %s = %g, want %g", f.Name, got, f.Statistic)
		}
	}

	// Errors.
	for _, c := range []struct {
		q    client.DriftQuery
		code int
		msg  string
	}{
		{client.DriftQuery{Bundle: "plain@1.0.0"}, http.StatusNotFound, "no drift profile"},
		{client.DriftQuery{Bundle: "vad@9.9.9"}, http.StatusNotFound, "not found"},
		{client.DriftQuery{Bundle: "vad"}, http.StatusBadRequest, "want name@version"},
		{client.DriftQuery{}, http.StatusBadRequest, "bundle=NAME@VERSION is required"},
		{client.DriftQuery{Bundle: vad, Since: "yesterday"}, http.StatusBadRequest, "since="},
		{client.DriftQuery{Bundle: vad, Since: "1h", Until: "2h"}, http.StatusBadRequest, "must be after since"},
		{client.DriftQuery{Bundle: vad, Selector: "site=a", Devices: []string{"d1"}}, http.StatusBadRequest, "at most one of"},
		{client.DriftQuery{Bundle: vad, Selector: "site=="}, http.StatusBadRequest, "selector"},
		{client.DriftQuery{Bundle: vad, Devices: []string{"bad/id"}}, http.StatusBadRequest, "devices"},
		{client.DriftQuery{Bundle: vad, Rollout: "r-none"}, http.StatusNotFound, "not found"},
	} {
		_, err := ts.api.Drift(ctx, c.q)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("Drift(%+v) = %v; want %d with %q", c.q, err, c.code, c.msg)
		}
	}
	if _, err := ts.srv.Drift(ctx, fleetd.DriftQuery{Bundle: protocol.BundleID{Name: "plain", Version: "1.0.0"}}); !errors.Is(err, fleetd.ErrNoProfile) {
		t.Errorf("Drift of a bundle without a profile: %v, want ErrNoProfile", err)
	}
}
