package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
)

// ModelCache shares loaded models between the agents of one process: an
// in-process test fleet or a fleet simulator running many agents, where
// loading the same model once per agent would cost memory and CPU that a
// real device never shares with another. Models are keyed by the SHA-256
// of the unpacked bundle's manifest.json, which pins the digest of every
// file of the bundle, so two agents share a model only when they installed
// the very same bundle content.
//
// The first agent that needs a bundle's model loads it and runs its smoke
// vectors (with its own runtime settings); the others wait for that load
// and reuse the result, smoke test included. A model is closed when the
// last agent using it releases it (replaced by an install, or the agent
// closed). Everything else stays per agent: download, signature check,
// unpack, slots, outbox, uplink.
//
// A device never uses this: the agent command has no way to set it.
type ModelCache struct {
	mu     sync.Mutex
	byKey  map[string]*cachedModel
	byPtr  map[*model.Model]*cachedModel
	loads  uint64
	closed bool
}

type cachedModel struct {
	key   string
	ready chan struct{} // closed when the load finished
	m     *model.Model
	err   error
	refs  int
}

// ErrCacheClosed is returned by a ModelCache after Close.
var ErrCacheClosed = errors.New("agent: model cache closed")

// NewModelCache returns an empty cache.
func NewModelCache() *ModelCache {
	return &ModelCache{byKey: map[string]*cachedModel{}, byPtr: map[*model.Model]*cachedModel{}}
}

// WithModelCache makes the agent take its models from c (see ModelCache).
// Several agents of one process pass the same cache.
func WithModelCache(c *ModelCache) Option {
	return func(o *options) { o.models = c }
}

// Stats returns the number of models held now and the number of loads
// the cache did since it was created.
func (c *ModelCache) Stats() (models int, loads uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byPtr), c.loads
}

// Close closes every model still held. Agents must be closed first.
func (c *ModelCache) Close() error {
	c.mu.Lock()
	c.closed = true
	held := make([]*model.Model, 0, len(c.byPtr))
	for m := range c.byPtr {
		held = append(held, m)
	}
	clear(c.byPtr)
	clear(c.byKey)
	c.mu.Unlock()
	var errs []error
	for _, m := range held {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}

// acquire returns the model of the bundle unpacked in dir, loading it
// with load when no agent holds it. Every successful acquire is paired
// with a release.
func (c *ModelCache) acquire(ctx context.Context, dir string, m *bundle.Manifest, load func(context.Context, string, *bundle.Manifest) (*model.Model, error)) (*model.Model, error) {
	raw, err := os.ReadFile(filepath.Join(dir, bundle.ManifestName))
	if err != nil {
		return nil, fmt.Errorf("model cache: %w", err)
	}
	sum := sha256.Sum256(raw)
	key := hex.EncodeToString(sum[:])
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrCacheClosed
		}
		e, ok := c.byKey[key]
		if !ok {
			e = &cachedModel{key: key, ready: make(chan struct{}), refs: 1}
			c.byKey[key] = e
			c.loads++
			c.mu.Unlock()
			e.m, e.err = load(ctx, dir, m)
			c.mu.Lock()
			if e.err != nil || c.closed {
				delete(c.byKey, key)
				if e.err == nil {
					e.m.Close()
					e.err = ErrCacheClosed
				}
			} else {
				c.byPtr[e.m] = e
			}
			close(e.ready)
			c.mu.Unlock()
			if e.err != nil {
				return nil, e.err
			}
			return e.m, nil
		}
		c.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		if e.err == nil && c.byKey[key] == e && e.refs > 0 {
			e.refs++
			c.mu.Unlock()
			return e.m, nil
		}
		c.mu.Unlock()
		// That load failed (it may have been cancelled with its agent's
		// context) or the model was released meanwhile: load again.
	}
}

// release gives back a model acquire returned; the last release closes
// it. It reports whether m came from the cache (otherwise the caller
// closes it).
func (c *ModelCache) release(m *model.Model) (bool, error) {
	c.mu.Lock()
	e, ok := c.byPtr[m]
	if !ok {
		closed := c.closed
		c.mu.Unlock()
		// After Close the cache closed it already.
		return closed, nil
	}
	e.refs--
	if e.refs > 0 {
		c.mu.Unlock()
		return true, nil
	}
	delete(c.byPtr, m)
	if c.byKey[e.key] == e {
		delete(c.byKey, e.key)
	}
	c.mu.Unlock()
	return true, m.Close()
}
