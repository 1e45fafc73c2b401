package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

const fourWaves = `
name: vad 1.1
target: ""
bundle: vad@1.1.0
waves:
  - name: canary
    count: 1
    bake: 10m
  - percent: 5
    bake: 10m
  - percent: 25
    bake: 10m
  - percent: 100
gates:
  errorRate: {max: 0.05}
  latencyP95: {maxRatio: 1.5}
`

func allIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = devID(i)
	}
	return out
}

func TestFourWavesToAllDevices(t *testing.T) {
	e := newEnv(t, 100)
	r := e.create(fourWaves)
	order := CohortOrder(r.ID, allIDs(100))
	sizes := []int{1, 5, 25, 100}
	for i, s := range r.Steps {
		if s.Size != sizes[i] {
			t.Fatalf("step %d size %d, want %d (steps %+v)", i, s.Size, sizes[i], r.Steps)
		}
	}
	for step := range 3 {
		r = e.get(r.ID)
		wantState(t, r, StateRunning)
		wantStep(t, r, step)
		if got := e.assigned(r.ID); !slices.Equal(got, order[:sizes[step]]) {
			t.Fatalf("step %d assigned %v, want the cohort prefix %v", step, got, order[:sizes[step]])
		}
		if want := e.clock.Now().Add(10 * time.Minute); !r.BakeUntil.Equal(want) {
			t.Fatalf("step %d bakes until %v, want %v", step, r.BakeUntil, want)
		}
		// Half-way through the bake nothing moves.
		e.advance(5 * time.Minute)
		wantStep(t, e.get(r.ID), step)
		e.advance(5 * time.Minute)
	}
	r = e.get(r.ID)
	wantState(t, r, StateSucceeded)
	if got := e.running(v2); got != 100 {
		t.Fatalf("%d devices run %s, want 100", got, v2.ID())
	}
	if r.Progress.Installed != 100 || r.Progress.Assigned != 100 {
		t.Fatalf("progress %+v", r.Progress)
	}
	for _, g := range r.Gates {
		if g.Status != GatePass {
			t.Fatalf("final gates %+v", r.Gates)
		}
	}
	if h, held := e.eng.Holder(devID(0)); held {
		t.Fatalf("device still held by %s after success", h)
	}
	hist := e.history(r.ID)
	if hist[0] != EventCreated || hist[len(hist)-1] != EventSucceeded || count(hist, EventStepPassed) != 4 {
		t.Fatalf("history %v", hist)
	}
	// Every desired state names the rollout.
	for _, a := range e.fleet.assigns {
		if a.a.RolloutID != r.ID || a.a.Action != protocol.ActionInstall || a.a.Bundle != v2 {
			t.Fatalf("assignment %+v", a)
		}
	}
	if len(e.fleet.assigns) != 100 {
		t.Fatalf("%d assignments, want one per device", len(e.fleet.assigns))
	}
}

func count[T comparable](s []T, v T) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func TestLatencyBreachInCanaryRollsBack(t *testing.T) {
	e := newEnv(t, 60)
	e.fleet.latency[v2] = 25 // 2.5x the 10 ms of v1
	r := e.create(strings.Replace(fourWaves, "count: 1", "count: 3", 1))
	canary := e.assigned(r.ID)
	if len(canary) != 3 || e.running(v2) != 3 {
		t.Fatalf("canary %v, %d running v2", canary, e.running(v2))
	}
	e.advance(10 * time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StateRolledBack)
	b := r.Breach
	if b == nil || b.Gate != GateLatencyP95 || b.Value != 2.5 || b.Threshold != 1.5 || b.Evidence || b.Step != 0 || b.StepName != "canary" {
		t.Fatalf("breach %+v", b)
	}
	if !strings.Contains(r.Reason, "latencyP95") || !strings.Contains(r.Reason, "2.5") {
		t.Fatalf("reason %q", r.Reason)
	}
	if e.running(v2) != 0 || e.running(v1) != 60 {
		t.Fatalf("after rollback %d run v2, %d v1", e.running(v2), e.running(v1))
	}
	for _, id := range canary {
		d := e.fleet.device(id)
		if d.Desired.Action != protocol.ActionRollback || d.Desired.Bundle.Version != v1.Version || d.Desired.RolloutID != r.ID {
			t.Fatalf("%s desired %+v", id, d.Desired)
		}
	}
	// Devices outside the canary were never touched.
	touched := 0
	for i := range 60 {
		if e.fleet.device(devID(i)).Desired != nil {
			touched++
		}
	}
	if touched != 3 || r.Progress.RollbackSent != 3 {
		t.Fatalf("%d devices touched, %d rollbacks sent; want 3", touched, r.Progress.RollbackSent)
	}
	if _, held := e.eng.Holder(canary[0]); held {
		t.Fatal("canary still held after the rollback")
	}
	hist := e.history(r.ID)
	if !slices.Contains(hist, EventBreach) || hist[len(hist)-1] != EventRolledBack {
		t.Fatalf("history %v", hist)
	}
}

func TestInstallFailureFailsFast(t *testing.T) {
	e := newEnv(t, 20)
	e.fleet.failInstall[v2] = "smoke test: output 0.9 outside tolerance"
	r := e.create(fourWaves)
	// No bake needed: the one canary's failure is decisive.
	wantState(t, r, StateRolledBack)
	if r.Breach.Gate != GateInstallSuccess || r.Breach.Value != 0 || r.Breach.Threshold != DefaultInstallMin {
		t.Fatalf("breach %+v", r.Breach)
	}
	ds, _ := e.eng.Devices(r.ID)
	if ds[0].Phase != PhaseFailed || !strings.Contains(ds[0].Error, "smoke test") {
		t.Fatalf("canary %+v", ds[0])
	}
}

// TestInstallRetryingIsNotFailure: a device retrying a transient install
// failure is still installing (with what went wrong so far), not failed;
// once its retry succeeds the rollout goes on.
func TestInstallRetryingIsNotFailure(t *testing.T) {
	e := newEnv(t, 20)
	e.fleet.async = true
	e.fleet.retryInstall[v2] = "download: connection reset by peer"
	r := e.create(fourWaves)
	ds, _ := e.eng.Devices(r.ID)
	if ds[0].Phase != PhaseInstalling || ds[0].Error != "retrying after attempt 1: download: connection reset by peer" {
		t.Fatalf("canary %+v", ds[0])
	}
	wantState(t, r, StateRunning)
	e.fleet.async = false
	e.fleet.finish()
	e.tick()
	e.advance(10 * time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StateRunning)
	wantStep(t, r, 2) // the canary baked; the next wave is out
	if ds, _ := e.eng.Devices(r.ID); ds[0].Phase != PhaseInstalled || ds[0].Error != "" {
		t.Fatalf("canary after its retry %+v", ds[0])
	}
}

func TestRestartMidBakeKeepsDeadlineAndCohort(t *testing.T) {
	e := newEnv(t, 100)
	r := e.create(fourWaves)
	e.advance(10 * time.Minute) // canary passes, wave 2 (5 devices) bakes
	e.advance(3 * time.Minute)
	before := e.get(r.ID)
	wantStep(t, before, 1)
	cohort := e.assigned(r.ID)

	e.restart()
	after := e.get(r.ID)
	if !after.BakeUntil.Equal(before.BakeUntil) || !after.Deadline.Equal(before.Deadline) || after.Step != 1 {
		t.Fatalf("after restart: step %d, bake until %v deadline %v; before: %v %v", after.Step, after.BakeUntil, after.Deadline, before.BakeUntil, before.Deadline)
	}
	if got := e.assigned(r.ID); !slices.Equal(got, cohort) {
		t.Fatalf("cohort after restart %v, before %v", got, cohort)
	}
	n := len(e.fleet.assigns)
	e.advance(6 * time.Minute) // 1 minute before the bake ends
	wantStep(t, e.get(r.ID), 1)
	if len(e.fleet.assigns) != n {
		t.Fatalf("the restart re-sent %d assignments", len(e.fleet.assigns)-n)
	}
	e.advance(time.Minute)
	r = e.get(r.ID)
	wantStep(t, r, 2)
	if got, want := e.assigned(r.ID), CohortOrder(r.ID, allIDs(100))[:25]; !slices.Equal(got, want) {
		t.Fatalf("wave 3 after restart %v, want %v", got, want)
	}
}

func TestCrashBetweenWriteAheadAndAssignResends(t *testing.T) {
	e := newEnv(t, 10)
	var fail bool
	e.fleet.assignErr = func(id string, a Assignment) error {
		if fail {
			return errors.New("broker unreachable")
		}
		return nil
	}
	fail = true
	r := e.create(`{target: "", bundle: vad@1.1.0, waves: [{count: 2, bake: 10m}, {percent: 100}]}`)
	if !strings.Contains(r.LastError, "broker unreachable") || r.Progress.Installing != 2 {
		t.Fatalf("status after failed sends: %+v / %q", r.Progress, r.LastError)
	}
	ds, _ := e.eng.Devices(r.ID)
	if ds[0].Phase != PhaseAssigning || ds[0].Previous == nil || *ds[0].Previous != v1 {
		t.Fatalf("device after a failed send %+v", ds[0].Device)
	}
	// Restart with the devices "assigning": they are sent again, with the
	// previous version recorded before the first attempt.
	e.restart()
	fail = false
	e.tick()
	r = e.get(r.ID)
	ds, _ = e.eng.Devices(r.ID)
	for _, d := range ds[:2] {
		if d.Phase != PhaseInstalled || *d.Previous != v1 || d.Seq == 0 {
			t.Fatalf("device after resend %+v", d.Device)
		}
	}
	if r.LastError != "" {
		t.Fatalf("last error not cleared: %q", r.LastError)
	}
}

func TestOfflineDeviceGetsRollbackWhenBack(t *testing.T) {
	e := newEnv(t, 30)
	e.fleet.latency[v2] = 30
	const spec = `
target: ""
bundle: vad@1.1.0
waves: [{count: 3, bake: 10m}, {percent: 100}]
gates: {latencyP95: {maxRatio: 1.5}}
`
	r0, _ := ParseSpec([]byte(spec))
	// Find the canary first, then take one of its devices offline.
	p, err := e.eng.Plan(context.Background(), r0)
	if err != nil {
		t.Fatal(err)
	}
	e.ids-- // Create takes the id Plan showed
	off := p.Devices[1]
	e.fleet.setOnline(off, false)
	r := e.create(spec)
	if r.ID != p.ID {
		t.Fatalf("ids %s and %s", r.ID, p.ID)
	}
	d := e.fleet.device(off)
	if d.Desired == nil || d.Desired.Action != protocol.ActionInstall || d.Reported.AppliedSeq != 0 {
		t.Fatalf("offline device: desired %+v applied %d", d.Desired, d.Reported.AppliedSeq)
	}
	e.advance(10 * time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StateRolledBack)
	if r.Breach.Gate != GateLatencyP95 || r.Breach.Reports != 2 {
		t.Fatalf("breach %+v", r.Breach)
	}
	// Its retained desired state is now the rollback.
	d = e.fleet.device(off)
	if d.Desired.Action != protocol.ActionRollback || d.Desired.Bundle.Version != "1.0.0" {
		t.Fatalf("offline device's desired state %+v", d.Desired)
	}
	e.fleet.setOnline(off, true)
	d = e.fleet.device(off)
	if *d.Reported.Active != v1 || d.Reported.AppliedSeq != d.Desired.Seq || d.Reported.Install.Seq != d.Desired.Seq {
		t.Fatalf("device back online: reported %+v", d.Reported)
	}
	if e.running(v2) != 0 {
		t.Fatalf("%d devices still on v2", e.running(v2))
	}
}

func TestOverlappingRolloutRefused(t *testing.T) {
	e := newEnv(t, 12)
	a := e.create(strings.Replace(fourWaves, `target: ""`, `target: "site=a"`, 1))
	s, _ := ParseSpec([]byte(strings.Replace(fourWaves, `target: ""`, `target: "hw=pi4"`, 1)))
	_, err := e.eng.Create(context.Background(), s)
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) || !slices.Equal(ce.HolderIDs(), []string{a.ID}) {
		t.Fatalf("overlapping create: %v", err)
	}
	if !strings.Contains(err.Error(), a.ID) {
		t.Fatalf("error does not name the holder: %v", err)
	}
	// Plan (dry run) says the same.
	if _, err := e.eng.Plan(context.Background(), s); !errors.Is(err, ErrConflict) {
		t.Fatalf("Plan: %v", err)
	}
	// A disjoint target is fine.
	e.create(strings.Replace(fourWaves, `target: ""`, `target: "site=b"`, 1))
	// Once the holder ends, the overlapping target is free.
	if _, err := e.eng.Abort(context.Background(), a.ID, ""); err != nil {
		t.Fatal(err)
	}
	s, _ = ParseSpec([]byte(strings.Replace(fourWaves, `target: ""`, `target: "hw=pi4,site!=b"`, 1)))
	if _, err := e.eng.Create(context.Background(), s); err != nil {
		t.Fatalf("create after abort: %v", err)
	}
}

func TestPauseResume(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	r := e.create(fourWaves)
	e.advance(4 * time.Minute)
	r, err := e.eng.Pause(ctx, r.ID, "investigating")
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, StatePaused)
	bake := r.BakeUntil
	e.advance(time.Hour) // paused: nothing moves
	r = e.get(r.ID)
	wantState(t, r, StatePaused)
	wantStep(t, r, 0)
	if _, err := e.eng.Pause(ctx, r.ID, ""); !errors.Is(err, ErrState) {
		t.Fatalf("second pause: %v", err)
	}
	r, err = e.eng.Resume(ctx, r.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	// The bake resumes where it stopped: 6 minutes left.
	if want := bake.Add(time.Hour); !r.BakeUntil.Equal(want) {
		t.Fatalf("bake until %v after resume, want %v", r.BakeUntil, want)
	}
	e.advance(5 * time.Minute)
	wantStep(t, e.get(r.ID), 0)
	e.advance(time.Minute)
	wantStep(t, e.get(r.ID), 1)
	if _, err := e.eng.Resume(ctx, r.ID, ""); !errors.Is(err, ErrState) {
		t.Fatalf("resume of a running rollout: %v", err)
	}
	hist := e.history(r.ID)
	if !slices.Contains(hist, EventPaused) || !slices.Contains(hist, EventResumed) {
		t.Fatalf("history %v", hist)
	}
}

func TestPromoteSkipsBake(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	r := e.create(fourWaves)
	r, err := e.eng.Promote(ctx, r.ID, "canary looks good")
	if err != nil {
		t.Fatal(err)
	}
	wantStep(t, r, 1)
	if len(e.assigned(r.ID)) != 5 {
		t.Fatalf("assigned %d after promote", len(e.assigned(r.ID)))
	}
	// Promote the baking waves: the last one has no bake, so the rollout
	// completes.
	for range 2 {
		if r, err = e.eng.Promote(ctx, r.ID, ""); err != nil {
			t.Fatal(err)
		}
	}
	wantState(t, r, StateSucceeded)
	if e.running(v2) != 100 {
		t.Fatalf("%d on v2", e.running(v2))
	}
	if _, err := e.eng.Promote(ctx, r.ID, ""); !errors.Is(err, ErrState) {
		t.Fatalf("promote of a finished rollout: %v", err)
	}
}

func TestAbortLeavesDevices(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	r := e.create(fourWaves)
	e.advance(10 * time.Minute)
	r, err := e.eng.Abort(ctx, r.ID, "wrong bundle")
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, StateAborted)
	if e.running(v2) != 5 {
		t.Fatalf("%d devices on v2 after abort, want the 5 assigned", e.running(v2))
	}
	n := len(e.fleet.assigns)
	e.advance(time.Hour)
	if len(e.fleet.assigns) != n {
		t.Fatal("an aborted rollout kept assigning")
	}
	if _, held := e.eng.Holder(devID(0)); held {
		t.Fatal("devices still held")
	}
	if _, err := e.eng.Abort(ctx, r.ID, ""); !errors.Is(err, ErrState) {
		t.Fatalf("second abort: %v", err)
	}
}

func TestManualRollback(t *testing.T) {
	ctx := context.Background()
	t.Run("running", func(t *testing.T) {
		e := newEnv(t, 100)
		r := e.create(fourWaves)
		e.advance(10 * time.Minute)
		r, err := e.eng.Rollback(ctx, r.ID, "customer complaint")
		if err != nil {
			t.Fatal(err)
		}
		wantState(t, r, StateRolledBack)
		if r.Breach != nil || !strings.Contains(r.Reason, "customer complaint") || r.Progress.RollbackSent != 5 {
			t.Fatalf("status %+v", r)
		}
		if e.running(v1) != 100 {
			t.Fatalf("%d on v1", e.running(v1))
		}
		if _, err := e.eng.Rollback(ctx, r.ID, ""); !errors.Is(err, ErrState) {
			t.Fatalf("second rollback: %v", err)
		}
	})
	t.Run("succeeded", func(t *testing.T) {
		e := newEnv(t, 50)
		r := e.create(strings.ReplaceAll(fourWaves, "bake: 10m", "bake: 0s"))
		wantState(t, r, StateSucceeded)
		// Another rollout holding some of the devices blocks it.
		other := e.create(`{target: "site=a", bundle: vad@1.2.0, waves: [{count: 1, bake: 1h}]}`)
		if _, err := e.eng.Rollback(ctx, r.ID, ""); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), other.ID) {
			t.Fatalf("rollback over an active rollout: %v", err)
		}
		if _, err := e.eng.Abort(ctx, other.ID, ""); err != nil {
			t.Fatal(err)
		}
		r, err := e.eng.Rollback(ctx, r.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		wantState(t, r, StateRolledBack)
		if e.running(v1) != 50 {
			t.Fatalf("%d on v1", e.running(v1))
		}
	})
}

func TestNotEnoughEvidence(t *testing.T) {
	e := newEnv(t, 10)
	for i := range 10 {
		e.fleet.silent[devID(i)] = true // installs, but sends no telemetry
	}
	r := e.create(`
target: ""
bundle: vad@1.1.0
waveDeadline: 30m
waves: [{count: 2, bake: 10m}, {percent: 100}]
gates:
  errorRate: {max: 0.01, minReports: 2}
`)
	e.advance(10 * time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StateRunning)
	if !strings.Contains(r.Progress.Waiting, "evidence for errorRate: 0 of 2") {
		t.Fatalf("waiting %q", r.Progress.Waiting)
	}
	if g := r.Gates[1]; g.Gate != GateErrorRate || g.Status != GateWaiting {
		t.Fatalf("gates %+v", r.Gates)
	}
	if want := t0.Add(40 * time.Minute); !r.Deadline.Equal(want) {
		t.Fatalf("deadline %v, want %v", r.Deadline, want)
	}
	e.advance(29 * time.Minute)
	wantState(t, e.get(r.ID), StateRunning)
	e.advance(time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StateRolledBack)
	if b := r.Breach; !b.Evidence || b.Gate != GateErrorRate || b.Reports != 0 || b.MinReports != 2 {
		t.Fatalf("breach %+v", b)
	}
	if !strings.Contains(r.Reason, "not enough evidence") {
		t.Fatalf("reason %q", r.Reason)
	}
}

func TestBreachWithoutAutoRollbackPauses(t *testing.T) {
	e := newEnv(t, 100)
	e.fleet.errRate[v2] = 0.2
	r := e.create(fourWaves + "rollback: {auto: false}\n")
	e.advance(10 * time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StatePaused)
	if r.Breach == nil || r.Breach.Gate != GateErrorRate || r.Breach.Value != 0.2 {
		t.Fatalf("breach %+v", r.Breach)
	}
	if e.running(v2) != 1 {
		t.Fatal("the canary was rolled back although rollback.auto is false")
	}
	// Resume evaluates again and pauses again; promote overrides.
	r, _ = e.eng.Resume(context.Background(), r.ID, "")
	wantState(t, r, StatePaused)
	r, err := e.eng.Promote(context.Background(), r.ID, "known: the errors are a test client")
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, StateRunning)
	wantStep(t, r, 1)
}

func TestMaxConcurrentDownloads(t *testing.T) {
	e := newEnv(t, 10)
	e.fleet.async = true
	r := e.create(`
target: ""
bundle: vad@1.1.0
waveDeadline: 1h
waves: [{percent: 100}]
limits: {maxConcurrentDownloads: 3}
`)
	if got := len(e.assigned(r.ID)); got != 3 {
		t.Fatalf("%d assigned, want 3", got)
	}
	if !strings.Contains(r.Progress.Waiting, "7 for a download slot") {
		t.Fatalf("waiting %q", r.Progress.Waiting)
	}
	e.advance(time.Minute)
	if got := len(e.assigned(r.ID)); got != 3 {
		t.Fatalf("%d assigned while 3 download, want 3", got)
	}
	first := e.assigned(r.ID)
	e.fleet.finish(first[:2]...)
	e.advance(time.Minute)
	if got := len(e.assigned(r.ID)); got != 5 {
		t.Fatalf("%d assigned after 2 downloads finished, want 5", got)
	}
	// An offline device does not hold a slot: its download has not begun.
	next := e.assigned(r.ID)[3:5]
	e.fleet.mu.Lock()
	for _, id := range next {
		e.fleet.devs[id].Status.Online = false
		e.fleet.devs[id].Reported.Install = nil
		e.fleet.devs[id].downloading = false
	}
	e.fleet.mu.Unlock()
	e.advance(time.Minute)
	if got := len(e.assigned(r.ID)); got != 7 {
		t.Fatalf("%d assigned with 2 of the downloading offline, want 7", got)
	}
	// A device stuck past the wave deadline stops counting.
	e.advance(time.Hour)
	if got := len(e.assigned(r.ID)); got != 10 {
		t.Fatalf("%d assigned after the stuck downloads timed out, want 10", got)
	}
	e.fleet.finish()
	for _, id := range next {
		e.fleet.setOnline(id, true)
	}
	e.fleet.finish()
	e.advance(time.Minute)
	wantState(t, e.get(r.ID), StateSucceeded)
}

func TestMaintenanceWindow(t *testing.T) {
	e := newEnv(t, 9) // sites a, b, c: 3 devices each
	r := e.create(`
target: ""
bundle: vad@1.1.0
waves: [{percent: 100}]
limits:
  maintenanceWindows:
    - selector: site=a
      start: "22:00"
      end: "04:00"
    - selector: site=b
      start: "12:30"
      end: "13:00"
`)
	// 12:00 UTC: only site c (no window) is assigned.
	for _, id := range e.assigned(r.ID) {
		if site := e.fleet.device(id).Labels["site"]; site != "c" {
			t.Fatalf("%s (site %s) assigned outside its window", id, site)
		}
	}
	if got := len(e.assigned(r.ID)); got != 3 {
		t.Fatalf("%d assigned at noon, want the 3 of site c", got)
	}
	if !strings.Contains(e.get(r.ID).Progress.Waiting, "6 outside their maintenance window") {
		t.Fatalf("waiting %q", e.get(r.ID).Progress.Waiting)
	}
	e.advance(30 * time.Minute) // 12:30: site b
	if got := len(e.assigned(r.ID)); got != 6 {
		t.Fatalf("%d assigned at 12:30, want 6", got)
	}
	e.advance(10 * time.Hour) // 22:30: site a, across midnight
	r = e.get(r.ID)
	wantState(t, r, StateSucceeded)
	if e.running(v2) != 9 {
		t.Fatalf("%d on v2", e.running(v2))
	}
}

func TestWindowContains(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 1, 1, h, m, 0, 0, time.UTC) }
	night := compiledWindow{start: 22 * 60, end: 4 * 60}
	day := compiledWindow{start: 9 * 60, end: 17 * 60}
	for _, c := range []struct {
		w    compiledWindow
		t    time.Time
		want bool
	}{
		{night, at(22, 0), true}, {night, at(23, 59), true}, {night, at(0, 0), true}, {night, at(3, 59), true},
		{night, at(4, 0), false}, {night, at(12, 0), false}, {night, at(21, 59), false},
		{day, at(9, 0), true}, {day, at(16, 59), true}, {day, at(17, 0), false}, {day, at(8, 59), false},
		{day, time.Date(2026, 1, 1, 10, 0, 0, 0, time.FixedZone("x", -8*3600)), false}, // 18:00 UTC
	} {
		if got := c.w.contains(c.t); got != c.want {
			t.Errorf("window %d-%d contains %v = %v, want %v", c.w.start, c.w.end, c.t, got, c.want)
		}
	}
}

func TestShadowStep(t *testing.T) {
	const spec = `
target: ""
bundle: vad@1.1.0
shadow: {percent: 20, bake: 30m}
waves: [{count: 2, bake: 10m}, {percent: 100}]
gates:
  shadowAgreement: {min: 0.9}
`
	t.Run("agrees", func(t *testing.T) {
		e := newEnv(t, 20)
		e.fleet.agreement[v2] = 0.97
		r := e.create(spec)
		if r.Steps[0].Kind != StepShadow || r.Steps[0].Size != 4 {
			t.Fatalf("steps %+v", r.Steps)
		}
		for _, id := range e.assigned(r.ID) {
			d := e.fleet.device(id)
			if d.Desired.Shadow == nil || d.Desired.Shadow.Bundle.Version != "1.1.0" || d.Desired.Bundle.Version != "1.0.0" {
				t.Fatalf("%s desired %+v", id, d.Desired)
			}
			if *d.Reported.Active != v1 || *d.Reported.Shadow != v2 {
				t.Fatalf("%s reported %+v", id, d.Reported)
			}
		}
		if e.running(v2) != 0 || r.Progress.Shadowing != 4 {
			t.Fatalf("shadow step: %d run v2 as active; progress %+v", e.running(v2), r.Progress)
		}
		e.advance(30 * time.Minute)
		r = e.get(r.ID)
		wantStep(t, r, 1)
		hist, _ := e.eng.History(r.ID)
		var passed *Event
		for i := range hist {
			if hist[i].Type == EventStepPassed {
				passed = &hist[i]
			}
		}
		if passed == nil || passed.Gates[1].Gate != GateShadowAgreement || passed.Gates[1].Value != 0.97 {
			t.Fatalf("shadow step passed with %+v", passed)
		}
		e.advance(10 * time.Minute)
		r = e.get(r.ID)
		wantState(t, r, StateSucceeded)
		if e.running(v2) != 20 {
			t.Fatalf("%d on v2", e.running(v2))
		}
		for i := range 20 {
			if d := e.fleet.device(devID(i)); d.Reported.Shadow != nil {
				t.Fatalf("%s still shadows %v", d.ID, d.Reported.Shadow)
			}
		}
	})
	t.Run("candidate fails to install", func(t *testing.T) {
		e := newEnv(t, 20)
		e.fleet.failInstall[v2] = "smoke test: output 0.9 outside tolerance"
		r := e.create(spec)
		e.advance(time.Minute)
		r = e.get(r.ID)
		wantState(t, r, StateRolledBack)
		if r.Breach == nil || r.Breach.Gate != GateInstallSuccess {
			t.Fatalf("breach %+v, want installSuccess at once (not a wait for evidence)", r.Breach)
		}
	})
	t.Run("disagrees", func(t *testing.T) {
		e := newEnv(t, 20)
		e.fleet.agreement[v2] = 0.6
		r := e.create(spec)
		e.advance(30 * time.Minute)
		r = e.get(r.ID)
		wantState(t, r, StateRolledBack)
		if r.Breach.Gate != GateShadowAgreement || r.Breach.Value != 0.6 || r.Breach.Threshold != 0.9 {
			t.Fatalf("breach %+v", r.Breach)
		}
		for i := range 20 {
			d := e.fleet.device(devID(i))
			if d.Reported.Shadow != nil || *d.Reported.Active != v1 {
				t.Fatalf("%s after rollback: %+v", d.ID, d.Reported)
			}
		}
		if r.Progress.RollbackSent != 4 {
			t.Fatalf("progress %+v", r.Progress)
		}
	})
}

func TestDriftGate(t *testing.T) {
	e := newEnv(t, 10)
	e.fleet.drift[v2] = 0.4
	r := e.create(`
target: ""
bundle: vad@1.1.0
waves: [{count: 2, bake: 1h}, {percent: 100}]
gates: {drift: {maxScore: 0.25}}
`)
	e.advance(time.Hour)
	r = e.get(r.ID)
	wantState(t, r, StateRolledBack)
	if r.Breach.Gate != GateDrift || r.Breach.Value != 0.4 {
		t.Fatalf("breach %+v", r.Breach)
	}
}

func TestRemovedDevice(t *testing.T) {
	e := newEnv(t, 10)
	r := e.create(`{target: "", bundle: vad@1.1.0, waves: [{count: 2, bake: 1m}, {percent: 100, bake: 1m}]}`)
	order := CohortOrder(r.ID, allIDs(10))
	e.fleet.mu.Lock()
	delete(e.fleet.devs, order[5])
	e.fleet.mu.Unlock()
	e.advance(time.Minute)
	e.advance(time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StateSucceeded)
	if r.Progress.Removed != 1 || r.Progress.Installed != 9 {
		t.Fatalf("progress %+v", r.Progress)
	}
}

func TestFreshDevicesAndSkippedWaves(t *testing.T) {
	e := newEnv(t, 4)
	e.fleet.add("dev-new", nil, nil) // runs nothing yet
	r := e.create(`{target: "", bundle: vad@1.1.0, waves: [{count: 1}, {percent: 10}, {percent: 100}]}`)
	// 10% of 5 is 1 device, as the canary: that wave is skipped.
	wantState(t, r, StateSucceeded)
	hist := e.history(r.ID)
	if count(hist, EventStepSkipped) != 1 {
		t.Fatalf("history %v", hist)
	}
	r, err := e.eng.Rollback(context.Background(), r.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Progress.RollbackSent != 4 || r.Progress.RollbackSkipped != 1 {
		t.Fatalf("progress %+v", r.Progress)
	}
	ds, _ := e.eng.Devices(r.ID)
	for _, d := range ds {
		if d.ID == "dev-new" && (d.Rollback != RollbackSkipped || !strings.Contains(d.Note, "nothing to return to")) {
			t.Fatalf("fresh device %+v", d.Device)
		}
	}
}

func TestCohortDeterminism(t *testing.T) {
	ids := allIDs(200)
	a := CohortOrder("ro-1", ids)
	rev := slices.Clone(ids)
	slices.Reverse(rev)
	if !slices.Equal(a, CohortOrder("ro-1", rev)) {
		t.Fatal("the order depends on the input order")
	}
	if slices.Equal(a, CohortOrder("ro-2", ids)) {
		t.Fatal("two rollouts got the same order")
	}
	if slices.Equal(a, ids) || slices.IsSorted(a) {
		t.Fatal("the order is the ids' order")
	}
	sorted := slices.Clone(a)
	slices.Sort(sorted)
	if !slices.Equal(sorted, ids) {
		t.Fatal("the order is not a permutation")
	}
	// Canaries of different rollouts spread: over 50 rollouts the first
	// device is not always the same.
	firsts := map[string]bool{}
	for i := range 50 {
		firsts[CohortOrder(fmt.Sprintf("ro-%d", i), ids)[0]] = true
	}
	if len(firsts) < 20 {
		t.Fatalf("only %d distinct canaries over 50 rollouts", len(firsts))
	}
	// A device joining the fleet does not reshuffle the others.
	more := CohortOrder("ro-1", append(slices.Clone(ids), "dev-new"))
	if !slices.Equal(slices.DeleteFunc(more, func(s string) bool { return s == "dev-new" }), a) {
		t.Fatal("adding a device reordered the others")
	}
}

func TestShareSize(t *testing.T) {
	for _, c := range []struct {
		n          int
		pct        *float64
		count      *int
		minDevices int
		want       int
	}{
		{100, new(5.0), nil, 0, 5},
		{10, new(5.0), nil, 0, 1},
		{10, new(5.0), nil, 3, 3},
		{10, nil, new(20), 0, 10},
		{101, new(25.0), nil, 0, 26},
		{3, new(100.0), nil, 0, 3},
		{1000, new(0.1), nil, 0, 1},
		{0, new(50.0), nil, 0, 0},
	} {
		if got := shareSize(c.n, c.pct, c.count, c.minDevices); got != c.want {
			t.Errorf("shareSize(%d, %v, %v, %d) = %d, want %d", c.n, ptrText(c.pct), ptrText(c.count), c.minDevices, got, c.want)
		}
	}
}

func ptrText[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func TestEngineConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("New without DB: %v", err)
	}
	e := newEnv(t, 1)
	if _, err := e.eng.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an unknown id: %v", err)
	}
	if _, err := e.eng.Pause(context.Background(), "nope", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Pause of an unknown id: %v", err)
	}
	e.eng.Close()
	if err := e.eng.Tick(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Tick after Close: %v", err)
	}
}

func TestListNewestFirst(t *testing.T) {
	e := newEnv(t, 9)
	a := e.create(`{target: "site=a", bundle: vad@1.1.0, waves: [{count: 1, bake: 1h}]}`)
	e.clock.Advance(time.Second)
	b := e.create(`{target: "site=b", bundle: vad@1.1.0, waves: [{count: 1, bake: 1h}]}`)
	e.eng.Abort(context.Background(), a.ID, "")
	rs, err := e.eng.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].ID != b.ID || rs[1].ID != a.ID || rs[1].State != StateAborted {
		t.Fatalf("list %v", rs)
	}
}

// The real inventory works as the engine's Inventory: devices enrolled,
// reporting and assigned through it.
func TestWithRealInventory(t *testing.T) {
	ctx := context.Background()
	clock := cptest.NewClock(t0)
	inv, err := inventory.Open(t.TempDir()+"/inventory.db", inventory.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	mem := newMemFleet(clock)
	for i := range 4 {
		id := devID(i)
		if err := inv.EnrollCert(ctx, id, map[string]string{"site": "a"}); err != nil {
			t.Fatal(err)
		}
		if err := inv.UpdateReported(id, &protocol.ReportedState{V: 1, DeviceID: id, Time: t0, AgentVersion: "0.1.0", Active: new(v1)}, t0); err != nil {
			t.Fatal(err)
		}
	}
	// Assign stores the desired state in the inventory; the "device"
	// then reports it installed.
	fleet := fleetFunc(func(ctx context.Context, id string, a Assignment) (protocol.DesiredState, error) {
		ds, err := inv.SetDesired(id, func(*protocol.DesiredState) (protocol.DesiredState, error) {
			return protocol.DesiredState{IssuedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour), Action: a.Action, RolloutID: a.RolloutID,
				Bundle: protocol.BundleRef{Name: a.Bundle.Name, Version: a.Bundle.Version, URL: "https://f/b", SigURL: "https://f/s", SHA256: fmt.Sprintf("%064x", 1), Size: 1}}, nil
		})
		if err != nil {
			return ds, err
		}
		rs := &protocol.ReportedState{V: 1, DeviceID: id, Time: clock.Now(), AgentVersion: "0.1.0", Active: new(a.Bundle), LastKnownGood: new(v1), AppliedSeq: ds.Seq,
			Install: &protocol.InstallStatus{Seq: ds.Seq, Bundle: a.Bundle, Phase: protocol.PhaseSucceeded, Time: clock.Now()}}
		return ds, inv.UpdateReported(id, rs, clock.Now())
	})
	db := openBolt(t)
	eng, err := New(Config{DB: db, Inventory: inv, Bundles: bundles{mem}, Fleet: fleet, Observer: mem, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := ParseSpec([]byte(`{target: "site=a", bundle: vad@1.1.0, waves: [{count: 1}, {percent: 100}]}`))
	r, err := eng.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, StateSucceeded)
	devs, _ := inv.List(inventory.Selector{})
	for _, d := range devs {
		if d.Desired == nil || d.Desired.RolloutID != r.ID || *d.Reported.Active != v2 {
			t.Fatalf("%s: desired %+v reported %+v", d.ID, d.Desired, d.Reported)
		}
	}
}

type fleetFunc func(ctx context.Context, id string, a Assignment) (protocol.DesiredState, error)

func (f fleetFunc) Assign(ctx context.Context, id string, a Assignment) (protocol.DesiredState, error) {
	return f(ctx, id, a)
}

// A rollout waiting out its bake costs no write per tick.
func TestIdleTicksDoNotWrite(t *testing.T) {
	e := newEnv(t, 20)
	r := e.create(fourWaves)
	e.advance(time.Minute)
	writes := func() int64 { s := e.db.Stats(); return s.TxStats.GetWrite() }
	before := writes()
	for range 10 {
		e.advance(10 * time.Second)
	}
	if after := writes(); after != before {
		t.Fatalf("%d page writes during the bake", after-before)
	}
	wantStep(t, e.get(r.ID), 0)
}

// Run ticks on Notify (the clock here is real: Run's timers are).
func TestRunNotify(t *testing.T) {
	e := newEnv(t, 4)
	e.fleet.async = true
	r := e.create(`{target: "", bundle: vad@1.1.0, waves: [{percent: 100}]}`)
	e.eng.interval = time.Hour // only Notify can make it tick
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.eng.Run(ctx) }()
	e.fleet.finish()
	e.eng.Notify()
	deadline := time.Now().Add(60 * time.Second)
	for e.get(r.ID).State != StateSucceeded {
		if time.Now().After(deadline) {
			t.Fatalf("not done after Notify: %+v", e.get(r.ID))
		}
		time.Sleep(10 * time.Millisecond)
		e.eng.Notify()
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

// A rollback that cannot reach every device yet stays rolling_back, and
// a restart carries on sending it.
func TestRollbackRetriedAcrossRestart(t *testing.T) {
	e := newEnv(t, 10)
	e.fleet.latency[v2] = 50
	r := e.create(`
target: ""
bundle: vad@1.1.0
waves: [{count: 3, bake: 10m}, {percent: 100}]
gates: {latencyP95: {maxRatio: 1.5}}
`)
	canary := e.assigned(r.ID)
	down := true
	e.fleet.assignErr = func(id string, a Assignment) error {
		if down && a.Action == protocol.ActionRollback && id == canary[1] {
			return errors.New("registry unreachable")
		}
		return nil
	}
	e.advance(10 * time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StateRollingBack)
	if r.Progress.RollbackSent != 2 || !strings.Contains(r.LastError, "registry unreachable") {
		t.Fatalf("status %+v / %q", r.Progress, r.LastError)
	}
	if h, held := e.eng.Holder(canary[1]); !held || h != r.ID {
		t.Fatal("devices released before the rollback was sent")
	}
	e.restart()
	e.advance(time.Minute)
	wantState(t, e.get(r.ID), StateRollingBack)
	down = false
	e.advance(time.Minute)
	r = e.get(r.ID)
	wantState(t, r, StateRolledBack)
	if r.Progress.RollbackSent != 3 || e.running(v2) != 0 || r.LastError != "" {
		t.Fatalf("status %+v, %d on v2", r.Progress, e.running(v2))
	}
	// Each device got exactly one rollback.
	n := 0
	for _, a := range e.fleet.assigns {
		if a.a.Action == protocol.ActionRollback {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d rollbacks sent, want 3", n)
	}
}
