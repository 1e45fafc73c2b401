package inventory

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

func TestWindow(t *testing.T) {
	tests := []struct {
		name    string
		maxRuns int
		ids     []uint64
		dups    []bool // per id
		hw      uint64
		runs    []run
		skipped uint64
	}{
		{name: "in order", maxRuns: 4, ids: []uint64{1, 2, 3}, dups: []bool{false, false, false}, hw: 3},
		{name: "redelivery", maxRuns: 4, ids: []uint64{1, 2, 1, 2, 3, 3}, dups: []bool{false, false, true, true, false, true}, hw: 3},
		{name: "gap then fill", maxRuns: 4, ids: []uint64{1, 3, 4, 2}, dups: []bool{false, false, false, false}, hw: 4},
		{name: "gap stays open", maxRuns: 4, ids: []uint64{1, 3, 4, 6}, dups: []bool{false, false, false, false},
			hw: 1, runs: []run{{3, 4}, {6, 6}}},
		{name: "duplicates above hw", maxRuns: 4, ids: []uint64{5, 7, 5, 7, 6}, dups: []bool{false, false, true, true, false},
			hw: 0, runs: []run{{5, 7}}},
		{name: "bridge two runs", maxRuns: 4, ids: []uint64{10, 12, 11}, dups: []bool{false, false, false}, runs: []run{{10, 12}}},
		{name: "extend run downwards", maxRuns: 4, ids: []uint64{10, 9}, dups: []bool{false, false}, runs: []run{{9, 10}}},
		{name: "insert between runs", maxRuns: 4, ids: []uint64{10, 20, 15}, dups: []bool{false, false, false},
			runs: []run{{10, 10}, {15, 15}, {20, 20}}},
		{
			// The outbox dropped 2 and 4: once more than two runs would be
			// open, the lowest gap is given up on and 2 counts as seen.
			name: "overflow gives up the lowest gap", maxRuns: 2, ids: []uint64{1, 3, 5, 7, 2, 4},
			dups: []bool{false, false, false, false, true, false}, hw: 5, runs: []run{{7, 7}}, skipped: 1,
		},
		{name: "huge ids", maxRuns: 4, ids: []uint64{1<<64 - 1, 1<<64 - 2, 1<<64 - 1}, dups: []bool{false, false, true},
			runs: []run{{1<<64 - 2, 1<<64 - 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var w window
			var skipped uint64
			for i, id := range tc.ids {
				dup, sk := w.seen(id, tc.maxRuns)
				skipped += sk
				if dup != tc.dups[i] {
					t.Errorf("id %d (#%d): duplicate = %v, want %v", id, i, dup, tc.dups[i])
				}
			}
			if w.hw != tc.hw || !slices.Equal(w.runs, tc.runs) || skipped != tc.skipped {
				t.Errorf("window hw=%d runs=%v skipped=%d, want hw=%d runs=%v skipped=%d",
					w.hw, w.runs, skipped, tc.hw, tc.runs, tc.skipped)
			}
			got, err := unmarshalWindow(w.marshal())
			if err != nil {
				t.Fatalf("unmarshal(marshal): %v", err)
			}
			if got.hw != w.hw || !slices.Equal(got.runs, w.runs) && len(w.runs) > 0 {
				t.Errorf("round trip: hw=%d runs=%v, want hw=%d runs=%v", got.hw, got.runs, w.hw, w.runs)
			}
		})
	}
}

func TestUnmarshalWindowRefuses(t *testing.T) {
	good := (&window{hw: 5, runs: []run{{7, 9}, {11, 11}}, touched: 42}).marshal()
	tests := map[string][]byte{
		"empty":          nil,
		"unknown format": {9, 0, 0, 0},
		"truncated":      good[:len(good)-1],
		"trailing bytes": append(append([]byte(nil), good...), 0),
		"adjacent runs":  {windowFormat, 0, 5, 1, 1, 0}, // run starting at hw+1
		"too many runs":  binary.AppendUvarint([]byte{windowFormat, 0, 5}, 1<<40),
		"overflow":       binary.AppendUvarint(binary.AppendUvarint([]byte{windowFormat, 0, 5, 1}, 1<<64-2), 10),
	}
	for name, b := range tests {
		if _, err := unmarshalWindow(b); !errors.Is(err, errWindow) {
			t.Errorf("%s: unmarshalWindow(%x) error = %v, want errWindow", name, b, err)
		}
	}
}

// FuzzWindow drives a window with arbitrary ids and checks it against a
// plain set while no gap was given up on, and that the encoding round
// trips; unmarshalWindow also gets the raw input.
func FuzzWindow(f *testing.F) {
	f.Add([]byte{1, 2, 3, 5, 4, 9, 9})
	f.Add([]byte{200, 100, 1, 255, 2, 3})
	f.Add((&window{hw: 3, runs: []run{{5, 6}}}).marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		unmarshalWindow(b) // must not panic

		var w window
		set := map[uint64]bool{}
		var skipped uint64
		for _, c := range b {
			id := uint64(c) + 1
			dup, sk := w.seen(id, 3)
			skipped += sk
			if skipped == 0 && dup != set[id] {
				t.Fatalf("id %d: duplicate = %v, the set says %v", id, dup, set[id])
			}
			set[id] = true
			if len(w.runs) > 3 {
				t.Fatalf("%d runs, the limit is 3", len(w.runs))
			}
			for i, r := range w.runs {
				if r.lo > r.hi || (i == 0 && r.lo <= w.hw+1) || (i > 0 && r.lo <= w.runs[i-1].hi+1) {
					t.Fatalf("invariant broken: hw=%d runs=%v", w.hw, w.runs)
				}
			}
			got, err := unmarshalWindow(w.marshal())
			if err != nil || got.hw != w.hw || len(got.runs) != len(w.runs) || (len(w.runs) > 0 && !slices.Equal(got.runs, w.runs)) {
				t.Fatalf("round trip: %+v, %v; want %+v", got, err, w)
			}
		}
	})
}
