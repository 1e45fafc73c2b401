package api

// Writing answers: small JSON bodies, the protocol's error object, and the
// HTTP status each error maps to (logged by its gravity).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/edgefleet/edgefleet/shared/model"
)

// Header values shared by every response; never modified.
var (
	jsonType  = []string{"application/json"}
	octetType = []string{"application/octet-stream"}
	nosniff   = []string{"nosniff"}
)

// writeJSON writes a small JSON body built by the caller.
func writeJSON(w http.ResponseWriter, code int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonType
	h["X-Content-Type-Options"] = nosniff
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(code)
	w.Write(body)
}

// writeError writes the protocol's error object {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) {
	b := make([]byte, 0, len(msg)+16)
	b = append(b, `{"error":`...)
	b = appendString(b, msg)
	b = append(b, "}\n"...)
	writeJSON(w, code, b)
}

// fail answers err with its status code and a message, logs it and
// returns the code. bundleID names the model involved, if any.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, bundleID string, err error) int {
	code, msg := s.refusal(r.URL.Path, bundleID, err)
	if code == statusClientClosed {
		return code
	}
	if bundleID != "" {
		w.Header()[BundleHeader] = []string{bundleID}
	}
	writeError(w, code, msg)
	return code
}

// refusal is how the API answers err, in either protocol: its HTTP
// status and the message the client gets. It logs err by its gravity;
// path is the URL path or gRPC method, bundleID names the model involved
// (if any).
func (s *Server) refusal(path, bundleID string, err error) (int, string) {
	code := statusOf(err)
	msg := err.Error()
	switch code {
	case http.StatusInternalServerError:
		s.log.Error("inference failed", "model", bundleID, "path", path, "err", err)
		// Runtime internals stay in the log.
		msg = "internal error"
		if bundleID != "" {
			msg = "model " + bundleID + ": inference failed (the agent's log has the details)"
		}
	case statusClientClosed:
		s.log.Debug("client went away", "model", bundleID, "path", path, "err", err)
	case http.StatusRequestEntityTooLarge:
		msg = fmt.Sprintf("request body too large: the limit is %d bytes (api.maxBodyBytes)", s.maxBody)
		s.log.Debug("request refused", "code", code, "model", bundleID, "err", err)
	default:
		s.log.Debug("request refused", "code", code, "model", bundleID, "err", err)
	}
	return code, msg
}

// statusClientClosed is recorded (never sent) when the client went away
// before the answer: nginx's 499.
const statusClientClosed = 499

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrRequest), errors.Is(err, model.ErrInput):
		return http.StatusBadRequest
	case errors.Is(err, ErrModelNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrNotReady), errors.Is(err, model.ErrClosed):
		// A closed model is one a Backend retired too early: the next
		// request finds its successor.
		return http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled):
		return statusClientClosed
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
