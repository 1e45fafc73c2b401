package model

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Infer runs one request. Raw bytes go through the pre-processor, whose
// outputs named like model inputs feed the model and whose other outputs
// come back as Features. Tensors go straight to the model, bypassing the
// pre-processor. Model inputs are checked against the manifest's specs
// (names, datatypes, shapes, and finite values unless the manifest allows
// otherwise). The post-processor, if any, maps the model's outputs.
func (m *Model) Infer(ctx context.Context, in Input) (*Output, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	out := &Output{}
	var inputs []tensor.Tensor
	switch {
	case in.Raw != nil && len(in.Tensors) > 0:
		return nil, fmt.Errorf("%w: a request carries tensors or raw bytes, not both", ErrInput)
	case in.Raw != nil:
		if m.pre == nil {
			return nil, fmt.Errorf("%w: bundle %s has no pre-processor for raw input; send tensors", ErrInput, m.man.Name)
		}
		pre, err := m.pre.ProcessRaw(ctx, in.Raw)
		if err != nil {
			return nil, processorError("pre", err)
		}
		inputs, out.Features = m.split(pre)
		if err := m.validate(inputs); err != nil {
			return nil, fmt.Errorf("%w: pre-processor output: %w", ErrProcessor, err)
		}
	case len(in.Tensors) > 0:
		inputs = in.Tensors
		if err := m.validate(inputs); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
	default:
		return nil, fmt.Errorf("%w: no input tensors and no raw bytes", ErrInput)
	}

	res, err := m.sess.Run(ctx, inputs)
	if err != nil {
		if errors.Is(err, onnx.ErrInput) {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrRuntime, err)
	}
	if m.post != nil {
		if res, err = m.post.Process(ctx, res); err != nil {
			return nil, fmt.Errorf("%w: post-processor: %w", ErrProcessor, err)
		}
	}
	out.Tensors, out.Inputs = res, inputs
	return out, nil
}

// processorError maps a pre-processor failure: a refusal of the input is
// the caller's fault; anything else is the processor's.
func processorError(kind string, err error) error {
	switch {
	case errors.Is(err, processor.ErrRejected):
		return fmt.Errorf("%w: %s-processor: %w", ErrInput, kind, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s-processor: %w", kind, err)
	}
	return fmt.Errorf("%w: %s-processor: %w", ErrProcessor, kind, err)
}

// split separates the pre-processor's outputs into model inputs (the
// names the manifest declares) and features (the rest).
func (m *Model) split(ts []tensor.Tensor) (inputs, features []tensor.Tensor) {
	inputs = make([]tensor.Tensor, 0, len(m.inputs))
	for _, t := range ts {
		if m.inputIndex(t.Name) >= 0 {
			inputs = append(inputs, t)
		} else {
			features = append(features, t)
		}
	}
	return inputs, features
}

func (m *Model) inputIndex(name string) int {
	for i, s := range m.inputs {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// validate checks that inputs are exactly the manifest's inputs, each
// matching its spec.
func (m *Model) validate(inputs []tensor.Tensor) error {
	seen := make([]bool, len(m.inputs))
	for _, t := range inputs {
		i := m.inputIndex(t.Name)
		if i < 0 {
			return fmt.Errorf("tensor %q: %w: the model has no such input (inputs: %s)", t.Name, tensor.ErrName, names(m.inputs))
		}
		if seen[i] {
			return fmt.Errorf("tensor %q: %w: given twice", t.Name, tensor.ErrName)
		}
		seen[i] = true
		if err := m.inputs[i].Matches(t, m.man.Runtime.AllowNonFinite); err != nil {
			return err
		}
	}
	for i, ok := range seen {
		if !ok {
			s := m.inputs[i]
			return fmt.Errorf("tensor %q: %w: missing input (%s %v)", s.Name, tensor.ErrName, s.Datatype, s.Shape)
		}
	}
	return nil
}

func names(specs []tensor.Spec) string {
	s := ""
	for i, sp := range specs {
		if i > 0 {
			s += ", "
		}
		s += sp.Name
	}
	return s
}

// Smoke runs every smoke vector of the manifest and compares the
// expected outputs (model outputs or pre-processor features, by name)
// within the vector's tolerance; outputs a vector does not list are not
// compared. A vector's Inputs go straight to the model; its Raw bytes go
// through the pre-processor.
func (m *Model) Smoke(ctx context.Context) error {
	for i, v := range m.man.Smoke {
		name := v.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i)
		}
		if len(v.Expected) == 0 {
			return fmt.Errorf("%w: vector %q expects nothing", ErrSmoke, name)
		}
		out, err := m.Infer(ctx, Input{Tensors: v.Inputs, Raw: v.Raw})
		if err != nil {
			return fmt.Errorf("%w: vector %q: %w", ErrSmoke, name, err)
		}
		for _, want := range v.Expected {
			got, ok := find(out.Tensors, want.Name)
			if !ok {
				got, ok = find(out.Features, want.Name)
			}
			if !ok {
				return fmt.Errorf("%w: vector %q: expected output %q not produced (outputs: %s)", ErrSmoke, name, want.Name, tensorNames(out))
			}
			if err := tensor.Close(got, want, v.Tolerance.Abs, v.Tolerance.Rel); err != nil {
				return fmt.Errorf("%w: vector %q: %w", ErrSmoke, name, err)
			}
		}
	}
	return nil
}

func find(ts []tensor.Tensor, name string) (tensor.Tensor, bool) {
	for _, t := range ts {
		if t.Name == name {
			return t, true
		}
	}
	return tensor.Tensor{}, false
}

func tensorNames(out *Output) string {
	s := ""
	for _, t := range append(append([]tensor.Tensor(nil), out.Tensors...), out.Features...) {
		if s != "" {
			s += ", "
		}
		s += t.Name
	}
	return s
}
