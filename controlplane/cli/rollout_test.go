package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
)

// A bad spec is refused before anything is sent, every problem named.
func TestRolloutCreateChecksLocally(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rollout.yaml")
	spec := "target: ring=canary\nbundle: demo@0.3.0\nwaves:\n  - count: 1\n  - percent: 120\nwavez: 1\n"
	if err := os.WriteFile(file, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	// No server at this address: the spec never gets that far.
	r := fleetctl(t, nil, "rollout", "create", "-f", file, "--server", "http://127.0.0.1:1", "--token-file", file)
	wantFail(t, r, "create with a bad spec", "wavez: unknown field")
	if !strings.Contains(r.stderr, file+":6:1: wavez: unknown field") || !strings.Contains(r.stderr, file+":5:14: waves[1].percent: must be in (0,100], got 120") {
		t.Errorf("stderr %q", r.stderr)
	}
	wantExit(t, fleetctl(t, nil, "rollout", "create"), ExitUsage, "create without -f", "-f/--file is required")
}

// TestRolloutCommands drives a rollout on a running fleetd with fleetctl.
func TestRolloutCommands(t *testing.T) {
	f := startFleetd(t)
	dir, data, srv, fc := f.dir, f.data, f.srv, f.fc
	bfile := f.signedDemoBundle()
	wantOK(t, fc("bundle", "push", bfile), "bundle push")
	enrol := filepath.Join(data, enrolTokenRel)
	for _, id := range []string{"cam-1", "cam-2"} {
		wantOK(t, fleetctl(t, nil, "enroll", id, "--label", "ring=canary", "--server", srv.URL(), "--enrol-token-file", enrol), "enroll")
	}

	spec := filepath.Join(dir, "rollout.yaml")
	if err := os.WriteFile(spec, []byte("name: demo to the canaries\ntarget: ring=canary\nbundle: demo@0.3.0\n"+
		"waves: [{name: first, count: 1, bake: 1h}, {percent: 100, bake: 1h}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := fc("rollout", "create", "-f", spec, "--dry-run")
	wantOK(t, r, "create --dry-run")
	if !strings.Contains(r.stdout, "plan (nothing started): 2 devices") || !strings.Contains(r.stdout, "1 first") {
		t.Errorf("dry run printed %q", r.stdout)
	}
	r = fc("rollout", "create", "-f", spec, "-o", "json")
	wantOK(t, r, "create")
	var ro rollout.Rollout
	if err := json.Unmarshal([]byte(r.stdout), &ro); err != nil || ro.State != rollout.StateRunning || ro.Progress.Assigned != 1 {
		t.Fatalf("create -o json: %+v %v\n%s", ro, err, r.stdout)
	}
	wantExit(t, fc("rollout", "create", "-f", spec), ExitRefused, "overlapping create", "held by rollout "+ro.ID)

	r = fc("rollout", "list")
	wantOK(t, r, "list")
	if !strings.Contains(r.stdout, ro.ID) || !strings.Contains(r.stdout, "running") || !strings.Contains(r.stdout, "1/2 first") {
		t.Errorf("list printed %q", r.stdout)
	}
	r = fc("rollout", "status", ro.ID, "--devices")
	wantOK(t, r, "status")
	for _, want := range []string{"state       running", "devices     2: 1 assigned", "waiting     ", "installSuccess", "cam-1", "cam-2", "demo to the canaries"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	// The experiment commands are the rollout commands under another name.
	if e := fc("experiment", "status", ro.ID, "--devices"); e.stdout != r.stdout {
		t.Errorf("experiment status printed %q, rollout status %q", e.stdout, r.stdout)
	}
	r = fc("rollout", "pause", ro.ID, "--note", "lunch")
	wantOK(t, r, "pause")
	if r.stdout != ro.ID+": paused\n" {
		t.Errorf("pause printed %q", r.stdout)
	}
	wantExit(t, fc("rollout", "pause", ro.ID), ExitRefused, "second pause", "cannot pause "+ro.ID+": it is paused")
	wantOK(t, fc("rollout", "resume", ro.ID), "resume")
	r = fc("rollout", "promote", ro.ID)
	wantOK(t, r, "promote")
	if !strings.Contains(r.stdout, "running, 2/2") {
		t.Errorf("promote printed %q", r.stdout)
	}
	wantOK(t, fc("rollout", "promote", ro.ID), "promote the last wave")
	r = fc("rollout", "status", ro.ID, "--watch", "-o", "json") // done: returns at once
	wantOK(t, r, "status --watch")
	var st api.RolloutStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.State != rollout.StateSucceeded {
		t.Fatalf("status -o json: %+v %v", st.State, err)
	}
	// The devices never reported a version: a rollback has nothing to
	// send them back to.
	r = fc("rollout", "rollback", ro.ID, "--note", "test")
	wantOK(t, r, "rollback")
	if r.stdout != ro.ID+": rolled_back\n" {
		t.Errorf("rollback printed %q", r.stdout)
	}
	r = fc("rollout", "history", ro.ID)
	wantOK(t, r, "history")
	for _, want := range []string{"created", "paused", "lunch", "resumed", "step.promoted", "succeeded", "rollback.started", "rolled_back"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("history lacks %q:\n%s", want, r.stdout)
		}
	}
	wantExit(t, fc("rollout", "status", "ro-nope"), ExitNotFound, "status of an unknown rollout", "HTTP 404")
	wantExit(t, fc("rollout", "promote", ro.ID, "-f", spec), ExitUsage, "promote -f without --arm", "give --arm too")
}
