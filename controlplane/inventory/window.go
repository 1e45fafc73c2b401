package inventory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// window is the deduplication state of one outbox (device, epoch): every
// id <= hw has been seen (or given up on), and runs are the ids above it
// seen so far, as sorted, disjoint, non-adjacent closed intervals, all
// starting above hw+1. Outbox ids increase in append order and the agent
// drains in order (after a reconnect, as two ordered streams: the backlog
// and what is appended meanwhile, one run), so runs stays empty or short:
// it grows only when ids arrive out of order or the outbox dropped
// records (gaps that will never fill). When it would exceed the limit, the lowest gap is given up on:
// hw jumps to the end of the first run, and an id from that gap arriving
// later counts as a duplicate.
type window struct {
	hw      uint64
	runs    []run
	touched int64 // unix nanoseconds of the last use, for eviction
}

type run struct{ lo, hi uint64 }

// seen reports whether id was seen before, and records it. maxRuns bounds
// len(w.runs); skipped counts the ids given up on to keep that bound.
func (w *window) seen(id uint64, maxRuns int) (dup bool, skipped uint64) {
	if id <= w.hw {
		return true, 0
	}
	// i is the first run starting above id.
	i := sort.Search(len(w.runs), func(i int) bool { return w.runs[i].lo > id })
	if i > 0 && w.runs[i-1].hi >= id {
		return true, 0
	}
	switch {
	case id == w.hw+1:
		w.hw = id
	case i > 0 && w.runs[i-1].hi+1 == id:
		w.runs[i-1].hi = id
		if i < len(w.runs) && w.runs[i].lo == id+1 {
			w.runs[i-1].hi = w.runs[i].hi
			w.runs = append(w.runs[:i], w.runs[i+1:]...)
		}
	case i < len(w.runs) && w.runs[i].lo == id+1:
		w.runs[i].lo = id
	default:
		w.runs = append(w.runs, run{})
		copy(w.runs[i+1:], w.runs[i:])
		w.runs[i] = run{id, id}
	}
	w.fold()
	for len(w.runs) > maxRuns {
		skipped += w.runs[0].lo - w.hw - 1
		w.hw = w.runs[0].hi
		w.runs = w.runs[1:]
		w.fold()
	}
	return false, skipped
}

// fold merges a first run that has become contiguous with hw.
func (w *window) fold() {
	if len(w.runs) > 0 && w.runs[0].lo == w.hw+1 {
		w.hw = w.runs[0].hi
		w.runs = w.runs[1:]
	}
}

// windowFormat is the first byte of an encoded window.
const windowFormat = 1

// marshal encodes w: format byte, touched (varint), hw (uvarint), the
// number of runs, then each run as (gap from the previous end, length)
// uvarints, which keeps the encoding small.
func (w *window) marshal() []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+2*len(w.runs)*3)
	b = append(b, windowFormat)
	b = binary.AppendVarint(b, w.touched)
	b = binary.AppendUvarint(b, w.hw)
	b = binary.AppendUvarint(b, uint64(len(w.runs)))
	prev := w.hw
	for _, r := range w.runs {
		b = binary.AppendUvarint(b, r.lo-prev)
		b = binary.AppendUvarint(b, r.hi-r.lo)
		prev = r.hi
	}
	return b
}

var errWindow = errors.New("corrupt dedup window")

func unmarshalWindow(b []byte) (*window, error) {
	if len(b) == 0 || b[0] != windowFormat {
		return nil, fmt.Errorf("%w: unknown format", errWindow)
	}
	b = b[1:]
	next := func() (uint64, error) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, fmt.Errorf("%w: truncated", errWindow)
		}
		b = b[n:]
		return v, nil
	}
	var w window
	t, n := binary.Varint(b)
	if n <= 0 {
		return nil, fmt.Errorf("%w: truncated", errWindow)
	}
	b = b[n:]
	w.touched = t
	var err error
	if w.hw, err = next(); err != nil {
		return nil, err
	}
	count, err := next()
	if err != nil {
		return nil, err
	}
	if count > uint64(len(b))/2 {
		return nil, fmt.Errorf("%w: %d runs in %d bytes", errWindow, count, len(b))
	}
	w.runs = make([]run, 0, count)
	prev := w.hw
	for range count {
		gap, err := next()
		if err != nil {
			return nil, err
		}
		length, err := next()
		if err != nil {
			return nil, err
		}
		// Runs start at least two above the previous end (one id of gap)
		// and must not overflow.
		if gap < 2 || prev+gap < prev || prev+gap+length < prev+gap {
			return nil, fmt.Errorf("%w: bad run", errWindow)
		}
		r := run{lo: prev + gap, hi: prev + gap + length}
		w.runs = append(w.runs, r)
		prev = r.hi
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errWindow, len(b))
	}
	return &w, nil
}
