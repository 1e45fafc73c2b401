package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/version"
)

// Sentinel errors a Backend returns (possibly wrapped).
var (
	// ErrModelNotFound: no model of that name is installed (HTTP 404).
	ErrModelNotFound = errors.New("model not found")
	// ErrNotReady: the model (or the server) cannot serve yet, e.g. while
	// it loads (HTTP 503).
	ErrNotReady = errors.New("not ready")
)

// Platform is the Open Inference Protocol platform name the server reports
// for every model: the spec's name for an ONNX model run by ONNX Runtime.
const Platform = "onnx_onnxv1"

// DefaultMaxBodyBytes caps a request body unless Options.MaxBodyBytes says
// otherwise.
const DefaultMaxBodyBytes = 8 << 20

// BundleHeader is the response header naming the bundle that answered an
// inference request, as "name@version".
const BundleHeader = "X-Edgefleet-Bundle"

// Predictor is one loaded model. *model.Model satisfies it.
type Predictor interface {
	// Infer runs the model; errors wrapping model.ErrInput are the
	// caller's fault. It must not keep in.Raw after it returns.
	Infer(ctx context.Context, in model.Input) (*model.Output, error)
	// Manifest describes the bundle: name, version, inputs, outputs.
	Manifest() *bundle.Manifest
	// Provider is the execution provider in use, e.g. "cpu".
	Provider() string
}

// A *model.Model is a Predictor.
var _ Predictor = (*model.Model)(nil)

// Backend gives the server the models it serves. The agent's slot manager
// implements it; it must be safe for concurrent use.
type Backend interface {
	// Model returns the active model of the bundle named name and a
	// release function the server calls once it no longer uses the
	// model (after Infer returns). A backend that swaps models must not
	// close one before every release of it. An unknown name gives an
	// error wrapping ErrModelNotFound, a model that is not loaded
	// ErrNotReady; release is nil whenever the error is not.
	Model(name string) (p Predictor, release func(), err error)
	// Models lists the active models, for metrics.
	Models() []ModelInfo
	// Ready reports whether the agent can serve predictions (the
	// Open Inference Protocol's server readiness).
	Ready() bool
}

// ModelInfo describes an active model.
type ModelInfo struct {
	Name     string
	Version  string
	Provider string
}

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
	// the body, inference, encoding and writing the response.
	Latency time.Duration
	// InferLatency is the time in Predictor.Infer alone.
	InferLatency time.Duration
	// Code is the HTTP status answered.
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

// BufferStats is the state of the agent's outbox, reported as metrics.
type BufferStats struct {
	Records int    // records waiting for the uplink
	Bytes   int64  // their size
	Dropped uint64 // records dropped since the outbox was created (oldest first, when full)
}

// Options configure a Server.
type Options struct {
	// Backend serves the models. Required.
	Backend Backend
	// Logger receives request errors and server events. Required.
	Logger *slog.Logger
	// MaxBodyBytes caps request bodies (413 above it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ServerName and ServerVersion are reported by GET /v2; defaults
	// "edge-agent" and the build's version.
	ServerName, ServerVersion string
	// Registry receives the server's metrics; nil creates one with the Go
	// runtime and process collectors too. MetricsHandler serves it.
	Registry *prometheus.Registry
	// BufferStats, if set, is called at every scrape to report the
	// outbox's depth and drops.
	BufferStats func() BufferStats
	// OnPrediction, if set, observes every inference request that reached
	// a model. It runs on one goroutine of its own, fed by a bounded
	// queue: the request path never waits for it, and predictions that
	// find the queue full are dropped and counted
	// (edge_agent_api_predictions_dropped_total).
	OnPrediction func(Prediction)
	// PredictionQueue is the queue's length; 0 means 1024.
	PredictionQueue int
	// KeepInput, if set, is asked after every successful inference of
	// model name@version whether its Prediction should carry the input
	// (Prediction.Input), which costs a copy of a raw body. It runs on
	// the request path and must be cheap (a sampling decision).
	KeepInput func(name, version string) bool
}

// Server serves the local inference API. Create it with New, serve
// listeners with Serve, stop it with Shutdown.
type Server struct {
	backend Backend
	log     *slog.Logger
	maxBody int64
	name    string
	version string
	mux     *http.ServeMux
	srv     *http.Server
	metrics *metrics
	buffers sync.Pool // *[]byte: request bodies, then responses

	onPrediction func(Prediction)
	keepInput    func(name, version string) bool
	predictions  chan Prediction
	stop         chan struct{}
	stopOnce     sync.Once
	workerDone   chan struct{}
}

// New returns a server for opts. It starts the goroutine that feeds
// OnPrediction, if set; Shutdown stops it.
func New(opts Options) (*Server, error) {
	if opts.Backend == nil {
		return nil, errors.New("api: Options.Backend is required")
	}
	if opts.Logger == nil {
		return nil, errors.New("api: Options.Logger is required")
	}
	if opts.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("api: Options.MaxBodyBytes must be >= 0, got %d", opts.MaxBodyBytes)
	}
	if opts.PredictionQueue < 0 {
		return nil, fmt.Errorf("api: Options.PredictionQueue must be >= 0, got %d", opts.PredictionQueue)
	}
	s := &Server{
		backend:      opts.Backend,
		log:          opts.Logger,
		maxBody:      opts.MaxBodyBytes,
		name:         opts.ServerName,
		version:      opts.ServerVersion,
		onPrediction: opts.OnPrediction,
		keepInput:    opts.KeepInput,
		stop:         make(chan struct{}),
		workerDone:   make(chan struct{}),
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.name == "" {
		s.name = "edge-agent"
	}
	if s.version == "" {
		s.version = version.Version
	}
	m, err := newMetrics(opts.Registry, opts.Backend, opts.BufferStats)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.routes()
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	if s.onPrediction != nil {
		q := opts.PredictionQueue
		if q == 0 {
			q = 1024
		}
		s.predictions = make(chan Prediction, q)
		go s.predictionWorker()
	} else {
		close(s.workerDone)
	}
	return s, nil
}

// Handler is the API's HTTP handler, for serving it another way (tests,
// an existing server).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves the API on ln until Shutdown (then it returns nil), until
// ctx is done (it stops accepting on ln and returns nil; Shutdown still
// drains what ln accepted), or until ln fails. It may be called for
// several listeners at once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("api: serving %s: %w", ln.Addr(), err)
}

// Shutdown stops accepting requests, waits for in-flight ones to finish
// (until ctx is done), then for the prediction observer to drain its
// queue. It closes the listeners (removing a unix socket ListenUnix
// created). Calling it again is harmless.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, net.ErrClosed) {
		// A listener Serve already closed because its ctx ended: nothing
		// to close twice.
		err = nil
	}
	s.stopOnce.Do(func() { close(s.stop) })
	select {
	case <-s.workerDone:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
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

func (s *Server) routes() {
	mux := http.NewServeMux()
	route := func(method, pattern string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+pattern, h)
		// Any other method: 405 with a JSON body (the mux's own 405 is
		// plain text).
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", method)
			if method == http.MethodGet {
				w.Header().Set("Allow", "GET, HEAD")
			}
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, method))
		})
	}
	route("GET", "/v2/health/live", s.live)
	route("GET", "/v2/health/ready", s.ready)
	route("GET", "/v2", s.serverMetadata)
	route("GET", "/v2/{$}", s.serverMetadata)
	route("GET", "/v2/models/{name}", s.modelMetadata)
	route("GET", "/v2/models/{name}/versions/{version}", s.modelMetadata)
	route("GET", "/v2/models/{name}/ready", s.modelReady)
	route("GET", "/v2/models/{name}/versions/{version}/ready", s.modelReady)
	route("POST", "/v2/models/{name}/infer", s.infer)
	route("POST", "/v2/models/{name}/versions/{version}/infer", s.infer)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s (see the Open Inference Protocol v2 REST API)", r.Method, r.URL.Path))
	})
	s.mux = mux
}

// Header values shared by every response; never modified.
var (
	jsonType = []string{"application/json"}
	nosniff  = []string{"nosniff"}
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
	b = append(b, `,"extensions":["edgefleet_raw_input"]}`+"\n"...)
	writeJSON(w, http.StatusOK, b)
}

// resolved is a model the server found for a request.
type resolved struct {
	name, version, provider string
	bundle                  []string // BundleHeader value
	manifest                *bundle.Manifest
}

// lookup finds the model for name (and version, if not "") and releases
// it at once: enough to answer metadata and to refuse requests early.
func (s *Server) lookup(name, version string) (*resolved, error) {
	p, release, err := s.acquire(name, version)
	if err != nil {
		return nil, err
	}
	defer release()
	return describe(p), nil
}

// acquire returns the model for name (and version, if not "").
func (s *Server) acquire(name, version string) (Predictor, func(), error) {
	p, release, err := s.backend.Model(name)
	if err != nil {
		return nil, nil, err
	}
	if version != "" {
		if v := p.Manifest().Version; v != version {
			release()
			return nil, nil, fmt.Errorf("%w: model %q has no version %q (serving %s)", ErrModelNotFound, name, version, v)
		}
	}
	return p, release, nil
}

func describe(p Predictor) *resolved {
	m := p.Manifest()
	return &resolved{
		name:     m.Name,
		version:  m.Version,
		provider: p.Provider(),
		bundle:   []string{m.Name + "@" + m.Version},
		manifest: m,
	}
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
	start := time.Now()
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	name, version := r.PathValue("name"), r.PathValue("version")

	// Refuse unknown models before reading the body.
	res, err := s.lookup(name, version)
	if err != nil {
		code := s.fail(w, r, "", err)
		s.metrics.observe("", code, err, time.Since(start), 0)
		return
	}
	pred := Prediction{Model: res.name, Version: res.version, Provider: res.provider, Time: start}
	code, err := s.serveInfer(w, r, name, version, res, &pred)
	pred.Code, pred.Err = code, err
	pred.Latency = time.Since(start)
	s.metrics.observe(res.name, code, err, pred.Latency, pred.InferLatency)
	s.report(pred)
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
	if isRaw(r) {
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

	p, release, err := s.acquire(name, version)
	if err != nil {
		return s.fail(w, r, res.bundle[0], err), err
	}
	if m := p.Manifest(); m.Version != res.version {
		// A new version became active since lookup: report the one that
		// answers.
		res = describe(p)
		pred.Version, pred.Provider = res.version, res.provider
	}
	t0 := time.Now()
	out, err := p.Infer(r.Context(), in)
	pred.InferLatency = time.Since(t0)
	release()
	if err != nil {
		return s.fail(w, r, res.bundle[0], err), err
	}
	pred.Output = out
	if s.keepInput != nil && s.onPrediction != nil && s.keepInput(res.name, res.version) {
		// The body lives in a pooled buffer: the raw bytes are copied.
		pred.Input = &model.Input{Tensors: in.Tensors, Raw: bytes.Clone(in.Raw)}
	}

	outputs := out.Tensors
	var id string
	if req != nil {
		id = req.ID
		if len(req.Outputs) > 0 {
			if outputs, err = selectOutputs(res.bundle[0], out.Tensors, req.Outputs); err != nil {
				return s.fail(w, r, res.bundle[0], err), err
			}
		}
	}
	// The request buffer is free now: encode the response into it.
	b, err := appendResponse((*buf)[:0], res.name, res.version, id, outputs)
	if err != nil {
		err = fmt.Errorf("model %s: %w", res.bundle[0], err)
		return s.fail(w, r, res.bundle[0], err), err
	}
	*buf = b // keep the array for the pool if it grew
	h := w.Header()
	h["Content-Type"] = jsonType
	h["X-Content-Type-Options"] = nosniff
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h[BundleHeader] = res.bundle
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	return http.StatusOK, nil
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

// fail answers err with its status code and a message, logs it and
// returns the code. bundleID names the model involved, if any.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, bundleID string, err error) int {
	code := statusOf(err)
	msg := err.Error()
	switch code {
	case http.StatusInternalServerError:
		s.log.Error("inference failed", "model", bundleID, "path", r.URL.Path, "err", err)
		// Runtime internals stay in the log.
		msg = "internal error"
		if bundleID != "" {
			msg = "model " + bundleID + ": inference failed (the agent's log has the details)"
		}
	case statusClientClosed:
		s.log.Debug("client went away", "model", bundleID, "path", r.URL.Path, "err", err)
		return code
	case http.StatusRequestEntityTooLarge:
		msg = fmt.Sprintf("request body too large: the limit is %d bytes (api.maxBodyBytes)", s.maxBody)
		s.log.Debug("request refused", "code", code, "model", bundleID, "err", err)
	default:
		s.log.Debug("request refused", "code", code, "model", bundleID, "err", err)
	}
	if bundleID != "" {
		w.Header()[BundleHeader] = []string{bundleID}
	}
	writeError(w, code, msg)
	return code
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
