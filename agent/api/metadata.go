package api

// The health, readiness and metadata endpoints: server liveness and
// readiness, server metadata, and a model's metadata and readiness.

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Platform is the Open Inference Protocol platform name the server reports
// for every model: the spec's name for an ONNX model run by ONNX Runtime.
const Platform = "onnx_onnxv1"

func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, []byte(`{"live":true}`+"\n"))
}

// ready answers the server readiness probe. The spec's schema names the
// field "live" (carried over from KServe); the body has both "live" and
// "ready", with the readiness value, and the status is 503 when not ready.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.backend.Ready() {
		writeJSON(w, http.StatusOK, []byte(`{"live":true,"ready":true}`+"\n"))
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, []byte(`{"live":false,"ready":false}`+"\n"))
}

func (s *Server) serverMetadata(w http.ResponseWriter, r *http.Request) {
	b := []byte(`{"name":`)
	b = appendString(b, s.name)
	b = append(b, `,"version":`...)
	b = appendString(b, s.version)
	b = append(b, `,"extensions":[`...)
	for i, e := range Extensions {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, e)
	}
	b = append(b, "]}\n"...)
	writeJSON(w, http.StatusOK, b)
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	res, err := s.lookup(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		s.fail(w, r, "", err)
		return
	}
	m := res.manifest
	b := []byte(`{"name":`)
	b = appendString(b, res.name)
	b = append(b, `,"versions":[`...)
	b = appendString(b, res.version)
	b = append(b, `],"platform":"`+Platform+`","inputs":`...)
	b = appendSpecs(b, m.Runtime.Inputs)
	b = append(b, `,"outputs":`...)
	b = appendSpecs(b, m.Runtime.Outputs)
	b = append(b, `,"properties":{"bundle":`...)
	b = appendString(b, res.bundle[0])
	b = append(b, `,"execution_provider":`...)
	b = appendString(b, res.provider)
	if m.Runtime.Pre != nil {
		// The inputs above are the model's; with a pre-processor the
		// caller may send raw bytes instead.
		b = append(b, `,"raw_input":"application/octet-stream"`...)
	}
	b = append(b, "}}\n"...)
	w.Header()[BundleHeader] = res.bundle
	writeJSON(w, http.StatusOK, b)
}

func appendSpecs(b []byte, specs []tensor.Spec) []byte {
	b = append(b, '[')
	for i, sp := range specs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, sp.Name)
		b = append(b, `,"datatype":`...)
		b = appendString(b, string(sp.Datatype))
		b = append(b, `,"shape":[`...)
		for j, d := range sp.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, "]}"...)
	}
	return append(b, ']')
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	res, err := s.lookup(name, r.PathValue("version"))
	b := []byte(`{"name":`)
	b = appendString(b, name)
	switch {
	case err == nil:
		w.Header()[BundleHeader] = res.bundle
		writeJSON(w, http.StatusOK, append(b, `,"ready":true}`+"\n"...))
	case errors.Is(err, ErrNotReady):
		writeJSON(w, http.StatusServiceUnavailable, append(b, `,"ready":false}`+"\n"...))
	default:
		s.fail(w, r, "", err)
	}
}
