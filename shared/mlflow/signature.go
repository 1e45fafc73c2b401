package mlflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// dtypes maps the numpy dtype names of MLflow's tensor specs to tensor
// datatypes.
var dtypes = map[string]tensor.Datatype{
	"float32": tensor.FP32,
	"float64": tensor.FP64,
	"int64":   tensor.Int64,
	"int32":   tensor.Int32,
	"int16":   tensor.Int16,
	"int8":    tensor.Int8,
	"uint8":   tensor.Uint8,
	"bool":    tensor.Bool,
}

// specJSON is one entry of a signature's inputs or outputs.
type specJSON struct {
	Type       string          `json:"type"`
	TensorSpec *tensorSpecJSON `json:"tensor-spec,omitempty"`
	Name       *string         `json:"name,omitempty"`
}

type tensorSpecJSON struct {
	Dtype string   `json:"dtype"`
	Shape []*int64 `json:"shape"`
}

// ParseSignature reads one side of an MLflow signature (the JSON string
// of signature.inputs or signature.outputs): a list of named tensor specs
// {"type": "tensor", "name": ..., "tensor-spec": {"dtype", "shape"}}.
// Column-based signatures are refused: an ONNX graph takes tensors, by
// name.
func ParseSignature(s string) ([]tensor.Spec, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: empty", ErrModel)
	}
	var entries []specJSON
	if err := json.Unmarshal([]byte(s), &entries); err != nil {
		return nil, fmt.Errorf("%w: malformed signature JSON: %v", ErrModel, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: no tensors", ErrModel)
	}
	out := make([]tensor.Spec, 0, len(entries))
	for i, e := range entries {
		sp, err := e.spec()
		if err != nil {
			return nil, fmt.Errorf("%w: [%d]: %w", ErrModel, i, err)
		}
		if slices.ContainsFunc(out, func(o tensor.Spec) bool { return o.Name == sp.Name }) {
			return nil, fmt.Errorf("%w: [%d]: tensor %q is named twice", ErrModel, i, sp.Name)
		}
		out = append(out, sp)
	}
	return out, nil
}

func (e specJSON) spec() (tensor.Spec, error) {
	if e.Type != "tensor" {
		name := ""
		if e.Name != nil {
			name = fmt.Sprintf(" %q", *e.Name)
		}
		return tensor.Spec{}, fmt.Errorf("entry%s is of type %q, not a tensor: log the model with a tensor-based signature (infer_signature on numpy arrays)", name, e.Type)
	}
	if e.Name == nil || *e.Name == "" {
		return tensor.Spec{}, errors.New("a tensor without a name: the ONNX graph's tensors are matched by name")
	}
	name := *e.Name
	if e.TensorSpec == nil {
		return tensor.Spec{}, fmt.Errorf("tensor %q has no tensor-spec", name)
	}
	dt, ok := dtypes[e.TensorSpec.Dtype]
	if !ok {
		return tensor.Spec{}, fmt.Errorf("tensor %q has dtype %q; supported: %s", name, e.TensorSpec.Dtype, supported())
	}
	if e.TensorSpec.Shape == nil {
		return tensor.Spec{}, fmt.Errorf("tensor %q has no shape", name)
	}
	shape := make([]int64, len(e.TensorSpec.Shape))
	for i, d := range e.TensorSpec.Shape {
		switch {
		case d == nil:
			return tensor.Spec{}, fmt.Errorf("tensor %q: dimension %d is null", name, i)
		case *d == 0 || *d < -1 || *d > math.MaxInt32:
			return tensor.Spec{}, fmt.Errorf("tensor %q: dimension %d is %d; want -1 (any) or a positive size", name, i, *d)
		}
		shape[i] = *d
	}
	return tensor.Spec{Name: name, Datatype: dt, Shape: shape}, nil
}

func supported() string {
	names := make([]string, 0, len(dtypes))
	for n := range dtypes {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// FormatSignature is specs as one side of an MLflow signature, the JSON
// that ParseSignature reads (what MLflow writes for numpy tensors).
func FormatSignature(specs []tensor.Spec) (string, error) {
	entries := make([]specJSON, len(specs))
	for i, s := range specs {
		dtype := ""
		for n, dt := range dtypes {
			if dt == s.Datatype {
				dtype = n
			}
		}
		if dtype == "" {
			return "", fmt.Errorf("%w: tensor %q: %s has no MLflow dtype", ErrModel, s.Name, s.Datatype)
		}
		shape := make([]*int64, len(s.Shape))
		for j := range s.Shape {
			shape[j] = &s.Shape[j]
		}
		entries[i] = specJSON{Type: "tensor", TensorSpec: &tensorSpecJSON{Dtype: dtype, Shape: shape}, Name: &s.Name}
	}
	b, err := json.Marshal(entries)
	return string(b), err
}
