package fleetd

// The change feed behind GET /api/v1/watch and the console's live pages:
// the places that change devices and bundles publish their topic; a loop
// compares the rollouts each second while anyone watches.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

const (
	// watchEvery is the least time between two events of one topic to
	// one watcher (and how often the rollouts are compared).
	watchEvery = time.Second
	// watchKeepalive is how often an idle stream gets a comment line.
	watchKeepalive = 15 * time.Second
)

// changes fans topics out to watchers, coalescing: a watcher that is
// behind gets each pending topic once.
type changes struct {
	mu   sync.Mutex
	subs map[*watchSub]struct{}
}

type watchSub struct {
	wake    chan struct{} // capacity 1
	pending map[string]bool
}

// publish marks topic changed for every watcher.
func (c *changes) publish(topic string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sub := range c.subs {
		sub.pending[topic] = true
		select {
		case sub.wake <- struct{}{}:
		default:
		}
	}
}

// watching says whether anyone watches.
func (c *changes) watching() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs) > 0
}

// watch returns the topics (api.Topic*) that change from now on, each at
// most once per watchEvery, until ctx ends. The channel is closed then.
func (s *Server) watch(ctx context.Context) <-chan string {
	c := &s.changes
	sub := &watchSub{wake: make(chan struct{}, 1), pending: map[string]bool{}}
	c.mu.Lock()
	if c.subs == nil {
		c.subs = map[*watchSub]struct{}{}
	}
	c.subs[sub] = struct{}{}
	c.mu.Unlock()
	out := make(chan string)
	go func() {
		defer close(out)
		defer func() {
			c.mu.Lock()
			delete(c.subs, sub)
			c.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.closed:
				return
			case <-sub.wake:
			}
			c.mu.Lock()
			topics := sub.pending
			sub.pending = map[string]bool{}
			c.mu.Unlock()
			for _, t := range []string{api.TopicDevices, api.TopicRollouts, api.TopicBundles} {
				if !topics[t] {
					continue
				}
				select {
				case out <- t:
				case <-ctx.Done():
					return
				case <-s.closed:
					return
				}
			}
			// Throttle: what changes meanwhile is sent once, after.
			select {
			case <-time.After(watchEvery):
			case <-ctx.Done():
				return
			case <-s.closed:
				return
			}
		}
	}()
	return out
}

// watchRollouts publishes TopicRollouts when the rollouts differ from a
// second ago (while anyone watches), until ctx ends.
func (s *Server) watchRollouts(ctx context.Context) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	var last [sha256.Size]byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.changes.watching() {
			last = [sha256.Size]byte{}
			continue
		}
		rs, err := s.ro.eng.List()
		if err != nil {
			continue
		}
		b, err := json.Marshal(rs)
		if err != nil {
			continue
		}
		if h := sha256.Sum256(b); h != last {
			if last != ([sha256.Size]byte{}) {
				s.changes.publish(api.TopicRollouts)
			}
			last = h
		}
	}
}

// handleWatch answers GET /api/v1/watch.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) error {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": watching devices, rollouts, bundles\n\n"); err != nil {
		return nil
	}
	if err := rc.Flush(); err != nil {
		return nil
	}
	topics := s.watch(r.Context())
	keep := time.NewTicker(watchKeepalive)
	defer keep.Stop()
	for {
		var msg []byte
		select {
		case t, ok := <-topics:
			if !ok {
				return nil
			}
			var b bytes.Buffer
			data, _ := json.Marshal(api.Change{Topic: t})
			fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", t, data)
			msg = b.Bytes()
		case <-keep.C:
			msg = []byte(": keepalive\n\n")
		}
		if _, err := w.Write(msg); err != nil {
			return nil
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
	}
}
