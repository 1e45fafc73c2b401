package api

// What the server reports of each inference request (Prediction) and the
// bounded queue and goroutine that hand it to Options.OnPrediction without
// the request path waiting.

import (
	"time"

	"github.com/edgefleet/edgefleet/shared/model"
)

// Prediction is what the server reports of one inference request that
// reached a model, to Options.OnPrediction.
type Prediction struct {
	// Model and Version name the bundle that answered; Provider is its
	// execution provider.
	Model, Version, Provider string
	// RequestID is the request's "id" ("" if none or raw).
	RequestID string
	// Raw is true for an application/octet-stream request.
	Raw bool
	// Time is when the request arrived.
	Time time.Time
	// Latency is the server's time on the request: reading and decoding
	// the body, inference, encoding and writing the response (for gRPC,
	// from the decoded message to the response built).
	Latency time.Duration
	// InferLatency is the time in Predictor.Infer alone.
	InferLatency time.Duration
	// Code is the HTTP status answered; for a gRPC call, the status REST
	// would have answered (its gRPC code maps from it).
	Code int
	// Err is why the request failed, nil if it succeeded. Errors wrapping
	// ErrRequest or model.ErrInput were the caller's fault.
	Err error
	// Output is the model's output (all of it, Features included,
	// whatever the request selected), nil if Err is not. The server does
	// not touch it after handing it over.
	Output *model.Output
	// Input is the request's input, for observers that run it again
	// (the agent's shadow candidate): set only for requests that
	// succeeded and that Options.KeepInput asked for; the raw bytes are a
	// copy, the tensors the decoded request's. Nil otherwise.
	Input *model.Input
}

func (s *Server) predictionWorker() {
	defer close(s.workerDone)
	for {
		select {
		case p := <-s.predictions:
			s.observe(p)
		case <-s.stop:
			for {
				select {
				case p := <-s.predictions:
					s.observe(p)
				default:
					return
				}
			}
		}
	}
}

func (s *Server) observe(p Prediction) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("prediction observer panicked", "panic", r, "model", p.Model)
		}
	}()
	s.onPrediction(p)
}

// report hands p to the observer without waiting.
func (s *Server) report(p Prediction) {
	if s.predictions == nil {
		return
	}
	select {
	case s.predictions <- p:
	default:
		s.metrics.predictionsDropped.Inc()
	}
}
