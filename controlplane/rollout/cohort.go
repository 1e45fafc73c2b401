package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"slices"
	"strings"
)

// CohortOrder returns ids ordered by hash(deviceID, rolloutID): the order
// in which a rollout takes devices, wave by wave, as cumulative prefixes.
// It depends on nothing but the ids, so a restart, or anyone recomputing
// it, gets the same cohorts; and different rollouts spread their canaries
// over different devices.
func CohortOrder(rolloutID string, ids []string) []string {
	type keyed struct {
		h  uint64
		id string
	}
	ks := make([]keyed, len(ids))
	for i, id := range ids {
		ks[i] = keyed{cohortHash(rolloutID, id), id}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if a.h != b.h {
			if a.h < b.h {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.id
	}
	return out
}

func cohortHash(rolloutID, deviceID string) uint64 {
	h := sha256.New()
	h.Write([]byte(deviceID))
	h.Write([]byte{0})
	h.Write([]byte(rolloutID))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// shareSize turns a percent or count of n devices, raised to minDevices,
// into a number of devices in [1, n] (0 when n is 0).
func shareSize(n int, pct *float64, count *int, minDevices int) int {
	var v int
	switch {
	case pct != nil:
		v = int(math.Ceil(*pct*float64(n)/100 - 1e-9))
	case count != nil:
		v = *count
	}
	v = max(v, minDevices, 1)
	return min(v, n)
}
