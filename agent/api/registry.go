package api

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry is a Backend over the models the agent has loaded: one active
// model per bundle name, swapped atomically while requests run. A model
// that is replaced or removed is handed back with a wait function that
// returns once no request uses it any more, so the agent can close it
// safely. It is safe for concurrent use.
type Registry struct {
	mu      sync.RWMutex
	active  map[string]*entry
	loading map[string]bool // names announced with Loading, not yet active
}

// entry is an active (or retired, draining) model. refs counts the uses
// plus one for being active; done closes when it drops to zero.
type entry struct {
	p    Predictor
	info ModelInfo
	refs atomic.Int64
	done chan struct{}
}

func (e *entry) release() {
	if e.refs.Add(-1) == 0 {
		close(e.done)
	}
}

// NewRegistry returns an empty registry: not ready until a model is set.
func NewRegistry() *Registry {
	return &Registry{active: map[string]*entry{}, loading: map[string]bool{}}
}

// Loading announces that the bundle name is being loaded: until Set, a
// request for it gets ErrNotReady (503) rather than ErrModelNotFound
// (404), and the server is not ready. It has no effect on a name that
// has an active model, which keeps serving while its successor loads.
func (r *Registry) Loading(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.active[name]; !ok {
		r.loading[name] = true
	}
}

// Set makes p the active model of its bundle name. If it replaces one,
// Set returns the old model and a wait function that blocks until the
// last request using the old model has released it (or ctx is done);
// then the caller may close it. Both are nil when nothing was replaced.
func (r *Registry) Set(p Predictor) (old Predictor, wait func(context.Context) error) {
	m := p.Manifest()
	e := &entry{p: p, info: ModelInfo{Name: m.Name, Version: m.Version, Provider: p.Provider()}, done: make(chan struct{})}
	e.refs.Store(1)
	r.mu.Lock()
	prev := r.active[m.Name]
	r.active[m.Name] = e
	delete(r.loading, m.Name)
	r.mu.Unlock()
	return retire(prev)
}

// Remove takes the model of bundle name out of service (and forgets a
// Loading announcement). It returns the model and a wait function as Set
// does, or nil, nil if there was none.
func (r *Registry) Remove(name string) (old Predictor, wait func(context.Context) error) {
	r.mu.Lock()
	prev := r.active[name]
	delete(r.active, name)
	delete(r.loading, name)
	r.mu.Unlock()
	return retire(prev)
}

func retire(e *entry) (Predictor, func(context.Context) error) {
	if e == nil {
		return nil, nil
	}
	e.release() // no longer active; new requests cannot find it
	return e.p, func(ctx context.Context) error {
		select {
		case <-e.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("api: model %s@%s still in use: %w", e.info.Name, e.info.Version, ctx.Err())
		}
	}
}

// Model implements Backend.
func (r *Registry) Model(name string) (Predictor, func(), error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.active[name]
	if !ok {
		if r.loading[name] {
			return nil, nil, fmt.Errorf("model %q is loading: %w", name, ErrNotReady)
		}
		return nil, nil, fmt.Errorf("%w: no model named %q is installed%s", ErrModelNotFound, name, r.availableLocked())
	}
	e.refs.Add(1) // under the read lock: retire cannot run in between
	var once sync.Once
	return e.p, func() { once.Do(e.release) }, nil
}

// availableLocked lists the active names for a not-found message.
func (r *Registry) availableLocked() string {
	if len(r.active) == 0 {
		return " (none is)"
	}
	names := make([]string, 0, len(r.active))
	for n := range r.active {
		names = append(names, n)
	}
	slices.Sort(names)
	return " (installed: " + strings.Join(names, ", ") + ")"
}

// Models implements Backend: the active models, by name.
func (r *Registry) Models() []ModelInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]ModelInfo, 0, len(r.active))
	for _, e := range r.active {
		out = append(out, e.info)
	}
	slices.SortFunc(out, func(a, b ModelInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Ready implements Backend: at least one model is active and none is
// waiting for its first load.
func (r *Registry) Ready() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.active) > 0 && len(r.loading) == 0
}

var _ Backend = (*Registry)(nil)
