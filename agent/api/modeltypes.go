package api

import (
	"errors"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// TEMPORARY until shared/model lands: local stand-ins with the agreed
// shapes of model.Input, model.Output and model.ErrInput (notes/api.md).
// Replaced by aliases of the real types.

type modelInput struct {
	Tensors []tensor.Tensor
	Raw     []byte
}

type modelOutput struct {
	Tensors  []tensor.Tensor
	Features []tensor.Tensor
}

var errModelInput = errors.New("invalid model input")
