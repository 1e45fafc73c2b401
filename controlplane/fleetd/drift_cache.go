package fleetd

// The cache of merged drift hours: per device and hour, each bundle's
// merged windows in their binary encoding, in an LRU bounded by
// driftCacheBytes and dropped when the device's drift records of that
// hour are stored.

import (
	"container/list"
	"fmt"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// driftIndex holds the profiles read and the cache of merged hours. Its
// zero value is ready to use.
type driftIndex struct {
	mu       sync.Mutex
	profiles map[string]*profileLoad // by bundle id and digest
	hours    map[hourKey]*list.Element
	lru      list.List // of *hourEntry, most recent first
	bytes    int
}

type hourKey struct {
	device string
	hour   int64 // Unix seconds
}

// hourEntry is one device's windows of one hour, per bundle; filling is
// set while a query reads them.
type hourEntry struct {
	key     hourKey
	bundles map[string]*cachedWindows
	size    int
	filling bool
}

type cachedWindows struct {
	enc              []byte // drift.Summary.MarshalBinary of the merged windows
	windows, invalid int
}

// stored is the ingest hook: device's records were stored, so the hours
// of its drift records are read again when next queried.
func (x *driftIndex) stored(device string, recs []telemetry.Record) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, r := range recs {
		if r.Kind != protocol.RecordDrift {
			continue
		}
		k := hourKey{device, r.Time.Truncate(driftHour).Unix()}
		if e := x.hours[k]; e != nil {
			x.remove(e)
		}
	}
}

func (x *driftIndex) remove(e *list.Element) {
	h := e.Value.(*hourEntry)
	x.lru.Remove(e)
	delete(x.hours, h.key)
	x.bytes -= h.size
}

// hour returns device's windows of the hour starting at start, from the
// cache or read from the store (and cached, unless records of that hour
// were stored meanwhile).
func (x *driftIndex) hour(s *Server, device string, start time.Time) (*hourEntry, error) {
	k := hourKey{device, start.Unix()}
	x.mu.Lock()
	if x.hours == nil {
		x.hours = map[hourKey]*list.Element{}
	}
	if e := x.hours[k]; e != nil && !e.Value.(*hourEntry).filling {
		x.lru.MoveToFront(e)
		h := e.Value.(*hourEntry)
		x.mu.Unlock()
		return h, nil
	}
	// A placeholder: stored drops it if records of this hour arrive
	// while the store is read, and the result is then not kept.
	ph := &hourEntry{key: k, filling: true}
	if e := x.hours[k]; e != nil {
		x.remove(e)
	}
	x.hours[k] = x.lru.PushFront(ph)
	x.mu.Unlock()

	sums, err := s.readDrift(device, start, start.Add(driftHour), "")
	if err != nil {
		x.mu.Lock()
		if e := x.hours[k]; e != nil && e.Value == ph {
			x.remove(e)
		}
		x.mu.Unlock()
		return nil, err
	}
	h := &hourEntry{key: k, bundles: make(map[string]*cachedWindows, len(sums)), size: 64 + len(device)}
	for id, b := range sums {
		c := &cachedWindows{windows: b.windows, invalid: b.invalid}
		if b.sum != nil {
			if c.enc, err = b.sum.MarshalBinary(); err != nil {
				return nil, fmt.Errorf("fleetd: encoding the drift summary of %s: %w", device, err)
			}
		}
		h.bundles[id] = c
		h.size += 64 + len(id) + len(c.enc)
	}

	x.mu.Lock()
	defer x.mu.Unlock()
	if e := x.hours[k]; e != nil && e.Value == ph {
		e.Value = h
		x.bytes += h.size
		for x.bytes > driftCacheBytes && x.lru.Len() > 1 {
			x.remove(x.lru.Back())
		}
	}
	return h, nil
}
