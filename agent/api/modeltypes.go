package api

import "github.com/edgefleet/edgefleet/shared/model"

// The model types the server passes around are shared/model's, so that a
// *model.Model is a Predictor.
type (
	modelInput  = model.Input
	modelOutput = model.Output
)

// errModelInput marks input the model refused: the caller's fault (400).
var errModelInput = model.ErrInput

var _ Predictor = (*model.Model)(nil)
