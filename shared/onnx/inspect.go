package onnx

import (
	"fmt"
	"os"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Inspect returns the input and output tensors a model declares, as
// specs: ONNX element types mapped to tensor datatypes, symbolic or
// unknown dimensions as -1, a scalar as an empty shape. It loads the model
// into a throwaway session (graph optimizations off, one thread), so it
// costs about as much as loading the model. Init must have been called.
func Inspect(modelPath string) (inputs, outputs []tensor.Spec, err error) {
	if err := initialized(); err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(modelPath); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: session options: %w", ErrModel, err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(1); err != nil {
		return nil, nil, fmt.Errorf("%w: session options: %w", ErrModel, err)
	}
	if err := so.SetGraphOptimizationLevel(ort.GraphOptimizationLevelDisableAll); err != nil {
		return nil, nil, fmt.Errorf("%w: session options: %w", ErrModel, err)
	}
	ins, outs, err := ort.GetInputOutputInfoWithOptions(modelPath, so)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: loading %s: %w", ErrModel, modelPath, err)
	}
	if inputs, err = specs(ins, "input"); err != nil {
		return nil, nil, err
	}
	if outputs, err = specs(outs, "output"); err != nil {
		return nil, nil, err
	}
	return inputs, outputs, nil
}

func specs(infos []ort.InputOutputInfo, kind string) ([]tensor.Spec, error) {
	out := make([]tensor.Spec, 0, len(infos))
	for _, info := range infos {
		if info.OrtValueType != ort.ONNXTypeTensor {
			return nil, fmt.Errorf("%w: %s %q is a %s; only tensors are supported", ErrModel, kind, info.Name, info.OrtValueType)
		}
		dt, ok := datatypeOf(info.DataType)
		if !ok {
			return nil, fmt.Errorf("%w: %s %q has element type %s, which is not supported (want one of %v)", ErrModel, kind, info.Name, info.DataType, tensor.Datatypes)
		}
		shape := make([]int64, len(info.Dimensions))
		for i, d := range info.Dimensions {
			if d <= 0 {
				d = -1
			}
			shape[i] = d
		}
		out = append(out, tensor.Spec{Name: info.Name, Datatype: dt, Shape: shape})
	}
	return out, nil
}
