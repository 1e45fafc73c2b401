package api

// The Server: its Options, New, Serve, Shutdown and the routes. The models
// it serves come from a Backend (backend.go); the endpoints are in
// metadata.go and infer.go, the error answers in respond.go, and what it
// reports of each inference in prediction.go.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/edgefleet/edgefleet/shared/version"
)

// DefaultMaxBodyBytes caps a request body unless Options.MaxBodyBytes says
// otherwise.
const DefaultMaxBodyBytes = 8 << 20

// BundleHeader is the response header naming the bundle that answered an
// inference request, as "name@version".
const BundleHeader = "X-Edgefleet-Bundle"

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

	grpcMu      sync.Mutex
	grpcServers []*grpc.Server // those ServeGRPC started
	grpcClosed  bool           // Shutdown began: ServeGRPC starts no more
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
	s.srv = NewHTTPServer(s.mux, opts.Logger)
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

// NewHTTPServer is the http.Server the agent serves its local APIs
// with (inference here, admin in the agent): bounded header, body and
// idle times, 64 KiB of headers, and the server's own errors logged as
// warnings on log.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
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

// Shutdown stops accepting requests (REST and gRPC), waits for in-flight
// ones to finish (until ctx is done), then for the prediction observer to
// drain its queue. It closes the listeners (removing a unix socket ListenUnix
// created). Calling it again is harmless.
func (s *Server) Shutdown(ctx context.Context) error {
	gerr := s.stopGRPC(ctx)
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, net.ErrClosed) {
		// A listener Serve already closed because its ctx ended: nothing
		// to close twice.
		err = nil
	}
	err = errors.Join(gerr, err)
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
