package fleetd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/controlplane/notify/notifytest"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// quickEvents retries event deliveries within milliseconds.
var quickEvents = &fleetd.EventTiming{RetryMax: 1, RetryWaitMin: time.Millisecond, RetryWaitMax: 2 * time.Millisecond,
	MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}

func TestEventsConfigInvalid(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		yaml string
		want string
	}{
		{"events:\n  subscriptions:\n    - url: http://127.0.0.1:9/\n", "config.yaml:3:7: events.subscriptions[0].name"},
		{"events:\n  subscriptions:\n    - name: a\n      url: ftp://127.0.0.1/\n", `config.yaml:4:12: events.subscriptions[0].url: "ftp://127.0.0.1/" is not an http(s)`},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://u:pw@127.0.0.1/\n", "events.subscriptions[0].url: no credentials in the URL"},
		{"events:\n  subscriptions:\n    - {name: a, url: 'http://127.0.0.1/'}\n    - {name: a, url: 'http://127.0.0.1/'}\n", `events.subscriptions[1].name: "a" is also the name of events.subscriptions[0]`},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      types: [drift]\n", `events.subscriptions[0].types[0]: "drift": not an event type`},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      selector: 'a=b=c'\n", "events.subscriptions[0].selector"},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      bundles: ['vad@']\n", "events.subscriptions[0].bundles[0]: bundle pattern"},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      secret: short\n", "events.subscriptions[0].secret: a signing secret needs at least 16 bytes"},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      secret: 0123456789abcdef0\n      secretFile: s\n", "events.subscriptions[0].secret: give secret or secretFile, not both"},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      mode: json\n", `events.subscriptions[0].mode: "json": must be binary or structured`},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      template: argo\n", `events.subscriptions[0].template: "argo": must be airflow or kubeflow`},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      template: airflow\n", "events.subscriptions[0].airflow.dagId: required with template airflow"},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      template: kubeflow\n      kubeflow: {pipelineId: p}\n", "kubeflow.pipelineVersionId are required"},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      airflow: {dagId: d}\n", "events.subscriptions[0].template: airflow or kubeflow settings need"},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      username: admin\n", "events.subscriptions[0].username: username and passwordFile go together"},
		{"events:\n  driftWindows: 0\n  driftShare: 1.5\n", "events.driftShare: must be above 0 and at most 1, got 1.5"},
		{"events:\n  maxAge: 10s\n", "events.maxAge: must be at least 1m"},
		{"events:\n  retention: 30s\n", "config.yaml:2:14: events.retention: must be at least 1m, got 30s"},
		{"events:\n  maxAge: 2d\n  retention: -1h\n", "config.yaml:3:14: events.retention: must be at least 1m, got -1h0m0s"},
		{"events:\n  source: 'has space'\n", "events.source"},
		{"events:\n  subscriptions:\n    - name: a\n      url: http://127.0.0.1/\n      colour: red\n", "events.subscriptions[0].colour: unknown key"},
	} {
		c, err := fleetd.ParseConfig([]byte(tc.yaml), "config.yaml", dir)
		if err == nil {
			err = c.Validate()
		}
		if !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n  %v\n  want ErrConfig containing %q", tc.yaml, err, tc.want)
		}
	}
}

// TestEventsRetentionConfig: events.retention counts from when an
// event's deliveries are done, so it may be shorter than events.maxAge
// (a pending event is never pruned); the shortest is 1m.
func TestEventsRetentionConfig(t *testing.T) {
	for _, y := range []string{
		"events:\n  maxAge: 30d\n",
		"events:\n  maxAge: 2d\n  retention: 1h\n",
		"events:\n  maxAge: 1m\n  retention: 1m\n",
	} {
		c, err := fleetd.ParseConfig([]byte(y), "config.yaml", t.TempDir())
		if err == nil {
			err = c.Validate()
		}
		if err != nil {
			t.Errorf("%q: %v", y, err)
		}
	}
}

func TestEventsConfigFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hook.secret"), []byte("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"), 0o600)
	c, err := fleetd.ParseConfig([]byte(`
events:
  driftWindows: 5
  subscriptions:
    - name: retrain
      url: https://127.0.0.1:8443/hooks/edgefleet
      types: [dev.edgefleet.drift.persisted, dev.edgefleet.rollout.rolled_back]
      selector: site=berlin
      bundles: [vad, "kws@2.*"]
      secretFile: hook.secret
    - name: airflow
      url: http://127.0.0.1:8080
      template: airflow
      airflow: {dagId: retrain_vad}
      username: admin
      passwordFile: airflow.password
`), "config.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if s := c.Events.Subscriptions; s[0].SecretFile != filepath.Join(dir, "hook.secret") || s[1].PasswordFile != filepath.Join(dir, "airflow.password") {
		t.Errorf("paths not resolved: %+v", s)
	}
	// A missing password file fails fleetd's start, naming the key.
	c.DataDir, c.HTTP.Listen, c.Broker.Listen = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	c.Announce = nil
	if _, err := fleetd.New(*c); !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), "events.subscriptions[1].passwordFile") {
		t.Fatalf("New with a missing password file: %v", err)
	}
}

// TestEventsOfRollback is the whole path: a rollout whose gate breaches
// rolls back, fleetd emits gate_breached and rolled_back, the receiver
// (the CloudEvents SDK's) is down, fleetd restarts, and once the
// receiver is back each event arrives, signed, with the same id;
// fleetctl's client lists them delivered. A device's failed install is an
// event too.
func TestEventsOfRollback(t *testing.T) {
	ctx := context.Background()
	const secret = "0123456789abcdef-events-secret"
	rcv, err := notifytest.Start([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	rcv.Fail(1<<30, http.StatusServiceUnavailable)

	cfg := baseConfig(t)
	cfg.Events = fleetd.EventsConfig{Source: "https://fleetd.test", Subscriptions: []fleetd.SubscriptionConfig{
		{Name: "ce", URL: rcv.URL, Secret: secret},
		{Name: "installs", URL: rcv.URL, Secret: secret, Types: []string{notify.TypeInstallFailed}, Selector: "site=plant-7"},
	}}
	cfg.EventTiming = quickEvents
	ts := startServer(t, cfg)
	pub := testPublisher(t)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		ts.push(t, pub, "vad", v, 10<<10)
	}
	v1 := protocol.BundleID{Name: "vad", Version: "1.0.0"}
	devs := ts.rolloutDevices(t, 2, v1)
	r, _, err := ts.api.CreateRollout(ctx, []byte(`
target: site=plant-7
bundle: vad@1.1.0
waves: [{name: canary, count: 2, bake: 0s}]
gates: {errorRate: {max: 0.05, minReports: 1}}
`), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		d.apply()
		d.metrics(100, 30, 12)
	}
	testenv.EventuallyState(t, "the rollback", func() (bool, string) {
		st, err := ts.api.Rollout(ctx, r.ID, false)
		if err != nil {
			return false, err.Error()
		}
		return st.State == rollout.StateRolledBack, string(st.State)
	})

	// A failed install, sent twice (the outbox's at-least-once): one
	// event.
	fail := &protocol.Event{V: 1, DeviceID: "cam-0", Epoch: "ecam-0", ID: 77, Time: time.Now().UTC(), Type: protocol.EventInstallFailed,
		Seq: 9, RolloutID: r.ID, Bundle: &protocol.BundleID{Name: "vad", Version: "1.1.0"}, Reason: "smoke-failed", Message: "smoke test 2 failed"}
	devs[0].mustPublish(protocol.KindEvents, fail)
	devs[0].mustPublish(protocol.KindEvents, fail)

	var before *api.EventList
	testenv.EventuallyState(t, "three events, pending after failed attempts", func() (bool, string) {
		l, err := ts.api.Events(ctx, client.EventQuery{})
		if err != nil {
			return false, err.Error()
		}
		before = l
		if len(l.Events) != 3 {
			return false, fmt.Sprintf("%d events", len(l.Events))
		}
		// Each subscription delivers in order: the first event of each
		// is being retried, the others wait behind it.
		tried := map[string]bool{}
		for _, e := range l.Events {
			for _, d := range e.Deliveries {
				if d.State != api.DeliveryPending {
					return false, fmt.Sprintf("%s: %+v", e.ID, d)
				}
				if d.Attempts > 0 && d.LastStatus == http.StatusServiceUnavailable {
					tried[d.Subscription] = true
				}
			}
		}
		return tried["ce"] && tried["installs"], fmt.Sprintf("tried %v", tried)
	})
	types := map[string]api.Event{}
	for _, e := range before.Events {
		types[e.Type] = e
	}
	breach, back, inst := types[notify.TypeGateBreached], types[notify.TypeRolledBack], types[notify.TypeInstallFailed]
	if breach.Subject != r.ID || back.Subject != r.ID || inst.Subject != "cam-0" || len(inst.Deliveries) != 2 || len(back.Deliveries) != 1 ||
		back.Source != "https://fleetd.test/rollouts" || inst.Source != "https://fleetd.test/devices" || back.Labels["site"] != "plant-7" {
		t.Fatalf("events %+v", before.Events)
	}

	// Restart with deliveries pending; the receiver comes back.
	ts.restart()
	rcv.Fail(0, 0)
	testenv.EventuallyState(t, "every delivery made", func() (bool, string) {
		l, err := ts.api.Events(ctx, client.EventQuery{State: api.DeliveryPending})
		if err != nil {
			return false, err.Error()
		}
		return len(l.Events) == 0, fmt.Sprintf("%d events pending", len(l.Events))
	})
	after, err := ts.api.Events(ctx, client.EventQuery{})
	if err != nil || len(after.Events) != 3 {
		t.Fatalf("after: %+v, %v", after, err)
	}
	for i, e := range after.Events {
		if e.ID != before.Events[i].ID {
			t.Errorf("event %d: id %s, was %s", i, e.ID, before.Events[i].ID)
		}
		for _, d := range e.Deliveries {
			if d.State != api.DeliveryDelivered || d.Attempts < 1 || d.LastStatus != http.StatusOK {
				t.Errorf("%s: %+v", e.ID, d)
			}
		}
	}
	if p := rcv.Problems(); len(p) > 0 {
		t.Errorf("receiver problems: %v", p)
	}
	got := map[string]cloudevents.Event{}
	for _, e := range rcv.Events() {
		got[e.ID()] = e
	}
	if len(got) != 3 || rcv.Copies(inst.ID) != 2 || rcv.Copies(back.ID) != 1 {
		t.Fatalf("received %v (copies of %s: %d)", got, inst.ID, rcv.Copies(inst.ID))
	}
	var rb notify.RollbackData
	if err := json.Unmarshal(got[back.ID].Data(), &rb); err != nil {
		t.Fatal(err)
	}
	if !rb.Automatic || rb.Gate != rollout.GateErrorRate || rb.Bundle != "vad@1.1.0" || rb.Rollout != r.ID || rb.DevicesSent != 2 {
		t.Errorf("rolled_back data %+v", rb)
	}
	var gd notify.GateData
	if err := json.Unmarshal(got[breach.ID].Data(), &gd); err != nil {
		t.Fatal(err)
	}
	if gd.Gate != rollout.GateErrorRate || gd.Value != 0.3 || gd.Threshold != 0.05 || gd.Action != "rollback" || gd.StepName != "canary" {
		t.Errorf("gate_breached data %+v", gd)
	}
	var id notify.InstallData
	if err := json.Unmarshal(got[inst.ID].Data(), &id); err != nil {
		t.Fatal(err)
	}
	if id.Device != "cam-0" || id.Reason != "smoke-failed" || id.Bundle != "vad@1.1.0" || id.Labels["site"] != "plant-7" {
		t.Errorf("install_failed data %+v", id)
	}
}

// TestDriftEventThroughFleetd: drift records a device sends make a
// drift.persisted event after events.driftWindows drifted windows.
func TestDriftEventThroughFleetd(t *testing.T) {
	ctx := context.Background()
	rcv, err := notifytest.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	cfg := baseConfig(t)
	cfg.Events = fleetd.EventsConfig{DriftWindows: 2, Subscriptions: []fleetd.SubscriptionConfig{
		{Name: "drift", URL: rcv.URL, Types: []string{notify.TypeDriftPersisted}, Bundles: []string{"vad@2.*"}}}}
	cfg.EventTiming = quickEvents
	ts := startServer(t, cfg)
	pw := ts.enroll(t, "cam-1", map[string]string{"site": "berlin"})
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "cam-1", pw)
	d.online()
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)
	send := func(id uint64, score float64) {
		s := score
		p, _ := json.Marshal(protocol.DriftRecord{Model: "vad@2.0.0", Profile: "p1", Start: t0.Add(time.Duration(id-1) * time.Minute),
			End: t0.Add(time.Duration(id) * time.Minute), Predictions: 10, Score: &s, Tested: 2, Drifted: []string{"rms"}, Summary: json.RawMessage(`"AA"`)})
		d.mustPublish(protocol.KindTelemetry, &protocol.TelemetryBatch{V: 1, DeviceID: "cam-1", Epoch: "e1",
			Records: []protocol.Record{{ID: id, Kind: protocol.RecordDrift, Time: t0.Add(time.Duration(id) * time.Minute), Payload: p}}})
	}
	send(1, 0.5)
	send(2, 1)
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	e, err := rcv.Wait(cctx, func(e cloudevents.Event) bool { return e.Type() == notify.TypeDriftPersisted })
	if err != nil {
		l, _ := ts.api.Events(ctx, client.EventQuery{})
		t.Fatalf("%v; events %+v", err, l)
	}
	var dd notify.DriftData
	if err := json.Unmarshal(e.Data(), &dd); err != nil {
		t.Fatal(err)
	}
	if e.Subject() != "cam-1" || dd.Windows != 2 || dd.FeatureScores["rms"] != 1 || dd.Labels["site"] != "berlin" {
		t.Errorf("drift event %s", e)
	}
}
