package model

import (
	"fmt"

	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// compareIO checks the manifest's specs against the model's (as ONNX
// Runtime reports them): the same tensor names, each with the model's
// datatype and rank, and every dimension the model fixes fixed to the
// same size. A manifest may fix a dimension the model leaves dynamic, not
// the reverse. For inputs, a model scalar (rank 0) may be declared as a
// one-element [1] tensor, which ONNX Runtime accepts in its place.
func compareIO(model, declared []tensor.Spec, kind string, inputs bool) error {
	byName := make(map[string]tensor.Spec, len(declared))
	for _, d := range declared {
		if _, dup := byName[d.Name]; dup {
			return fmt.Errorf("%w: %s %q is declared twice", ErrManifest, kind, d.Name)
		}
		byName[d.Name] = d
	}
	for _, ms := range model {
		d, ok := byName[ms.Name]
		if !ok {
			return fmt.Errorf("%w: the model's %s %q (%s %v) is not declared", ErrManifest, kind, ms.Name, ms.Datatype, ms.Shape)
		}
		delete(byName, ms.Name)
		if d.Datatype != ms.Datatype {
			return fmt.Errorf("%w: %s %q is declared %s, the model takes %s", ErrManifest, kind, d.Name, d.Datatype, ms.Datatype)
		}
		if inputs && len(ms.Shape) == 0 && len(d.Shape) == 1 && d.Shape[0] == 1 {
			continue
		}
		if len(d.Shape) != len(ms.Shape) {
			return fmt.Errorf("%w: %s %q is declared with shape %v (rank %d), the model's is %v (rank %d)", ErrManifest, kind, d.Name, d.Shape, len(d.Shape), ms.Shape, len(ms.Shape))
		}
		for i, dd := range d.Shape {
			md := ms.Shape[i]
			switch {
			case dd == 0 || dd < -1:
				return fmt.Errorf("%w: %s %q: dimension %d is declared %d; use -1 for dynamic or a positive size", ErrManifest, kind, d.Name, i, dd)
			case md >= 0 && dd == -1:
				return fmt.Errorf("%w: %s %q: dimension %d is declared dynamic, the model fixes it to %d (shape %v)", ErrManifest, kind, d.Name, i, md, ms.Shape)
			case md >= 0 && dd != md:
				return fmt.Errorf("%w: %s %q: dimension %d is declared %d, the model's is %d (shape %v)", ErrManifest, kind, d.Name, i, dd, md, ms.Shape)
			}
		}
	}
	for _, d := range declared {
		if _, extra := byName[d.Name]; extra {
			return fmt.Errorf("%w: %s %q is declared but the model has no such %s", ErrManifest, kind, d.Name, kind)
		}
	}
	return nil
}

// CheckIO holds a signature from elsewhere (an MLflow model's, say) to
// what the ONNX file at modelPath declares, as Load holds a manifest's:
// the same names, datatypes and ranks, every dimension the model fixes
// fixed to the same size. Errors wrap ErrManifest, or ErrRuntime when
// ONNX Runtime cannot read the file.
func CheckIO(modelPath string, inputs, outputs []tensor.Spec, opts Options) error {
	if err := onnx.Init(opts.ORTLibrary); err != nil {
		return fmt.Errorf("%w: %w", ErrRuntime, err)
	}
	ins, outs, err := onnx.Inspect(modelPath)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRuntime, err)
	}
	if err := compareIO(ins, inputs, "input", true); err != nil {
		return err
	}
	return compareIO(outs, outputs, "output", false)
}
