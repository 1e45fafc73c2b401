package cli

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// sendDrift connects device id and publishes one drift record per
// window, as the agent writes them (agent/drift.go).
func sendDrift(t *testing.T, addr, id, password string, windows ...json.RawMessage) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(id).SetPassword(password).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	defer c.Disconnect(10)
	b := &protocol.TelemetryBatch{V: 1, DeviceID: id, Epoch: "e"}
	for i, w := range windows {
		b.Records = append(b.Records, protocol.Record{ID: uint64(i + 1), Kind: protocol.RecordDrift, Time: time.Now().UTC(), Payload: w})
	}
	payload, err := protocol.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	topic, _ := protocol.Topic(id, protocol.KindTelemetry)
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// driftWindow is a drift record's payload: n predictions of level ~
// N(shift, 1) and rate ~ N(0, 1).
func driftWindow(t *testing.T, p *drift.Profile, seed uint64, n int, shift float64) json.RawMessage {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	s := drift.NewSummary(p)
	s.Start, s.End = time.Now().Add(-time.Minute), time.Now()
	for range n {
		if err := s.Observe([]float64{rng.NormFloat64() + shift, rng.NormFloat64()}); err != nil {
			t.Fatal(err)
		}
		s.ObserveHealth(2*time.Millisecond, false)
	}
	enc, err := s.MarshalBase64JSON()
	if err != nil {
		t.Fatal(err)
	}
	return json.RawMessage(fmt.Sprintf(`{"model":"demo@0.3.0","profile":%q,"summary":%s}`, s.Profile(), enc))
}

// TestDriftCommand: a bundle built with a profile (fleetctl profile build,
// bundle build, sign, push), two devices sending drift windows over MQTT,
// and fleetctl drift's table and JSON, by selector and device list, and
// its refusals.
func TestDriftCommand(t *testing.T) {
	f := startFleetd(t)
	dir, data, keys, srv, remote, fc := f.dir, f.data, f.keys, f.srv, f.remote, f.fc

	// The profile: 5,000 rows of level and rate ~ N(0, 1).
	schema := filepath.Join(dir, "schema.yaml")
	if err := os.WriteFile(schema, []byte("features:\n  - {name: level, kind: numerical}\n  - {name: rate, kind: numerical}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var csv strings.Builder
	csv.WriteString("level,rate\n")
	rng := rand.New(rand.NewPCG(9, 9))
	for range 5000 {
		fmt.Fprintf(&csv, "%g,%g\n", rng.NormFloat64(), rng.NormFloat64())
	}
	input := filepath.Join(dir, "ref.csv")
	if err := os.WriteFile(input, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := demoSpec(t)
	wantOK(t, fleetctl(t, okCheck, "profile", "build", "--input", input, "--schema", schema, "--out", filepath.Join(spec, "profile.json")), "profile build")
	if err := os.WriteFile(filepath.Join(spec, "bundle.yaml"), []byte(specYAML+"profile: profile.json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "demo-0.3.0.bundle")
	wantOK(t, fleetctl(t, okCheck, "bundle", "build", spec, "--out", file), "bundle build")
	wantOK(t, fleetctl(t, nil, "bundle", "sign", "--key", filepath.Join(keys, "signing.key"), file), "bundle sign")
	wantOK(t, fc("bundle", "push", file), "bundle push")
	p, err := drift.LoadProfile(filepath.Join(spec, "profile.json"))
	if err != nil {
		t.Fatal(err)
	}

	// cam-1 (ring=canary) sees level shifted by 0.5σ, cam-2 does not.
	enrolFile := filepath.Join(data, enrolTokenRel)
	for i, dev := range []struct {
		id, label string
		shift     float64
	}{{"cam-1", "ring=canary", 0.5}, {"cam-2", "ring=main", 0}} {
		r := fleetctl(t, nil, "enroll", dev.id, "--label", dev.label, "--server", srv.URL(), "--enrol-token-file", enrolFile, "-o", "json")
		wantOK(t, r, "enroll")
		var e api.Enrolment
		if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
			t.Fatal(err)
		}
		sendDrift(t, srv.MQTTAddr(), dev.id, e.Password,
			driftWindow(t, p, uint64(2*i), 600, dev.shift), driftWindow(t, p, uint64(2*i+1), 400, dev.shift))
	}

	r := fc("drift", "demo@0.3.0", "--selector", "ring=canary", "--since", "1h")
	wantOK(t, r, "drift --selector")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("drift printed %d lines:\n%s", len(lines), r.stdout)
	}
	for i, want := range [][]string{
		{"FEATURE", "TEST", "STATISTIC", "THRESHOLD", "DRIFT", "VALUES", "STATUS"},
		{"level", "wasserstein", "≥ 0.1", "DRIFT", "1000", "ok"},
		{"rate", "wasserstein", "≥ 0.1", "no", "1000", "ok"},
		{"demo@0.3.0: DRIFT: 1 of 2 features drifted (share 0.50 ≥ 0.5); 1 of 1 devices reporting, 2 windows, 1000 predictions, 0 errors, latency p50/p95/p99 2", " ms; since "},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q:\n%s", i, w, r.stdout)
			}
		}
	}

	// --exit-code, with the built binary: 5 on drift, 0 without.
	bin := newBinary(t)
	flags := slices.Concat(remote, []string{"--since", "1h", "--exit-code"})
	wantExit(t, bin.run(append([]string{"drift", "demo@0.3.0", "--selector", "ring=canary"}, flags...)...), ExitUnwanted, "drift --exit-code on drift", "demo@0.3.0: drift found")
	wantOK(t, bin.run(append([]string{"drift", "demo@0.3.0", "--devices", "cam-2"}, flags...)...), "drift --exit-code without drift")

	r = fc("drift", "demo@0.3.0", "--devices", "cam-2", "-o", "json")
	wantOK(t, r, "drift --devices -o json")
	var rep api.DriftReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if rep.Bundle != "demo@0.3.0" || rep.Devices != 1 || rep.Reporting != 1 || rep.Windows != 2 || rep.Report == nil ||
		rep.Report.Drift || rep.Report.Tested != 2 || rep.Report.Features[0].Count != 1000 {
		t.Errorf("drift -o json: %+v\n%s", rep, r.stdout)
	}

	r = fc("drift", "demo@0.3.0", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	wantOK(t, r, "drift with nothing in range")
	if !strings.Contains(r.stdout, "not_enough_data") || !strings.Contains(r.stdout, "demo@0.3.0: not enough data; 0 of 2 devices reporting, 0 windows") {
		t.Errorf("drift with nothing in range printed\n%s", r.stdout)
	}

	wantExit(t, fc("drift"), ExitUsage, "no bundle", "missing NAME@VERSION")
	wantExit(t, fc("drift", "demo"), ExitUsage, "no version", "want NAME@VERSION")
	wantExit(t, fc("drift", "demo@0.3.0", "--since", "yesterday"), ExitUsage, "bad --since", "--since")
	wantExit(t, fc("drift", "demo@0.3.0", "--selector", "ring=canary", "--devices", "cam-1"), ExitUsage, "two device choices", "at most one of")
	wantExit(t, fc("drift", "demo@9.9.9"), ExitNotFound, "unknown version", "HTTP 404")
	wantExit(t, fc("drift", "demo@0.3.0", "-o", "xml"), ExitUsage, "bad output", "unknown output format")
}
