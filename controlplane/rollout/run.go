package rollout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// run is an active rollout in memory: its status, its devices in cohort
// order, and what changed since it was last written.
type run struct {
	r    *Rollout
	devs []*Device
	win  windows

	dirty   map[int]struct{} // device orders to write
	events  []Event          // history to append
	release bool             // release the holds at the next write
	acquire bool             // take the holds again (rollback of a finished rollout)
	written []byte           // the rollout as last written
}

func (e *Engine) newRun(r *Rollout, devs []*Device) (*run, error) {
	win, err := compileWindows(r.Spec.Limits.MaintenanceWindows)
	if err != nil {
		return nil, fmt.Errorf("rollout %s: %w", r.ID, err)
	}
	if len(devs) != r.Devices {
		return nil, fmt.Errorf("rollout %s: %d devices stored, %d expected", r.ID, len(devs), r.Devices)
	}
	return &run{r: r, devs: devs, win: win, dirty: map[int]struct{}{}}, nil
}

func (rn *run) touch(d *Device) { rn.dirty[d.Order] = struct{}{} }

func (rn *run) event(now time.Time, typ EventType, step int, msg string) *Event {
	rn.events = append(rn.events, Event{Time: now, Type: typ, Step: step, Message: msg})
	return &rn.events[len(rn.events)-1]
}

// bundleFor returns the version device d is rolled out to.
func (rn *run) bundleFor(d *Device) protocol.BundleID {
	if rn.r.Spec.Kind == KindExperiment {
		return rn.r.Arms[d.Arm]
	}
	return rn.r.Bundle
}

func (rn *run) ids() []string {
	out := make([]string, len(rn.devs))
	for i, d := range rn.devs {
		out[i] = d.ID
	}
	return out
}

// write puts the rollout, the dirty devices and the new events in tx,
// telling emit (if set) of each event.
func (rn *run) write(tx *bolt.Tx, emit Emitter) error {
	for o := range rn.dirty {
		if err := putDevice(tx, rn.r.ID, rn.devs[o]); err != nil {
			return err
		}
	}
	for i := range rn.events {
		if err := appendEvent(tx, rn.r.ID, &rn.events[i]); err != nil {
			return err
		}
		if emit != nil {
			if err := emit.RolloutEvent(tx, rn.r, rn.events[i]); err != nil {
				return fmt.Errorf("rollout %s: emitting %s: %w", rn.r.ID, rn.events[i].Type, err)
			}
		}
	}
	if rn.acquire {
		if h := holders(tx, rn.ids(), rn.r.ID); h != nil {
			return &ConflictError{Holders: h}
		}
		if err := hold(tx, rn.ids(), rn.r.ID); err != nil {
			return err
		}
	}
	if rn.release {
		if err := release(tx, rn.ids(), rn.r.ID); err != nil {
			return err
		}
	}
	return putRollout(tx, rn.r)
}

func (rn *run) clean() {
	clear(rn.dirty)
	rn.events = rn.events[:0]
	rn.release, rn.acquire = false, false
}

// flush writes what changed in one transaction (nothing, if nothing did:
// a rollout waiting out its bake costs no write per tick).
func (e *Engine) flush(rn *run) error {
	if len(rn.dirty) == 0 && len(rn.events) == 0 && !rn.release && !rn.acquire && rn.written != nil {
		if b, err := json.Marshal(rn.r); err == nil && bytes.Equal(b, rn.written) {
			return nil
		}
	}
	rn.r.Updated = e.now()
	if err := e.db.Update(func(tx *bolt.Tx) error { return rn.write(tx, e.emit) }); err != nil {
		return closedErr(err)
	}
	rn.clean()
	rn.written, _ = json.Marshal(rn.r)
	return nil
}

// snapshot returns a deep copy of the status.
func (rn *run) snapshot() *Rollout { return deepCopy(rn.r, "status") }

// deepCopy copies v through its JSON form, which covers every field of
// the spec and the status; what names v should that fail.
func deepCopy[T any](v *T, what string) *T {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("rollout: encoding %s: %v", what, err))
	}
	var c T
	if err := json.Unmarshal(b, &c); err != nil {
		panic(fmt.Sprintf("rollout: decoding %s: %v", what, err))
	}
	return &c
}
