package api

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// TestKeepInput: the observer gets the input of the successful requests
// KeepInput asks for, raw bytes copied out of the reused request buffer,
// and of no others.
func TestKeepInput(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	got := make(chan Prediction, 10)
	var asked atomic.Int32
	var keep atomic.Bool
	keep.Store(true)
	s := serve(t, Options{
		Backend:      newRegistry(silero),
		OnPrediction: func(p Prediction) { got <- p },
		KeepInput: func(name, version string) bool {
			asked.Add(1)
			if name != "silero-vad" || version != "5.0.0" {
				t.Errorf("KeepInput(%q, %q)", name, version)
			}
			return keep.Load()
		},
	})
	frame := testbundle.PCM(testbundle.TwoSine())
	s.do(t, "POST", "/v2/models/silero-vad/infer", "application/octet-stream", frame)
	p := <-got
	if p.Input == nil || !bytes.Equal(p.Input.Raw, frame) || len(p.Input.Tensors) != 0 {
		t.Fatalf("raw prediction input %+v", p.Input)
	}
	// The next request reuses the pooled buffer: the kept bytes must not
	// change.
	kept := bytes.Clone(p.Input.Raw)
	other := bytes.Repeat([]byte{0x7f}, len(frame))
	s.do(t, "POST", "/v2/models/silero-vad/infer", "application/octet-stream", other)
	if p2 := <-got; p2.Input == nil || !bytes.Equal(p2.Input.Raw, other) {
		t.Fatalf("second raw input %+v", p2.Input)
	}
	if !bytes.Equal(p.Input.Raw, kept) {
		t.Fatal("the kept raw input changed with the next request")
	}

	s.do(t, "POST", "/v2/models/silero-vad/infer", "", requestBody(t, "t1", zeroState(sileroInputs())))
	if p := <-got; p.Input == nil || len(p.Input.Tensors) != 3 || p.Input.Raw != nil {
		t.Fatalf("tensor prediction input %+v", p.Input)
	}
	// A failed request is never kept, nor asked about.
	n := asked.Load()
	s.do(t, "POST", "/v2/models/silero-vad/infer", "", requestBody(t, "bad", sileroInputs()[:2]))
	if p := <-got; p.Err == nil || p.Input != nil || asked.Load() != n {
		t.Fatalf("failed prediction kept its input: %+v (asked %d times, was %d)", p, asked.Load(), n)
	}
	keep.Store(false)
	s.do(t, "POST", "/v2/models/silero-vad/infer", "application/octet-stream", frame)
	if p := <-got; p.Input != nil {
		t.Fatalf("input kept although KeepInput said no: %+v", p.Input)
	}
}
