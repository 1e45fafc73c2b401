package fleetd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// rolloutDevice is a simulated device for the rollout tests: it reports
// the bundle it runs and, on a desired state, "installs" it at once.
type rolloutDevice struct {
	*device
	active  protocol.BundleID
	applied uint64
	epoch   string
	rec     uint64
}

// rolloutDevices enrols n devices cam-0.. labelled site=plant-7, each
// online, subscribed to its desired state and reporting active.
func (ts *testServer) rolloutDevices(t *testing.T, n int, active protocol.BundleID) []*rolloutDevice {
	t.Helper()
	var devs []*rolloutDevice
	for i := range n {
		id := fmt.Sprintf("cam-%d", i)
		pw := ts.enroll(t, id, map[string]string{"site": "plant-7"})
		d := &rolloutDevice{device: mustDialDevice(t, ts.srv.MQTTAddr(), id, pw), active: active, epoch: "e" + id}
		d.subscribeDesired()
		d.online()
		d.reportActive(nil)
		devs = append(devs, d)
	}
	return devs
}

func (d *rolloutDevice) reportActive(install *protocol.InstallStatus) {
	d.t.Helper()
	d.mustPublish(protocol.KindReported, &protocol.ReportedState{V: 1, DeviceID: d.id, Time: time.Now().UTC(),
		AgentVersion: "0.1.0", Active: &d.active, AppliedSeq: d.applied, Install: install, Provider: "cpu"})
}

// apply acts on the next desired state: the bundle becomes active.
func (d *rolloutDevice) apply() *protocol.DesiredState {
	d.t.Helper()
	ds := d.nextDesired(d.applied)
	d.applied = ds.Seq
	d.active = protocol.BundleID{Name: ds.Bundle.Name, Version: ds.Bundle.Version}
	d.reportActive(&protocol.InstallStatus{Seq: ds.Seq, Bundle: d.active, Phase: protocol.PhaseSucceeded, Time: time.Now().UTC()})
	return ds
}

// metrics sends one metrics window of the active bundle.
func (d *rolloutDevice) metrics(requests, errs int, p95 float64) {
	d.t.Helper()
	d.rec++
	p, _ := json.Marshal(map[string]any{"window": "1m", "model": d.active.ID(), "requests": requests, "errors": errs, "p95Ms": p95})
	d.mustPublish(protocol.KindTelemetry, &protocol.TelemetryBatch{V: 1, DeviceID: d.id, Epoch: d.epoch,
		Records: []protocol.Record{{ID: d.rec, Kind: protocol.RecordMetrics, Time: time.Now().UTC(), Payload: p}}})
}

func TestRolloutThroughFleetd(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, baseConfig(t))
	pub := testPublisher(t)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		b := pub.build(t, "vad", v, 10<<10)
		if _, _, err := ts.api.Push(ctx, b, b+".sig"); err != nil {
			t.Fatal(err)
		}
	}
	v1 := protocol.BundleID{Name: "vad", Version: "1.0.0"}
	devs := ts.rolloutDevices(t, 4, v1)

	// Spec problems come back as 400 with the field named.
	for spec, want := range map[string]string{
		"target: site=plant-7\nbundle: vad@1.1.0\nwaves: [{percent: 120}]\n": "waves[0].percent: must be in (0,100], got 120",
		"target: site=plant-7\nbundle: vad@1.1.0\nwavez: []\n":               "wavez: unknown field",
		"target: site=nowhere\nbundle: vad@1.1.0\nwaves: [{count: 1}]\n":     `target: selector "site=nowhere" matches no device`,
		"target: site=plant-7\nbundle: vad@9.0.0\nwaves: [{count: 1}]\n":     "bundle: vad@9.0.0 is not in the registry",
	} {
		_, _, err := ts.api.CreateRollout(ctx, []byte(spec), false)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 400 || !strings.Contains(ce.Message, want) {
			t.Errorf("create %q: %v, want 400 with %q", spec, err, want)
		}
	}

	spec := `
target: site=plant-7
bundle: vad@1.1.0
waves: [{name: canary, count: 1, bake: 0s}, {percent: 100, bake: 0s}]
gates: {errorRate: {max: 0.05, minReports: 1}}
`
	plan, err := func() (*rollout.Plan, error) {
		_, p, err := ts.api.CreateRollout(ctx, []byte(spec), true)
		return p, err
	}()
	if err != nil || len(plan.Devices) != 4 || plan.Steps[0].Size != 1 {
		t.Fatalf("dry run: %+v, %v", plan, err)
	}
	r, _, err := ts.api.CreateRollout(ctx, []byte(spec), false)
	if err != nil {
		t.Fatal(err)
	}
	// An overlapping rollout is refused with the holder's id.
	if _, _, err := ts.api.CreateRollout(ctx, []byte(spec), false); !errors.Is(err, client.ErrConflict) || !strings.Contains(err.Error(), r.ID) {
		t.Fatalf("overlapping create: %v", err)
	}
	byID := map[string]*rolloutDevice{}
	for _, d := range devs {
		byID[d.id] = d
	}
	// The canary is the one device assigned so far.
	st, err := ts.api.Rollout(ctx, r.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	var canary *rolloutDevice
	for _, ds := range st.DeviceList {
		if ds.Mode != "" {
			canary = byID[ds.ID]
		}
	}
	if canary == nil || st.Progress.Assigned != 1 {
		t.Fatalf("status after create %+v", st)
	}
	ds := canary.apply()
	if ds.RolloutID != r.ID || ds.Action != protocol.ActionInstall || ds.Bundle.Version != "1.1.0" {
		t.Fatalf("canary's desired state %+v", ds)
	}
	canary.metrics(100, 1, 12)
	// The canary passes; the rest get it.
	for _, d := range devs {
		if d != canary {
			d.apply()
			d.metrics(100, 0, 12)
		}
	}
	testenv.EventuallyState(t, "the rollout to succeed", func() (bool, string) {
		st, err := ts.api.Rollout(ctx, r.ID, false)
		if err != nil {
			return false, err.Error()
		}
		return st.State == rollout.StateSucceeded, fmt.Sprintf("%s step %d: %s %s", st.State, st.Step, st.Progress.Waiting, st.LastError)
	})
	h, err := ts.api.RolloutHistory(ctx, r.ID)
	if err != nil || h.Events[len(h.Events)-1].Type != rollout.EventSucceeded {
		t.Fatalf("history %+v, %v", h, err)
	}

	// Back to 1.0.0 by a second rollout whose error rate breaches: every
	// device is told to roll back to 1.1.0, the version it ran before.
	spec2 := strings.ReplaceAll(strings.Replace(spec, "vad@1.1.0", "vad@1.0.0", 1), "count: 1", "count: 2")
	r2, _, err := ts.api.CreateRollout(ctx, []byte(spec2), false)
	if err != nil {
		t.Fatal(err)
	}
	st, _ = ts.api.Rollout(ctx, r2.ID, true)
	var wave []*rolloutDevice
	for _, s := range st.DeviceList {
		if s.Mode != "" {
			wave = append(wave, byID[s.ID])
		}
	}
	if len(wave) != 2 {
		t.Fatalf("canary wave %+v", st.DeviceList)
	}
	for _, d := range wave {
		d.apply()
		d.metrics(100, 30, 12)
	}
	testenv.EventuallyState(t, "the rollback", func() (bool, string) {
		st, err := ts.api.Rollout(ctx, r2.ID, false)
		if err != nil {
			return false, err.Error()
		}
		return st.State == rollout.StateRolledBack, fmt.Sprintf("%s: %s %s", st.State, st.Progress.Waiting, st.LastError)
	})
	st, _ = ts.api.Rollout(ctx, r2.ID, false)
	if b := st.Breach; b == nil || b.Gate != rollout.GateErrorRate || b.Value != 0.3 || b.Threshold != 0.05 {
		t.Fatalf("breach %+v", st.Breach)
	}
	for _, d := range wave {
		ds := d.apply()
		if ds.Action != protocol.ActionRollback || ds.Bundle.Version != "1.1.0" || ds.RolloutID != r2.ID {
			t.Fatalf("%s: rollback desired state %+v", d.id, ds)
		}
		g := protocol.Guard{DeviceID: d.id}
		if err := g.Accept(ds, time.Now()); err != nil {
			t.Fatalf("the agent's guard refuses the rollback: %v", err)
		}
	}

	// The engine's state survives a fleetd restart.
	ts.restart()
	rs, err := ts.api.Rollouts(ctx)
	if err != nil || len(rs) != 2 || rs[0].ID != r2.ID || rs[0].State != rollout.StateRolledBack {
		t.Fatalf("after restart: %+v, %v", rs, err)
	}
	if _, err := ts.api.RolloutAction(ctx, r2.ID, "pause", api.RolloutAction{}); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("pause of a rolled back rollout: %v", err)
	}
	if _, err := ts.api.Rollout(ctx, "ro-nope", false); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unknown rollout: %v", err)
	}
}
