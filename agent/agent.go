package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/agent/slot"
	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/version"
)

// Files and directories of the agent under the data directory, besides
// the bundle store's (see agent/slot).
const (
	// OutboxFile is the bbolt outbox.
	OutboxFile = "outbox.db"
	// UplinkDir holds the uplink's state (last accepted desired seq).
	UplinkDir = "uplink"
	// UploadsDir holds bundles uploaded through the admin API while they
	// are installed; emptied at start.
	UploadsDir = "uploads"
)

// Defaults for the Options.
const (
	DefaultMetricsInterval = config.DefaultMetricsInterval
	DefaultShutdownTimeout = 20 * time.Second
	// DefaultDrainTimeout bounds the wait for requests still using a
	// replaced model before it is closed.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultSampleQueue is the length of the prediction sample queue.
	DefaultSampleQueue = 1024
)

// Sentinel errors, errors.Is-able. Install and rollback errors keep the
// slot, bundle, fetch and model sentinels they wrap.
var (
	// ErrNotOpen: the agent's store is not open (call Open or Run).
	ErrNotOpen = errors.New("agent: not open")
	// ErrClosed: the agent was closed or is shutting down.
	ErrClosed = errors.New("agent: closed")
	// ErrRunning: Run was called twice.
	ErrRunning = errors.New("agent: already running")
	// ErrNoTrust: no publisher key is configured or loadable, so every
	// install is refused (the agent still serves what it has).
	ErrNoTrust = errors.New("agent: no trusted publisher key")
)

// An Option adjusts an Agent beyond its configuration.
type Option func(*options)

type options struct {
	metricsInterval time.Duration
	shutdownTimeout time.Duration
	drainTimeout    time.Duration
	sampleQueue     int
	installHook     func(point string)
	models          *ModelCache
	uplinkTune      func(*uplink.Config)
	shadow          shadowOptions
	driftWindow     time.Duration
}

// WithMetricsInterval sets how often the metrics window is appended to the
// outbox, overriding the configuration's metrics.interval.
func WithMetricsInterval(d time.Duration) Option {
	return func(o *options) { o.metricsInterval = d }
}

// WithShutdownTimeout bounds the drain of in-flight API requests at
// shutdown (DefaultShutdownTimeout).
func WithShutdownTimeout(d time.Duration) Option {
	return func(o *options) { o.shutdownTimeout = d }
}

// WithSampleQueue sets the length of the prediction sample queue
// (DefaultSampleQueue).
func WithSampleQueue(n int) Option {
	return func(o *options) { o.sampleQueue = n }
}

// WithInstallHook is called at each of the slot store's crash points
// (slot.Point*) during an install. It exists for crash tests.
func WithInstallHook(h func(point string)) Option {
	return func(o *options) { o.installHook = h }
}

// WithUplinkConfig lets tune adjust the uplink's settings after the agent
// filled them in from its configuration: reconnect backoff, telemetry
// batch sizes, the reported-state debounce (see uplink.Config). It exists
// for in-process test fleets and simulators; tune must not change the
// device id, brokers, credentials or state directory.
func WithUplinkConfig(tune func(*uplink.Config)) Option {
	return func(o *options) { o.uplinkTune = tune }
}

// Agent is the edge agent daemon. Create it with New; Run serves, Open
// only opens its state (for the CLI). Its methods are safe for concurrent
// use.
type Agent struct {
	cfg   *config.Config
	log   *slog.Logger
	opts  options
	mopts model.Options

	mu          sync.Mutex // lifecycle fields below
	opened      bool
	running     bool
	closing     bool
	closed      bool
	closeErr    error
	releaseOnce sync.Once
	cancel      context.CancelFunc // Run's context
	runDone     chan struct{}      // closed when Run returns

	// Set by open, constant until close.
	store    *slot.Store
	ob       *outbox.Outbox
	trust    *bundle.TrustRoot
	trustErr error
	trustIDs []string

	// Set by Run.
	reg     *api.Registry
	srv     *api.Server
	up      *uplink.Uplink
	tel     *telemetry
	samples *sampler      // data samples for the feature store (sample.go)
	shadow  *shadowRunner // set by start
	drift   *driftWindows
	runCtx  context.Context
	started time.Time
	ready   atomic.Bool

	// sem admits one install or rollback at a time; pending is what the
	// activate callback of the one running prepared.
	sem      chan struct{}
	pending  *model.Model
	progress uplink.ProgressFunc

	modelMu  sync.Mutex
	serving  *model.Model // the model in the registry, nil if none
	degraded string       // why the active bundle is not served
}

// New returns an agent for cfg, which it checks (cfg.Validate). logger
// receives everything the agent and its parts log.
func New(cfg *config.Config, logger *slog.Logger, opts ...Option) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("agent: nil config")
	}
	if logger == nil {
		return nil, errors.New("agent: nil logger")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{
		cfg: cfg,
		log: logger,
		opts: options{
			metricsInterval: time.Duration(cfg.Metrics.Interval),
			shutdownTimeout: DefaultShutdownTimeout,
			drainTimeout:    DefaultDrainTimeout,
			sampleQueue:     DefaultSampleQueue,
			driftWindow:     time.Duration(cfg.Metrics.DriftWindow),
			// The configuration's shadow settings, unless an option
			// overrides them.
			shadow: shadowOptions{
				rate: cfg.Shadow.SampleRate, window: time.Duration(cfg.Shadow.Window), queue: cfg.Shadow.Queue,
				rateSet: true, windowSet: true, queueSet: true,
			},
		},
		sem: make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(&a.opts)
	}
	if a.opts.metricsInterval <= 0 || a.opts.shutdownTimeout <= 0 || a.opts.sampleQueue <= 0 {
		return nil, errors.New("agent: metrics interval, shutdown timeout and sample queue must be > 0")
	}
	if err := a.opts.shadow.resolve(); err != nil {
		return nil, err
	}
	if a.opts.driftWindow <= 0 {
		return nil, errors.New("agent: the drift window must be > 0")
	}
	a.mopts = model.Options{
		ORTLibrary:     cfg.Runtime.ORTLibrary,
		Providers:      cfg.Runtime.ExecutionProviders,
		IntraOpThreads: cfg.Runtime.IntraOpThreads,
		InterOpThreads: cfg.Runtime.InterOpThreads,
		WASM: processor.Config{
			CacheDir:    cfg.WASM.CacheDir,
			MemoryLimit: uint64(cfg.WASM.MemoryLimitMiB) << 20,
			Timeout:     time.Duration(cfg.WASM.Timeout),
		},
		Logger: logger,
	}
	return a, nil
}

// Open opens the agent's state without serving: the outbox and the bundle
// store under the data directory (another process holding them gives
// slot.ErrLocked or outbox.ErrLocked). Install, Rollback and Status then
// work; an install loads and smoke-tests the model and closes it again.
// Run opens by itself. Close releases what Open took.
func (a *Agent) Open() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.closing {
		return ErrClosed
	}
	if a.opened {
		return nil
	}
	return a.openLocked()
}

func (a *Agent) openLocked() error {
	dir := a.cfg.DataDir
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("agent: data directory: %w", err)
	}
	a.trust, a.trustIDs, a.trustErr = loadTrust(a.cfg.Trust.PublicKeys)
	if a.trustErr != nil {
		a.log.Warn("bundle installs are refused until a publisher key is configured", "err", a.trustErr)
	}
	minFree := int64(a.cfg.Install.MinFreeBytes)
	if minFree == 0 {
		minFree = -1 // the configuration's 0 is no margin; slot's 0 is its default
	}
	store, err := slot.Open(dir, slot.Options{
		Trust:        a.trust,
		Limits:       bundle.Limits{MaxBundleBytes: int64(a.cfg.Install.MaxBundleBytes)},
		Fetch:        fetch.Options{Logger: a.log},
		MinFreeBytes: minFree,
		AgentVersion: version.Version,
		Logger:       a.log,
		Hook:         a.hook,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	ob, err := outbox.Open(filepath.Join(dir, OutboxFile), outbox.Options{
		MaxBytes:       int64(a.cfg.Buffer.MaxBytes),
		MaxRecordBytes: int(a.cfg.Buffer.MaxRecordBytes),
		Logger:         a.log,
	})
	if err != nil {
		store.Close()
		return fmt.Errorf("agent: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, UploadsDir)); err != nil {
		a.log.Warn("removing leftover uploads", "err", err)
	}
	if c := a.cfg.WASM.CacheDir; c != "" {
		if err := os.MkdirAll(c, 0o750); err != nil {
			a.log.Warn("WASM compilation cache unavailable", "dir", c, "err", err)
			a.mopts.WASM.CacheDir = ""
		}
	}
	a.store, a.ob = store, ob
	a.opened = true
	return nil
}

// loadTrust reads the publisher keys. Entries with glob characters
// (/etc/edge-agent/trust/*.pub) name every file they match. Errors are
// ErrNoTrust.
func loadTrust(paths []string) (*bundle.TrustRoot, []string, error) {
	var files []string
	for _, p := range paths {
		if !strings.ContainsAny(p, "*?[") {
			files = append(files, p)
			continue
		}
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, nil, noTrust(fmt.Errorf("trust.publicKeys: %q: %w", p, err))
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		if len(paths) == 0 {
			return nil, nil, noTrust(config.ErrNoTrust)
		}
		return nil, nil, noTrust(fmt.Errorf("trust.publicKeys: no file matches %s: the agent refuses every bundle install until a publisher public key (PEM) is there", strings.Join(paths, ", ")))
	}
	t, err := bundle.LoadTrustRoot(files...)
	if err != nil {
		return nil, nil, noTrust(fmt.Errorf("trust.publicKeys: %w", err))
	}
	return t, t.KeyIDs(), nil
}

// trustError is why no publisher key is available: its message, and
// errors.Is(err, ErrNoTrust).
type trustError struct{ err error }

func noTrust(err error) error         { return &trustError{err} }
func (e *trustError) Error() string   { return e.err.Error() }
func (e *trustError) Unwrap() []error { return []error{ErrNoTrust, e.err} }

// Run serves until ctx ends (or Close is called), then shuts down in
// order and returns nil; it returns an error if the agent cannot start or
// a listener fails. See the package documentation.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	switch {
	case a.closed || a.closing:
		a.mu.Unlock()
		return ErrClosed
	case a.running:
		a.mu.Unlock()
		return ErrRunning
	}
	a.running = true
	// Every listen address first, before anything is written under the
	// data directory: an address in use fails the start with the data
	// directory as it was.
	lns, err := a.bind()
	if err != nil {
		a.running = false
		a.mu.Unlock()
		return err
	}
	if !a.opened {
		if err := a.openLocked(); err != nil {
			lns.close()
			a.running = false
			a.mu.Unlock()
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	a.runDone = make(chan struct{})
	a.runCtx = ctx
	a.mu.Unlock()
	defer close(a.runDone)
	defer cancel()

	s, err := a.start(ctx, lns)
	lns.close() // those start did not serve
	if err != nil {
		a.log.Error("agent failed to start", "err", err)
		cancel()
		a.shutdown(s)
		return err
	}
	var fatal error
	select {
	case <-ctx.Done():
	case fatal = <-s.errc:
		a.log.Error("agent stopping after a fatal error", "err", fatal)
	}
	cancel()
	err = a.shutdown(s)
	a.log.Info("edge agent stopped", "err", err)
	if fatal != nil {
		return fatal
	}
	return err
}

// A ListenError is a listen address of the configuration the agent could
// not listen on, which stops Run before it opens anything under the data
// directory: the address (or socket path), its configuration key, and why
// (errors.Is(err, syscall.EADDRINUSE), api.ErrSocketInUse, ...).
type ListenError struct {
	Addr, Key string
	Err       error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("cannot listen on %s (%s): %v", e.Addr, e.Key, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// listeners are the agent's bound listen addresses; nil where not
// configured, and set to nil when handed to a server.
type listeners struct {
	unix, tcp, metrics net.Listener
	// The gRPC form of the API: its unix socket, its TCP listener and
	// that listener's mutual TLS.
	grpcUnix, grpcTCP net.Listener
	grpcTLS           *tls.Config
}

// close closes the listeners nobody serves.
func (l *listeners) close() {
	for _, ln := range []*net.Listener{&l.unix, &l.tcp, &l.metrics, &l.grpcUnix, &l.grpcTCP} {
		if *ln != nil {
			(*ln).Close()
			*ln = nil
		}
	}
}

// take hands *ln over to a server.
func take(ln *net.Listener) net.Listener {
	l := *ln
	*ln = nil
	return l
}

// bind listens on every configured address: the TCP ones first, which
// touch no file (after loading the gRPC listener's certificates), then
// the unix sockets (which replace a stale socket left by an agent that is
// gone, see api.ListenUnix). The first failure closes
// what was bound and is a *ListenError.
func (a *Agent) bind() (*listeners, error) {
	l := &listeners{}
	fail := func(key, addr string, err error) (*listeners, error) {
		l.close()
		var le *api.ListenError
		if errors.As(err, &le) {
			addr, err = le.Addr, le.Err
		}
		return nil, &ListenError{Addr: addr, Key: key, Err: err}
	}
	var err error
	if g := a.cfg.API; g.GRPCListen != "" {
		// The certificates first: a bad file binds nothing.
		if l.grpcTLS, err = api.MutualTLS(g.GRPCTLS.Cert, g.GRPCTLS.Key, g.GRPCTLS.ClientCA); err != nil {
			return nil, fmt.Errorf("agent: api.grpcTLS: %w", err)
		}
	}
	if addr := a.cfg.API.TCP; addr != "" {
		if l.tcp, err = api.ListenTCP(addr); err != nil {
			return fail("api.tcp", addr, err)
		}
	}
	if addr := a.cfg.API.GRPCListen; addr != "" {
		// Any address: clients authenticate with certificates.
		if l.grpcTCP, err = api.ListenAnyTCP(addr); err != nil {
			return fail("api.grpcListen", addr, err)
		}
	}
	if addr := a.cfg.Metrics.Listen; addr != "" {
		if l.metrics, err = api.ListenTCP(addr); err != nil {
			return fail("metrics.listen", addr, err)
		}
	}
	if l.unix, err = api.ListenUnix(a.cfg.API.Socket, os.FileMode(a.cfg.API.SocketMode)); err != nil {
		return fail("api.socket", a.cfg.API.Socket, err)
	}
	if p := a.cfg.API.GRPCSocket; p != "" {
		if l.grpcUnix, err = api.ListenUnix(p, os.FileMode(a.cfg.API.SocketMode)); err != nil {
			return fail("api.grpcSocket", p, err)
		}
	}
	return l, nil
}

// session is what start set up, for shutdown.
type session struct {
	errc     chan error // fatal errors of the servers
	unixSrv  *http.Server
	metrics  *http.Server
	serving  sync.WaitGroup
	upDone   chan struct{}
	watchdog chan struct{} // closed to stop the watchdog
	wdDone   chan struct{}
}

// start serves on lns (taking the listeners it serves) and loads the
// active model.
func (a *Agent) start(ctx context.Context, lns *listeners) (*session, error) {
	s := &session{errc: make(chan error, 8)}
	reg := api.NewRegistry()
	tel := newTelemetry(a.ob, a.log, a.cfg.Buffer.PredictionSampleRate, a.opts.metricsInterval, a.opts.sampleQueue)
	smp := newSampler(a.ob, a.log, a.cfg.Labels, int(a.cfg.Buffer.MaxRecordBytes))
	dw := newDriftWindows(a.ob, a.log, a.opts.driftWindow)
	sh := newShadowRunner(a.ob, a.log, a.opts.shadow)
	srv, err := api.New(api.Options{
		Backend:      reg,
		Logger:       a.log,
		MaxBodyBytes: int64(a.cfg.API.MaxBodyBytes),
		BufferStats: func() api.BufferStats {
			st := a.ob.Stats()
			return api.BufferStats{Records: st.Records, Bytes: st.Bytes, Dropped: st.Dropped}
		},
		OnPrediction: func(p api.Prediction) { tel.observe(p); dw.observe(p); sh.observe(p); smp.observe(p) },
		KeepInput:    sh.keep,
	})
	if err != nil {
		return s, fmt.Errorf("agent: %w", err)
	}
	if err := errors.Join(tel.register(srv.Registry()), dw.register(srv.Registry()), smp.register(srv.Registry())); err != nil {
		srv.Shutdown(ctx)
		return s, fmt.Errorf("agent: %w", err)
	}
	// From here on installs put models into service (isServing).
	a.mu.Lock()
	a.reg, a.srv, a.tel, a.drift, a.started = reg, srv, tel, dw, time.Now()
	a.samples = smp
	a.mu.Unlock()
	tel.start()
	smp.start()
	a.startShadowRunner(sh)
	dw.start()

	// Serve first (Run bound the listeners before opening the state), so
	// that clients get 503 rather than no answer while the model loads;
	// READY waits for both.
	active, hasActive := a.store.Active()
	if hasActive {
		a.reg.Loading(active.Name)
	}
	ln := take(&lns.unix)
	s.unixSrv = a.adminServer()
	a.serve(s, "unix socket", func() error {
		if err := s.unixSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("agent: serving %s: %w", a.cfg.API.Socket, err)
		}
		return nil
	})
	if lns.tcp != nil {
		tln := take(&lns.tcp)
		a.serve(s, "tcp", func() error { return srv.Serve(ctx, tln) })
	}
	if lns.grpcUnix != nil {
		gln := take(&lns.grpcUnix)
		a.serve(s, "grpc unix socket", func() error { return srv.ServeGRPC(ctx, gln, nil) })
	}
	if lns.grpcTCP != nil {
		gln, cfg := take(&lns.grpcTCP), lns.grpcTLS
		a.serve(s, "grpc tcp (mutual TLS)", func() error { return srv.ServeGRPC(ctx, gln, cfg) })
	}
	if lns.metrics != nil {
		addr, mln := a.cfg.Metrics.Listen, take(&lns.metrics)
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.MetricsHandler())
		s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
		a.serve(s, "metrics", func() error {
			if err := s.metrics.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("agent: serving metrics on %s: %w", addr, err)
			}
			return nil
		})
	}

	a.loadActive(ctx)
	a.restoreShadow(ctx)
	a.event(protocol.Event{Type: protocol.EventAgentStarted, Bundle: a.activeID(), Data: mustJSON(map[string]any{"agentVersion": version.Version, "pid": os.Getpid()})})

	if a.cfg.Uplink.Broker != "" {
		up, err := a.newUplink()
		if err != nil {
			return s, err
		}
		a.up = up
		s.upDone = make(chan struct{})
		go func() {
			defer close(s.upDone)
			if err := up.Run(ctx); err != nil {
				a.log.Error("uplink stopped", "err", err)
			}
		}()
	}

	a.ready.Store(true)
	a.notify(notifyReady, a.statusLine())
	a.log.Info("edge agent ready", "version", version.Version, "socket", a.cfg.API.Socket, "active", a.activeString(), "uplink", a.cfg.Uplink.Broker)
	s.watchdog, s.wdDone = make(chan struct{}), make(chan struct{})
	go a.watchdog(s.watchdog, s.wdDone)
	return s, nil
}

func (a *Agent) serve(s *session, what string, f func() error) {
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := f(); err != nil {
			s.errc <- err
		}
	}()
	a.log.Debug("serving", "on", what)
}

func (a *Agent) newUplink() (*uplink.Uplink, error) {
	u := a.cfg.Uplink
	var password string
	if u.PasswordFile != "" {
		b, err := os.ReadFile(u.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("agent: uplink.passwordFile: %w", err)
		}
		password, _, _ = strings.Cut(string(b), "\n")
		password = strings.TrimRight(password, "\r")
	}
	ucfg := uplink.Config{
		DeviceID:  a.cfg.DeviceID,
		Brokers:   []string{u.Broker},
		Username:  u.Username,
		Password:  password,
		TLS:       uplink.TLSFiles{CAFile: u.TLS.CA, CertFile: u.TLS.Cert, KeyFile: u.TLS.Key},
		StateDir:  filepath.Join(a.cfg.DataDir, UplinkDir),
		KeepAlive: time.Duration(u.KeepAlive),
		RetryMin:  time.Duration(u.RetryMin),
		RetryMax:  time.Duration(u.RetryMax),
	}
	if a.opts.uplinkTune != nil {
		a.opts.uplinkTune(&ucfg)
	}
	up, err := uplink.New(ucfg, a, a.ob, a.log)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return up, nil
}

// shutdown stops what start set up, in order, and closes everything.
func (a *Agent) shutdown(s *session) error {
	a.ready.Store(false)
	a.notify(notifyStopping, "stopping")
	a.log.Info("edge agent stopping")
	if s.watchdog != nil {
		close(s.watchdog)
		<-s.wdDone
	}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.shutdownTimeout)
	defer cancel()
	// The unix server first: its requests report predictions to the API
	// server's observer, which the API server's Shutdown drains last.
	if s.unixSrv != nil {
		if err := s.unixSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("agent: draining the unix socket: %w", err))
		}
	}
	if a.srv != nil {
		if err := a.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("agent: %w", err))
		}
	}
	if s.metrics != nil {
		s.metrics.Close()
	}
	s.serving.Wait()
	if s.upDone != nil {
		// Run's context is done: the uplink publishes offline and
		// disconnects.
		<-s.upDone
		a.up.Close()
	}
	if a.tel != nil {
		a.tel.stop()
	}
	if a.samples != nil {
		a.samples.stop()
	}
	a.stopShadowRunner()
	if a.drift != nil {
		a.drift.stop() // the partial window
	}
	errs = append(errs, a.release())
	return errors.Join(errs...)
}

// Close stops Run, if it is running, and waits for its shutdown; otherwise
// it releases what Open took. It is idempotent.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.running && !a.closing && !a.closed {
		// Run shuts down and releases everything itself.
		cancel, done := a.cancel, a.runDone
		a.mu.Unlock()
		cancel()
		<-done
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.closeErr
	}
	a.mu.Unlock()
	return a.release()
}

// release closes the outbox, the model and the store, once; concurrent
// callers wait for the first.
func (a *Agent) release() error {
	a.releaseOnce.Do(func() {
		a.mu.Lock()
		a.closing = true
		a.mu.Unlock()
		err := a.releaseAll()
		a.mu.Lock()
		a.closed = true
		a.closeErr = err
		a.mu.Unlock()
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closeErr
}

func (a *Agent) releaseAll() error {
	// Wait for an install in progress (Run's context is done, so it is
	// being cancelled), then keep others out for good: the semaphore is
	// never released.
	a.sem <- struct{}{}
	var errs []error
	if a.ob != nil {
		if err := a.ob.Close(); err != nil {
			errs = append(errs, fmt.Errorf("agent: closing the outbox: %w", err))
		}
	}
	a.modelMu.Lock()
	m := a.serving
	a.serving = nil
	a.modelMu.Unlock()
	if m != nil {
		if a.reg != nil {
			a.reg.Remove(m.Manifest().Name)
		}
		if err := a.closeModel(m); err != nil {
			errs = append(errs, fmt.Errorf("agent: closing the model: %w", err))
		}
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("agent: closing the bundle store: %w", err))
		}
	}
	return errors.Join(errs...)
}

// isServing reports whether installs put models into service (Run) rather
// than only checking them (Open). The fields start sets are constant once
// it is true.
func (a *Agent) isServing() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reg != nil
}

// dialUnix dials the agent's own socket (the watchdog's probe).
func (a *Agent) dialUnix(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", a.cfg.API.Socket)
}
