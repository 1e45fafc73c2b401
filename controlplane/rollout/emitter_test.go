package rollout

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// recEmitter records what the engine emits; fail, if set, fails it.
type recEmitter struct {
	mu   sync.Mutex
	evs  []Event
	ids  []string
	fail error
}

func (r *recEmitter) RolloutEvent(tx *bolt.Tx, ro *Rollout, ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !tx.Writable() || ev.Seq == 0 {
		panic("emitted outside a write, or before the event got its seq")
	}
	if r.fail != nil {
		return r.fail
	}
	tx.OnCommit(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.evs, r.ids = append(r.evs, ev), append(r.ids, ro.ID)
	})
	return nil
}

func (r *recEmitter) types() []EventType {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []EventType
	for _, e := range r.evs {
		out = append(out, e.Type)
	}
	return out
}

// TestEmitterHearsHistory: the Emitter hears every history event, in the
// transaction that writes it, with the rollout as written; when it fails
// nothing is written and the next tick tries again with the same seqs.
func TestEmitterHearsHistory(t *testing.T) {
	e := newEnv(t, 4)
	em := &recEmitter{}
	e.close()
	e.emitter = em
	e.open()
	e.fleet.errRate[v2] = 0.5
	r := e.create(`
target: site=a
bundle: vad@1.1.0
waves: [{count: 1, bake: 1m}]
gates: {errorRate: {max: 0.05, minReports: 1}}
`)
	wantTypes := []EventType{EventCreated, EventStepStarted, EventStepBaking}
	if got := em.types(); !slices.Equal(got, wantTypes) {
		t.Fatalf("emitted %v, want %v", got, wantTypes)
	}
	// The breach's write fails in the emitter: nothing of it is written.
	em.mu.Lock()
	em.fail = errors.New("queue full")
	em.mu.Unlock()
	e.clock.Advance(2 * time.Minute)
	if err := e.eng.Tick(t.Context()); err == nil {
		t.Fatal("a tick whose emitter fails succeeds")
	}
	if got := e.history(r.ID); len(got) != 3 {
		t.Fatalf("history after the failed write %v", got)
	}
	em.mu.Lock()
	em.fail = nil
	em.mu.Unlock()
	e.tick()
	wantState(t, e.get(r.ID), StateRolledBack)
	got := em.types()
	want := append(wantTypes, EventBreach, EventRollback, EventRolledBack)
	if !slices.Equal(got, want) {
		t.Fatalf("emitted %v, want %v", got, want)
	}
	h, err := e.eng.History(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range em.evs {
		if ev.Seq != h[i].Seq || ev.Type != h[i].Type || em.ids[i] != r.ID {
			t.Errorf("emitted #%d %+v, history %+v", i, ev, h[i])
		}
	}
	if b := em.evs[3].Breach; b == nil || b.Gate != GateErrorRate {
		t.Errorf("breach event %+v", em.evs[3])
	}
}
