package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/slot"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// TestInstallServeRollback runs the agent in process on an empty data
// directory and drives it through installs, a rollback and refused
// bundles while inferring over the unix socket.
func TestInstallServeRollback(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	badSmoke := sileroBundle(t, spec{version: "3.0.0", want: 0.9})
	tooNew := sileroBundle(t, spec{version: "4.0.0", minAgent: "99.0.0"})
	forged := tampered(t, sileroBundle(t, spec{version: "5.0.0"}))

	s := newSetup(t, "")
	a := startAgent(t, s)
	ctx := t.Context()

	// Nothing installed: the API answers, but is not ready.
	if code, body := get(t, a.client, "/v2/health/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("ready without a model: %d %s", code, body)
	}
	st, err := a.client.Status(ctx)
	if err != nil || !st.Running || st.Active != nil || st.Ready {
		t.Fatalf("status before any install: %+v, %v", st, err)
	}

	served := 0 // inference requests that reached a model
	inferBoth := func(wantVersion string) {
		t.Helper()
		for _, raw := range []bool{false, true} {
			body := tensorRequest(t, fmt.Sprintf("req-%d", served))
			if raw {
				body = pcmFrame(t)
			}
			r := infer(t, a.client, body, raw)
			served++
			if r.ModelName != "silero-vad" || r.ModelVersion != wantVersion || !near(r.output(t), sileroOutput) {
				t.Fatalf("raw=%v: answer %+v, want silero-vad %s with output %v", raw, r, wantVersion, sileroOutput)
			}
		}
	}

	res, err := a.Install(ctx, v1.path, "", InstallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Active.ID != "silero-vad@1.0.0" || res.LastKnownGood != nil || res.Provider != "cpu" {
		t.Fatalf("install v1: %+v", res)
	}
	inferBoth("1.0.0")
	if code, body := get(t, a.client, "/v2/health/ready"); code != http.StatusOK {
		t.Fatalf("ready with a model: %d %s", code, body)
	}

	// The same version again: nothing to do.
	if res, err := a.Install(ctx, v1.path, v1.sig, InstallOptions{}); err != nil || res.Changed {
		t.Fatalf("reinstall v1: %+v, %v", res, err)
	}

	if res, err = a.Install(ctx, v2.path, v2.sig, InstallOptions{ID: "silero-vad@2.0.0"}); err != nil {
		t.Fatal(err)
	}
	if res.Active.ID != "silero-vad@2.0.0" || res.LastKnownGood.ID != "silero-vad@1.0.0" {
		t.Fatalf("install v2: %+v", res)
	}
	inferBoth("2.0.0")

	if res, err = a.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if res.Active.ID != "silero-vad@1.0.0" || res.LastKnownGood.ID != "silero-vad@2.0.0" {
		t.Fatalf("rollback: %+v", res)
	}
	inferBoth("1.0.0")

	// Refused bundles leave v1 in service.
	refusals := []struct {
		name   string
		b      built
		opts   InstallOptions
		want   error
		reason string
	}{
		{"smoke test fails", badSmoke, InstallOptions{}, model.ErrSmoke, ReasonSmokeFailed},
		{"needs a newer agent", tooNew, InstallOptions{}, slot.ErrAgentTooOld, ReasonAgentTooOld},
		{"tampered", forged, InstallOptions{}, bundle.ErrSignature, ReasonSignature},
		{"not the pinned version", v2, InstallOptions{ID: "silero-vad@2.1.0"}, slot.ErrMismatch, ReasonMismatch},
		{"downgrade", sileroBundle(t, spec{version: "0.9.0"}), InstallOptions{}, slot.ErrDowngrade, ReasonDowngrade},
		{"missing file", built{path: filepath.Join(t.TempDir(), "nope.bundle")}, InstallOptions{}, os.ErrNotExist, ReasonSource},
	}
	for _, tc := range refusals {
		_, err := a.Install(ctx, tc.b.path, tc.b.sig, tc.opts)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
		if got := ReasonOf(err); got != tc.reason {
			t.Errorf("%s: reason %q, want %q", tc.name, got, tc.reason)
		}
		inferBoth("1.0.0")
	}
	st, err = a.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Active.ID != "silero-vad@1.0.0" || st.LastKnownGood.ID != "silero-vad@2.0.0" || st.LastError == nil || !st.Ready {
		t.Fatalf("status after the refusals: %+v", st)
	}
	if le := a.Reported().LastError; le == nil || le.Op != "install" || le.Error == "" {
		t.Fatalf("reported lastError after the refusals: %+v", le)
	}

	// A bad request reaches the model and is sampled with its error.
	code, body, err := post(a.client, []byte(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`), false)
	if err != nil || code != http.StatusBadRequest {
		t.Fatalf("bad request: %d %s %v", code, body, err)
	}
	served++

	a.stop(t)
	recs, stats := records(t, s.dataDir)
	kinds := byKind(t, recs)
	if n := len(kinds[protocol.RecordPrediction]); n != served {
		t.Errorf("%d prediction records, want one per request (%d) at sample rate 1", n, served)
	}
	var sawError, sawFeatures bool
	for _, p := range kinds[protocol.RecordPrediction] {
		var rec protocol.PredictionRecord
		if err := json.Unmarshal(p, &rec); err != nil {
			t.Fatal(err)
		}
		if err := rec.Validate(); err != nil {
			t.Errorf("prediction record %s: %v", p, err)
		}
		if rec.Error != "" && rec.Code == http.StatusBadRequest {
			sawError = true
		}
		if _, ok := rec.Features["features"]; ok && rec.Raw {
			sawFeatures = true
		}
		if rec.Error == "" && !strings.HasPrefix(rec.Model, "silero-vad@") {
			t.Errorf("prediction record %s", p)
		}
	}
	if !sawError || !sawFeatures {
		t.Errorf("prediction records lack the failed request (%v) or the pre-processor's features (%v)", sawError, sawFeatures)
	}
	for typ, want := range map[string]int{
		"event:agent.started":      1,
		"event:install.started":    3 + len(refusals), // v1, v1 again, v2, the refusals
		"event:install.succeeded":  3,
		"event:install.failed":     len(refusals),
		"event:rollback.succeeded": 1,
	} {
		if got := len(kinds[typ]); got != want {
			t.Errorf("%d %s records, want %d", got, typ, want)
		}
	}
	if n := len(kinds[protocol.RecordMetrics]); n != 2 {
		// One window (the interval is a minute), closed at shutdown.
		t.Errorf("%d metrics records, want one per version served (2)", n)
	}
	var m protocol.MetricsRecord
	for _, p := range kinds[protocol.RecordMetrics] {
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatal(err)
		}
		if err := m.Validate(); err != nil {
			t.Errorf("metrics record %s: %v", p, err)
		}
		if m.Requests == 0 || m.P95Ms <= 0 || m.P50Ms > m.P95Ms || m.Provider != "cpu" {
			t.Errorf("metrics record %s", p)
		}
	}
	if stats.Appended != uint64(len(recs)) || stats.Dropped != 0 {
		t.Errorf("outbox stats %+v for %d records", stats, len(recs))
	}
}

// freeAddr returns a loopback address nobody listens on (for a moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestTCPAndMetrics: the inference API on loopback TCP (without the admin
// API) and Prometheus metrics on their own address.
func TestTCPAndMetrics(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	tcp, metrics := freeAddr(t), freeAddr(t)
	s := newSetupWith(t, setupOptions{rate: 1, api: "  tcp: " + tcp, extra: "metrics:\n  listen: " + metrics + "\n"})
	a := startAgent(t, s)
	if _, err := a.Install(t.Context(), v1.path, "", InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	httpGet := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	resp, err := http.Post("http://"+tcp+"/v2/models/silero-vad/infer", "application/json", bytes.NewReader(tensorRequest(t, "tcp")))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"model_version":"1.0.0"`) {
		t.Fatalf("infer over TCP: %d %s", resp.StatusCode, body)
	}
	if code, body := httpGet("http://" + tcp + PathStatus); code != http.StatusNotFound {
		t.Fatalf("the admin API answers on TCP: %d %s", code, body)
	}
	code, text := httpGet("http://" + metrics + "/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`edge_agent_model_active{name="silero-vad",provider="cpu",version="1.0.0"} 1`,
		`edge_agent_api_inference_requests_total{code="200",model="silero-vad"} 1`,
		"edge_agent_prediction_samples_total",
		"edge_agent_buffer_records",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// breakModel truncates the model file of an installed bundle, as bit rot
// or a botched manual edit would.
func breakModel(t *testing.T, s *slot.Slot) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.Dir, bundle.ModelFile), []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStartFallback: an active bundle that cannot be loaded at start is
// replaced by the last-known-good on the agent's own decision; without
// one the agent runs degraded until an install repairs it.
func TestStartFallback(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	s := newSetup(t, "")
	a := startAgent(t, s)
	for _, b := range []built{v1, v2} {
		if _, err := a.Install(t.Context(), b.path, "", InstallOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := a.Status()
	a.stop(t)
	breakModel(t, st.Active)

	a = startAgent(t, s)
	st, err := a.Status()
	if err != nil || st.Active.ID != "silero-vad@1.0.0" || st.LastKnownGood.ID != "silero-vad@2.0.0" || !st.Ready || st.Degraded != "" {
		t.Fatalf("after a start with a broken active bundle: %+v, %v", st, err)
	}
	if r := infer(t, a.client, tensorRequest(t, ""), false); r.ModelVersion != "1.0.0" {
		t.Fatalf("serving %s", r.ModelVersion)
	}
	a.stop(t)
	recs, _ := records(t, s.dataDir)
	var fallback bool
	for _, p := range byKind(t, recs)["event:"+string(protocol.EventRollbackSucceeded)] {
		var e protocol.Event
		if err := json.Unmarshal(p, &e); err != nil {
			t.Fatal(err)
		}
		fallback = fallback || (e.Reason == ReasonLoadFailed && e.Bundle.ID() == "silero-vad@1.0.0" && e.From.ID() == "silero-vad@2.0.0")
	}
	if !fallback {
		t.Error("no rollback.succeeded event with reason load-failed")
	}

	// Now 1.0.0 is broken too (and 2.0.0, the last-known-good, was
	// already): nothing can be served, but the agent runs and takes an
	// install.
	breakModel(t, st.Active)
	a = startAgent(t, s)
	st, err = a.Status()
	if err != nil || st.Ready || st.Degraded == "" || st.Active.ID != "silero-vad@1.0.0" {
		t.Fatalf("degraded status %+v, %v", st, err)
	}
	if code, body := get(t, a.client, "/v2/health/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("ready while degraded: %d %s", code, body)
	}
	if !strings.HasPrefix(a.statusLine(), "degraded: silero-vad@1.0.0 cannot be loaded") {
		t.Errorf("STATUS=%s", a.statusLine())
	}
	v3 := sileroBundle(t, spec{version: "3.0.0"})
	if _, err := a.Install(t.Context(), v3.path, "", InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := infer(t, a.client, tensorRequest(t, ""), false); r.ModelVersion != "3.0.0" {
		t.Fatalf("serving %s after the repair", r.ModelVersion)
	}
	if st, _ := a.Status(); !st.Ready || st.Degraded != "" {
		t.Fatalf("status after the repair %+v", st)
	}
}
