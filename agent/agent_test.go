package agent

import (
	"encoding/json"
	"errors"
	"fmt"
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
		var rec prediction
		if err := json.Unmarshal(p, &rec); err != nil {
			t.Fatal(err)
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
	var m metricsRecord
	for _, p := range kinds[protocol.RecordMetrics] {
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatal(err)
		}
		if m.Requests == 0 || m.P95Ms <= 0 || m.P50Ms > m.P95Ms || m.Provider != "cpu" {
			t.Errorf("metrics record %s", p)
		}
	}
	if stats.Appended != uint64(len(recs)) || stats.Dropped != 0 {
		t.Errorf("outbox stats %+v for %d records", stats, len(recs))
	}
}
