// Package dedup holds the second and third of the three durable steps by
// which fleetd's stores keep a device's records exactly once though
// devices deliver them at least once:
//
//  1. Stage: each store writes the delivery's records it does not hold
//     yet, marked pending, and notes what it found (a Stage).
//  2. Ask: one call of the dedup oracle (the inventory's SeenRecords)
//     over the ids of the whole delivery records them as seen, durably,
//     and says which were seen before.
//  3. Commit: each store confirms its pending records the oracle saw for
//     the first time and deletes those it had seen before (a redelivery
//     of records stored and pruned long ago).
//
// A crash between the steps leaves records pending; the redelivery finds
// them (Recovering) and finishes the job, so nothing acknowledged is
// lost and nothing is counted twice. One oracle call per delivery keeps
// the oracle's window of seen ids free of gaps the delivery itself would
// open if each store asked about its own share.
package dedup

import "fmt"

// Oracle records ids of one device and outbox epoch as seen, durably, and
// reports for each whether it was seen before (an id repeated in ids is
// a duplicate the second time).
type Oracle func(ids []uint64) (duplicate []bool, err error)

// Outcome is what the stage step found for one record.
type Outcome uint8

const (
	// Inserted: written now, pending.
	Inserted Outcome = iota
	// Recovering: found pending, left by an interrupted delivery.
	Recovering
	// Present: held and confirmed, or repeated in the delivery: a
	// duplicate, not asked about.
	Present
	// Gone: not held (refused as invalid, say) but asked about, so the
	// oracle does not wait for the id to arrive.
	Gone
)

// Stage is one store's staged share of a delivery.
type Stage struct {
	// IDs and Outs are the records' ids and what the stage step found,
	// in the same order.
	IDs  []uint64
	Outs []Outcome
	// Commit is the third step: duplicate[i] is the oracle's answer for
	// record i (false for the Present ones, which were not asked about).
	Commit func(duplicate []bool) error
	// Release, if set, ends the stage (it unlocks the device the stage
	// step locked). Settle calls it; a caller that does not get as far
	// as Settle calls it itself. It must be safe to call twice.
	Release func()
}

// Settle runs the ask and commit steps of stages, the staged shares of
// one delivery, and releases them all.
func Settle(seen Oracle, stages ...*Stage) error {
	defer func() {
		for _, st := range stages {
			if st.Release != nil {
				st.Release()
			}
		}
	}()
	var ask []uint64
	for _, st := range stages {
		if len(st.IDs) != len(st.Outs) {
			return fmt.Errorf("dedup: a stage has %d ids and %d outcomes", len(st.IDs), len(st.Outs))
		}
		for i, o := range st.Outs {
			if o != Present {
				ask = append(ask, st.IDs[i])
			}
		}
	}
	var dup []bool
	if len(ask) > 0 {
		var err error
		if dup, err = seen(ask); err != nil {
			return fmt.Errorf("dedup of %d records: %w", len(ask), err)
		}
		if len(dup) != len(ask) {
			return fmt.Errorf("dedup of %d records: the oracle answered %d results", len(ask), len(dup))
		}
	}
	j := 0
	for _, st := range stages {
		d := make([]bool, len(st.Outs))
		for i, o := range st.Outs {
			if o != Present {
				d[i] = dup[j]
				j++
			}
		}
		if err := st.Commit(d); err != nil {
			return err
		}
	}
	return nil
}
