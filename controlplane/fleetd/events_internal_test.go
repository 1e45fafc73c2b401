package fleetd

import (
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// TestRolloutEmitter: which history events become which outgoing
// events, with what data.
func TestRolloutEmitter(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "rollouts.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc, err := notify.New(notify.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	s := &Server{log: slog.New(slog.DiscardHandler), now: time.Now}
	s.ro.events = svc
	em := rolloutEmitter{s}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a, b := protocol.BundleID{Name: "vad", Version: "1.0.0"}, protocol.BundleID{Name: "vad", Version: "1.1.0"}
	exp := &rollout.Rollout{ID: "ro-x", Spec: &rollout.Spec{Kind: rollout.KindExperiment, Target: "site=a,hw!=pi4"}, Arms: []protocol.BundleID{a, b},
		Comparison: &rollout.Comparison{Winner: "candidate", Verdict: "candidate (vad@1.1.0) wins"}}
	manual := &rollout.Rollout{ID: "ro-y", Spec: &rollout.Spec{Target: "site=b"}, Bundle: b,
		Breach: &rollout.Breach{GateResult: rollout.GateResult{Gate: rollout.GateErrorRate}},
		Reason: rollout.ReasonManualRollback + ": too slow", Progress: rollout.Progress{RollbackSent: 3}}
	for _, tc := range []struct {
		r  *rollout.Rollout
		ev rollout.Event
	}{
		{exp, rollout.Event{Seq: 1, Type: rollout.EventCreated, Time: now}},
		{exp, rollout.Event{Seq: 5, Type: rollout.EventCompleted, Time: now, Message: "candidate (vad@1.1.0) wins"}},
		{manual, rollout.Event{Seq: 9, Type: rollout.EventRolledBack, Time: now}},
		{manual, rollout.Event{Seq: 9, Type: rollout.EventRolledBack, Time: now}}, // written twice: one event
	} {
		if err := db.Update(func(tx *bolt.Tx) error { return em.RolloutEvent(tx, tc.r, tc.ev) }); err != nil {
			t.Fatal(err)
		}
	}
	l, err := svc.List(notify.Query{Limit: 10})
	if err != nil || len(l) != 2 {
		t.Fatalf("events %+v, %v", l, err)
	}
	byType := map[string]api.Event{}
	for _, e := range l {
		byType[e.Type] = e
	}
	x := byType[notify.TypeExperimentConcluded]
	var xd notify.ExperimentData
	json.Unmarshal(x.Data, &xd)
	if x.ID != "ro-x-5" || x.Subject != "ro-x" || x.Labels["site"] != "a" || len(x.Labels) != 1 || len(x.Bundles) != 2 ||
		xd.Winner != "candidate" || len(xd.Arms) != 2 || xd.Comparison == nil {
		t.Errorf("experiment event %+v, data %+v", x, xd)
	}
	m := byType[notify.TypeRolledBack]
	var md notify.RollbackData
	json.Unmarshal(m.Data, &md)
	if m.ID != "ro-y-9" || md.Automatic || md.Gate != "" || md.DevicesSent != 3 || md.Bundle != "vad@1.1.0" {
		t.Errorf("manual rollback event %+v, data %+v", m, md)
	}
}
