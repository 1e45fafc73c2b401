package fleetd_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// scrape reads /metrics with the Prometheus text parser: a malformed
// exposition fails the test.
func scrape(t testing.TB, ts *testServer) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.srv.URL()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(cptest.ReadFile(t, filepath.Join(ts.cfg.DataDir, fleetd.OperatorTokenFile))))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: not the Prometheus text format: %v", err)
	}
	return fams
}

// sample finds the sample of family name whose labels include want
// ("k=v" pairs); ok is false when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, want ...string) (m *dto.Metric, ok bool) {
	f := fams[name]
	if f == nil {
		return nil, false
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if got[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// metric returns the value of one sample, written as in the exposition
// (`fleetd_ingest_refused_total{reason="malformed"}`), or 0 if absent.
func metric(t testing.TB, ts *testServer, s string) float64 {
	t.Helper()
	name, rest, _ := strings.Cut(s, "{")
	var labels []string
	for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			labels = append(labels, k+"="+strings.Trim(v, `"`))
		}
	}
	if m, ok := sample(scrape(t, ts), name, labels...); ok {
		return value(m)
	}
	return 0
}

// value is a gauge's or counter's value, a histogram's count.
func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// TestMetrics scrapes /metrics with the Prometheus parser: the fixed
// series are there at zero from the start, then rollout state, step and
// gate evaluations, pushes and refusals, ingest lag, broker clients and
// request durations follow what happens.
func TestMetrics(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, baseConfig(t))

	fams := scrape(t, ts)
	for _, s := range []struct {
		name   string
		labels []string
	}{
		{"fleetd_rollouts", []string{"state=running"}}, {"fleetd_rollouts", []string{"state=rolled_back"}},
		{"fleetd_rollouts", []string{"state=succeeded"}}, {"fleetd_rollouts", []string{"state=paused"}},
		{"fleetd_registry_pushes_total", []string{"result=stored"}}, {"fleetd_registry_pushes_total", []string{"result=untrusted_key"}},
		{"fleetd_registry_pushes_total", []string{"result=no_trusted_keys"}}, {"fleetd_registry_pushes_total", []string{"result=invalid"}},
		{"fleetd_ingest_messages_total", []string{"kind=telemetry", "result=accepted"}},
		{"fleetd_ingest_messages_total", []string{"kind=status", "result=failed"}},
		{"fleetd_desired_published_total", []string{"result=ok"}}, {"fleetd_desired_published_total", []string{"result=error"}},
		{"fleetd_records_delivered_total", nil}, {"fleetd_ingest_lag_seconds", nil}, {"fleetd_broker_clients", nil},
		{"fleetd_devices", []string{"state=online"}}, {"fleetd_desired_unpublished", nil},
	} {
		m, ok := sample(fams, s.name, s.labels...)
		if !ok {
			t.Errorf("a fresh fleetd lacks %s%v", s.name, s.labels)
		} else if value(m) != 0 {
			t.Errorf("%s%v = %g at start, want 0", s.name, s.labels, value(m))
		}
	}
	if h := fams["fleetd_ingest_lag_seconds"]; h == nil || h.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("fleetd_ingest_lag_seconds is not a histogram: %v", h)
	}

	// A push, a refused push, a device with a rollout on it.
	pub := testPublisher(t)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		b := pub.build(t, "vad", v, 4<<10)
		if _, _, err := ts.api.Push(ctx, b, b+".sig"); err != nil {
			t.Fatal(err)
		}
	}
	bad := newPublisher(t).build(t, "vad", "1.2.0", 4<<10)
	if _, _, err := ts.api.Push(ctx, bad, bad+".sig"); err == nil {
		t.Fatal("an untrusted push was stored")
	}
	// Two devices in one wave without a bake; only one reports metrics,
	// so the error-rate gate (2 reports needed) stays evaluated and
	// waiting, and the rollout running.
	devs := ts.rolloutDevices(t, 2, protocol.BundleID{Name: "vad", Version: "1.0.0"})
	r, _, err := ts.api.CreateRollout(ctx, []byte("target: site=plant-7\nbundle: vad@1.1.0\nwaveDeadline: 1h\n"+
		"waves: [{name: canary, count: 2, bake: 0s}]\ngates: {errorRate: {max: 0.05, minReports: 2}}\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		d.apply()
	}
	devs[0].metrics(100, 2, 12)
	testenv.EventuallyState(t, "the gate evaluated", func() (bool, string) {
		st, err := ts.api.Rollout(ctx, r.ID, false)
		if err != nil {
			return false, err.Error()
		}
		for _, g := range st.Gates {
			if g.Gate == "errorRate" && g.Reports == 1 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", st.Gates)
	})

	fams = scrape(t, ts)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"fleetd_rollouts", []string{"state=running"}, 1},
		{"fleetd_rollout_active", []string{"rollout=" + r.ID, "state=running", "bundle=vad@1.1.0"}, 1},
		{"fleetd_rollout_step", []string{"rollout=" + r.ID}, 1},
		{"fleetd_rollout_steps", []string{"rollout=" + r.ID}, 1},
		{"fleetd_rollout_gate_value", []string{"rollout=" + r.ID, "gate=errorRate", "status=waiting"}, 0.02},
		{"fleetd_rollout_gate_threshold", []string{"rollout=" + r.ID, "gate=errorRate"}, 0.05},
		{"fleetd_registry_pushes_total", []string{"result=stored"}, 2},
		{"fleetd_registry_pushes_total", []string{"result=untrusted_key"}, 1},
		{"fleetd_broker_clients", nil, 2},
		{"fleetd_devices", []string{"state=online"}, 2},
	} {
		m, ok := sample(fams, c.name, c.labels...)
		if !ok || value(m) != c.want {
			got := "absent"
			if ok {
				got = fmt.Sprint(value(m))
			}
			t.Errorf("%s%v = %s, want %g (family: %v)", c.name, c.labels, got, c.want, fams[c.name])
		}
	}
	if m, ok := sample(fams, "fleetd_ingest_lag_seconds"); !ok || m.Histogram.GetSampleCount() < 1 {
		t.Errorf("fleetd_ingest_lag_seconds observed nothing: %v", m)
	}
	if m, ok := sample(fams, "fleetd_http_request_duration_seconds", "route="+api.Prefix+"/bundles"); !ok || m.Histogram.GetSampleCount() != 3 {
		t.Errorf("push durations: %v, want 3 observations", m)
	}
	// Every _seconds family is a histogram.
	var names []string
	for name, f := range fams {
		if strings.HasSuffix(name, "_seconds") && strings.HasPrefix(name, "fleetd_") && f.GetType() != dto.MetricType_HISTOGRAM {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) > 0 {
		t.Errorf("durations that are not histograms: %v", names)
	}
}
