package onnx

import (
	"encoding/binary"
	"sync"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// maxShapeKeys bounds the output-shape cache of a session: a model fed
// ever new input shapes stops learning rather than growing without bound.
const maxShapeKeys = 64

// shapeCache remembers, per combination of input shapes, the shapes of a
// model's outputs, so that later runs can preallocate them. An entry of
// nil shapes marks a combination whose output shapes turned out to depend
// on more than the input shapes.
type shapeCache struct {
	mu sync.RWMutex
	m  map[string][][]int64
}

// shapeKey encodes the input shapes, in model order, into buf.
func shapeKey(buf []byte, shapes [][]int64) []byte {
	for _, shape := range shapes {
		buf = append(buf, byte(len(shape)))
		for _, d := range shape {
			buf = binary.AppendUvarint(buf, uint64(d))
		}
	}
	return buf
}

func (c *shapeCache) lookup(key []byte) ([][]int64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	shapes, ok := c.m[string(key)]
	return shapes, ok && shapes != nil
}

func (c *shapeCache) learn(key []byte, outs []tensor.Tensor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[string(key)]; ok || len(c.m) >= maxShapeKeys {
		return
	}
	if c.m == nil {
		c.m = make(map[string][][]int64)
	}
	shapes := make([][]int64, len(outs))
	for i, t := range outs {
		shapes[i] = append([]int64(nil), t.Shape...)
	}
	c.m[string(key)] = shapes
}

// forget marks key as not cacheable.
func (c *shapeCache) forget(key []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string][][]int64)
	}
	c.m[string(key)] = nil
}
