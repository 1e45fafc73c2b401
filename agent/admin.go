package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/slot"
)

// Admin API paths, served on the unix socket only.
const (
	PathStatus   = "/agent/v1/status"
	PathInstall  = "/agent/v1/install"
	PathRollback = "/agent/v1/rollback"
)

// Multipart part names of an uploaded install.
const (
	PartBundle  = "bundle"
	PartSig     = "sig"
	PartOptions = "options"
)

// errTooLarge: an uploaded file is over its cap (install.maxBundleBytes,
// slot.MaxSigBytes).
var errTooLarge = errors.New("upload too large")

// maxAdminJSON caps a JSON admin request body.
const maxAdminJSON = 64 << 10

// InstallRequest is the JSON body of POST /agent/v1/install (or its
// "options" part, with Bundle and Sig empty, when the files are uploaded).
type InstallRequest struct {
	// Bundle is an http(s) URL, or a path the agent itself can read.
	Bundle string `json:"bundle"`
	// Sig is the signature's URL or path; "" means Bundle + ".sig".
	Sig string `json:"sig,omitempty"`
	InstallOptions
}

// ErrorBody is the admin API's error response.
type ErrorBody struct {
	Error string `json:"error"`
	// Reason is a Reason* label.
	Reason string `json:"reason,omitempty"`
}

// adminServer serves the unix socket: the admin API beside the inference
// API.
func (a *Agent) adminServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathStatus, a.handleStatus)
	mux.HandleFunc("POST "+PathInstall, a.handleInstall)
	mux.HandleFunc("POST "+PathRollback, a.handleRollback)
	mux.HandleFunc("/agent/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: fmt.Sprintf("no such admin endpoint: %s %s (GET %s, POST %s, POST %s)",
			r.Method, r.URL.Path, PathStatus, PathInstall, PathRollback)})
	})
	mux.Handle("/", a.srv.Handler())
	return api.NewHTTPServer(mux, a.log)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeErr(w http.ResponseWriter, code int, reason string, err error) {
	writeJSON(w, code, ErrorBody{Error: err.Error(), Reason: reason})
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	s, err := a.Status()
	if err != nil {
		writeErr(w, httpStatus(err), ReasonOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// changeContext is a request's context that also ends when the agent
// shuts down, so that an install does not hold up the shutdown; installs
// stop at a consistent point.
func (a *Agent) changeContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(a.runCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (a *Agent) handleRollback(w http.ResponseWriter, r *http.Request) {
	noDeadlines(w)
	ctx, cancel := a.changeContext(r)
	defer cancel()
	res, err := a.Rollback(ctx)
	a.answerChange(w, res, err)
}

func (a *Agent) answerChange(w http.ResponseWriter, res Result, err error) {
	if err != nil {
		writeErr(w, httpStatus(err), ReasonOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// noDeadlines lifts the server's read and write timeouts: an install
// downloads and smoke-tests for as long as it takes.
func noDeadlines(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
}

func (a *Agent) handleInstall(w http.ResponseWriter, r *http.Request) {
	noDeadlines(w)
	ctx, cancel := a.changeContext(r)
	defer cancel()
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var req InstallRequest
	if mt == "multipart/form-data" {
		dir, err := a.receive(r, params["boundary"], &req)
		if dir != "" {
			defer os.RemoveAll(dir)
		}
		if err != nil {
			code, reason := http.StatusBadRequest, ReasonBadRequest
			if errors.Is(err, errTooLarge) {
				code, reason = http.StatusRequestEntityTooLarge, ReasonTooLarge
			}
			writeErr(w, code, reason, err)
			return
		}
	} else {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminJSON))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeErr(w, http.StatusBadRequest, ReasonBadRequest, fmt.Errorf("install request: %w", err))
			return
		}
		if req.Bundle == "" {
			writeErr(w, http.StatusBadRequest, ReasonBadRequest, errors.New(`install request: "bundle" (a URL or a path) is required`))
			return
		}
	}
	res, err := a.Install(ctx, req.Bundle, req.Sig, req.InstallOptions)
	a.answerChange(w, res, err)
}

// receive stores an uploaded bundle and signature under the data
// directory's uploads/ and points req at them. It returns the directory
// to remove afterwards.
func (a *Agent) receive(r *http.Request, boundary string, req *InstallRequest) (string, error) {
	if boundary == "" {
		return "", errors.New("install upload: multipart/form-data without a boundary")
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	dir := filepath.Join(a.cfg.DataDir, UploadsDir, hex.EncodeToString(rnd[:]))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("install upload: %w", err)
	}
	mr := multipart.NewReader(r.Body, boundary)
	var haveSig bool
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return dir, fmt.Errorf("install upload: %w", err)
		}
		switch p.FormName() {
		case PartOptions:
			dec := json.NewDecoder(io.LimitReader(p, maxAdminJSON))
			dec.DisallowUnknownFields()
			var o InstallRequest
			if err := dec.Decode(&o); err != nil {
				return dir, fmt.Errorf("install upload: part %q: %w", PartOptions, err)
			}
			req.InstallOptions = o.InstallOptions
		case PartBundle:
			// The client's file name is not used: nothing it sends names
			// a path.
			path := filepath.Join(dir, "upload.bundle")
			if err := save(p, path, int64(a.cfg.Install.MaxBundleBytes)); err != nil {
				return dir, fmt.Errorf("install upload: part %q: %w", PartBundle, err)
			}
			req.Bundle = path
		case PartSig:
			path := filepath.Join(dir, "upload.sig")
			if err := save(p, path, slot.MaxSigBytes); err != nil {
				return dir, fmt.Errorf("install upload: part %q: %w", PartSig, err)
			}
			req.Sig, haveSig = path, true
		default:
			return dir, fmt.Errorf("install upload: unknown part %q (want %q, %q and optionally %q)", p.FormName(), PartBundle, PartSig, PartOptions)
		}
	}
	switch {
	case req.Bundle == "":
		return dir, fmt.Errorf("install upload: no %q part", PartBundle)
	case !haveSig:
		return dir, fmt.Errorf("install upload: no %q part: a bundle needs its detached signature", PartSig)
	}
	return dir, nil
}

// save copies at most limit bytes of r to a new file at path.
func save(r io.Reader, path string, limit int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
