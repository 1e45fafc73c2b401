package api

// The inference endpoint: reading the body into a pooled buffer within the
// size cap, decoding it (or taking it raw for the pre-processor), running
// the model, selecting the requested outputs and writing the response.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// maxPooled bounds the buffers kept for reuse: one that grew past it is
// left to the garbage collector, so one large request does not pin its
// memory.
const maxPooled = 1 << 20

// getBuffer returns a buffer for a request body and then its response.
func (s *Server) getBuffer() *[]byte {
	if b, ok := s.buffers.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 16<<10)
	return &b
}

func (s *Server) putBuffer(b *[]byte) {
	if cap(*b) > maxPooled {
		return
	}
	*b = (*b)[:0]
	s.buffers.Put(b)
}

// readBody reads the request body into *buf, within the size cap.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, buf *[]byte) ([]byte, error) {
	if r.ContentLength > s.maxBody {
		return nil, &http.MaxBytesError{Limit: s.maxBody}
	}
	b := (*buf)[:0]
	if n := int(r.ContentLength) + 1; n > cap(b) {
		b = make([]byte, 0, n) // +1: room to see EOF without growing
	}
	body := http.MaxBytesReader(w, r.Body, s.maxBody)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			*buf = b
			return b, nil
		}
		if err != nil {
			*buf = b
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: reading the body: %w", ErrRequest, err)
		}
	}
}

// isRaw reports whether the request carries raw bytes for the model's
// pre-processor rather than an inference request object.
func isRaw(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "application/octet-stream")
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("name"), r.PathValue("version")
	s.track(name, version, time.Now(),
		func(err error) int { return s.fail(w, r, "", err) },
		func(res *resolved, pred *Prediction) (int, error) {
			return s.serveInfer(w, r, name, version, res, pred)
		})
}

// track serves one inference request for model name (and version, if
// not ""), in either protocol, with what every one gets: the in-flight
// gauge, the model looked up before the request is read (an unknown one
// is refused at once, through refuse), the request metrics and the
// Prediction reported to the observer. serve reads, runs and answers the
// request, filling pred, and returns the HTTP status it answered (for
// gRPC, the status REST would have) and its error.
func (s *Server) track(name, version string, start time.Time, refuse func(error) int, serve func(*resolved, *Prediction) (int, error)) {
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	res, err := s.lookup(name, version)
	if err != nil {
		code := refuse(err)
		s.metrics.observe("", code, err, time.Since(start), 0)
		return
	}
	pred := Prediction{Model: res.name, Version: res.version, Provider: res.provider, Time: start}
	code, err := serve(res, &pred)
	pred.Code, pred.Err = code, err
	pred.Latency = time.Since(start)
	s.metrics.observe(res.name, code, err, pred.Latency, pred.InferLatency)
	s.report(pred)
}

// run is the part of an inference both protocols share once the request
// is decoded: it takes the model again (a new version may have become
// active since lookup; the one that answers is returned and recorded in
// pred), runs it, and keeps the input for the observer if asked to.
func (s *Server) run(ctx context.Context, name, version string, res *resolved, in model.Input, pred *Prediction) (*model.Output, *resolved, error) {
	p, release, err := s.acquire(name, version)
	if err != nil {
		return nil, res, err
	}
	if m := p.Manifest(); m.Version != res.version {
		res = describe(p)
		pred.Version, pred.Provider = res.version, res.provider
	}
	t0 := time.Now()
	out, err := p.Infer(ctx, in)
	pred.InferLatency = time.Since(t0)
	release()
	if err != nil {
		return nil, res, err
	}
	pred.Output = out
	if s.keepInput != nil && s.onPrediction != nil && s.keepInput(res.name, res.version) {
		// A raw body lives in a pooled buffer: the raw bytes are copied.
		pred.Input = &model.Input{Tensors: in.Tensors, Raw: bytes.Clone(in.Raw)}
	}
	return out, res, nil
}

// serveInfer reads, runs and answers an inference request for a model
// found by lookup, filling pred. It returns the status answered and the
// error, if any.
func (s *Server) serveInfer(w http.ResponseWriter, r *http.Request, name, version string, res *resolved, pred *Prediction) (int, error) {
	buf := s.getBuffer()
	defer s.putBuffer(buf)
	body, err := s.readBody(w, r, buf)
	if err != nil {
		return s.fail(w, r, res.bundle[0], err), err
	}
	var in model.Input
	var req *InferRequest
	if hl := r.Header.Get(BinaryHeader); hl != "" {
		n, perr := strconv.Atoi(hl)
		if perr != nil || n < 0 {
			err := fmt.Errorf("%w: %s %q is not a byte count", ErrRequest, BinaryHeader, hl)
			return s.fail(w, r, res.bundle[0], err), err
		}
		if req, err = DecodeBinaryRequest(body, n); err != nil {
			return s.fail(w, r, res.bundle[0], err), err
		}
		in.Tensors = req.Inputs
		pred.RequestID = req.ID
	} else if isRaw(r) {
		if len(body) == 0 {
			err := fmt.Errorf("%w: empty body: an application/octet-stream request carries the raw input", ErrRequest)
			return s.fail(w, r, res.bundle[0], err), err
		}
		pred.Raw = true
		in.Raw = body
	} else {
		req, err = DecodeInferRequest(body)
		if err != nil {
			if len(body) > 0 && body[0] != '{' && res.manifest.Runtime.Pre != nil {
				err = fmt.Errorf("%w (to send raw bytes to the pre-processor, use Content-Type: application/octet-stream)", err)
			}
			return s.fail(w, r, res.bundle[0], err), err
		}
		in.Tensors = req.Inputs
		pred.RequestID = req.ID
	}

	out, res, err := s.run(r.Context(), name, version, res, in, pred)
	if err != nil {
		return s.fail(w, r, res.bundle[0], err), err
	}

	outputs := out.Tensors
	var id string
	var binary []bool
	if req != nil {
		id = req.ID
		if len(req.Outputs) > 0 {
			if outputs, err = selectOutputs(res.bundle[0], out.Tensors, req.Outputs); err != nil {
				return s.fail(w, r, res.bundle[0], err), err
			}
		}
		binary = binaryOutputs(req, len(outputs))
	}
	// The request buffer is free now: encode the response into it.
	b, err := appendResponse((*buf)[:0], res.name, res.version, id, outputs, binary)
	if err != nil {
		err = fmt.Errorf("model %s: %w", res.bundle[0], err)
		return s.fail(w, r, res.bundle[0], err), err
	}
	h := w.Header()
	h["Content-Type"] = jsonType
	if binary != nil {
		h[BinaryHeader] = []string{strconv.Itoa(len(b))}
		h["Content-Type"] = octetType
		for i, t := range outputs {
			if binary[i] {
				b = tensor.AppendData(b, t.Data)
			}
		}
	}
	*buf = b // keep the array for the pool if it grew
	h["X-Content-Type-Options"] = nosniff
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h[BundleHeader] = res.bundle
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	return http.StatusOK, nil
}

// binaryOutputs says which outputs go as binary data: all of them when
// the request's parameters have "binary_data_output": true, else those
// requested with "binary_data": true. nil when none does.
func binaryOutputs(req *InferRequest, n int) []bool {
	if v, _ := req.Parameters["binary_data_output"].(bool); v {
		all := make([]bool, n)
		for i := range all {
			all[i] = true
		}
		return all
	}
	var bin []bool
	for i, o := range req.Outputs {
		if v, _ := o.Parameters["binary_data"].(bool); v {
			if bin == nil {
				bin = make([]bool, n)
			}
			bin[i] = true
		}
	}
	return bin
}

// selectOutputs picks the requested outputs, in the order requested.
func selectOutputs(id string, all []tensor.Tensor, want []RequestedOutput) ([]tensor.Tensor, error) {
	sel := make([]tensor.Tensor, 0, len(want))
	for _, o := range want {
		found := false
		for _, t := range all {
			if t.Name == o.Name {
				sel = append(sel, t)
				found = true
				break
			}
		}
		if !found {
			names := make([]string, len(all))
			for i, t := range all {
				names[i] = t.Name
			}
			return nil, fmt.Errorf("%w: outputs: model %s has no output %q (outputs: %s)", ErrRequest, id, o.Name, strings.Join(names, ", "))
		}
	}
	return sel, nil
}
