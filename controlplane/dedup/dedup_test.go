package dedup

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestSettle: one oracle call over the ids of every stage that are not
// Present, in order; each stage's commit gets its own answers; every
// stage is released, also when the oracle fails.
func TestSettle(t *testing.T) {
	type got struct {
		dup      []bool
		released int
	}
	stage := func(g *got, ids []uint64, outs []Outcome) *Stage {
		return &Stage{IDs: ids, Outs: outs,
			Commit:  func(d []bool) error { g.dup = d; return nil },
			Release: func() { g.released++ }}
	}
	tests := []struct {
		name    string
		answers func(ids []uint64) ([]bool, error)
		wantAsk []uint64
		wantA   []bool
		wantB   []bool
		wantErr string
	}{
		{"answers split by stage", func(ids []uint64) ([]bool, error) {
			return []bool{false, true, false, true}, nil
		}, []uint64{1, 3, 2, 5}, []bool{false, false, true}, []bool{false, true}, ""},
		{"oracle fails", func([]uint64) ([]bool, error) { return nil, errors.New("disk gone") },
			[]uint64{1, 3, 2, 5}, nil, nil, "disk gone"},
		{"oracle answers too few", func([]uint64) ([]bool, error) { return []bool{true}, nil },
			[]uint64{1, 3, 2, 5}, nil, nil, "answered 1 results"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a, b got
			var asked []uint64
			err := Settle(func(ids []uint64) ([]bool, error) {
				asked = slices.Clone(ids)
				return tc.answers(ids)
			},
				stage(&a, []uint64{1, 4, 3}, []Outcome{Inserted, Present, Recovering}),
				stage(&b, []uint64{2, 5}, []Outcome{Gone, Inserted}))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(asked, tc.wantAsk) {
				t.Errorf("asked %v, want %v", asked, tc.wantAsk)
			}
			if !slices.Equal(a.dup, tc.wantA) || !slices.Equal(b.dup, tc.wantB) {
				t.Errorf("commits got %v and %v, want %v and %v", a.dup, b.dup, tc.wantA, tc.wantB)
			}
			if a.released != 1 || b.released != 1 {
				t.Errorf("released %d and %d times, want once each", a.released, b.released)
			}
		})
	}
}
