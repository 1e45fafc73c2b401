// Package fleetd is the edgefleet control plane daemon as a library: the
// device inventory, the MQTT link to devices (an embedded broker, or an
// external MQTT 5 broker such as mosquitto), ingest of what devices
// report, the bundle registry (files or S3), desired states, and the HTTP
// API that fleetctl drives. The fleetd command (controlplane/cmd/fleetd)
// only parses flags and calls New and Run.
//
// # Lifecycle
//
// New validates the configuration, opens the stores under the data
// directory, generates the secrets a first start needs, binds the HTTP
// listener and (embedded mode) starts the MQTT broker, so that the bound
// addresses are known when it returns (HTTPAddr, MQTTAddr). Run serves the
// API, connects to an external broker and runs the background loops until
// its context ends, then closes the server. Close shuts down in order:
// HTTP, ingest (in-flight messages finish; new ones are refused, so
// devices send them again), the broker link, the stores.
//
// # Ingest
//
// Every status, reported state, event and telemetry batch a device
// publishes is decoded with shared/protocol's strict decoders and
// recorded before the device gets its acknowledgement: in embedded mode
// through the broker's Ingest hook (which runs before the PUBACK), with an
// external broker through a QoS 1 persistent session whose
// acknowledgements fleetd sends only after storing. Telemetry records and
// events are deduplicated by (device, epoch, record id) and stored in the
// telemetry record store; a malformed message is logged, counted and
// dropped. Sample records (bundles' data sampling) are staged in the
// sample lake instead, which writes them as Parquet to the registry's
// storage (samples.go, controlplane/lake). See docs/operations.md.
package fleetd

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/broker"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/lake"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("fleetd: closed")

// Server is a running control plane.
type Server struct {
	cfg Config // with defaults
	log *slog.Logger
	now func() time.Time

	inv   *inventory.Store
	recs  *telemetry.Store
	reg   registry.Registry
	fsReg *registry.FS // nil with S3
	// trust is registry.trustedKeys (nil: none).
	trust *bundle.TrustRoot
	codec *protocol.Codec

	broker *broker.Broker // embedded mode
	ext    *external      // external mode
	mosq   *mosquittoProvisioner

	tokens     []apiToken // the operator token first
	httpLn     net.Listener
	mqttLn     net.Listener // embedded broker, until it takes it over
	mqttTLSLn  net.Listener
	httpSrv    *http.Server
	publicURL  string // base URL of the HTTP server as devices reach it
	brokerURLs []string

	metrics *metrics
	changes changes // GET /api/v1/watch (watch.go)

	// Ingest gate: Close stops new ingests and waits for running ones.
	ingestMu     sync.RWMutex
	ingestClosed bool
	ingestWG     sync.WaitGroup
	cancelWills  func()

	touchMu sync.Mutex
	touched map[string]time.Time

	policyMu  sync.Mutex
	policies  map[string]int64 // samplingPolicy's answers, by bundle version
	touchCh   chan touchReq
	touchDone chan struct{}

	unpubMu     sync.Mutex
	unpublished map[string]bool

	ro    rollouts   // the rollout engine (rollouts.go)
	drift driftIndex // drift profiles and merged hours (drift_cache.go, drift_profile.go)

	lake      *lake.Lake // data samples to Parquet (samples.go)
	samplesAt string     // where the Parquet files go

	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	runMu   sync.Mutex
	running bool

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
}

// New builds a Server from cfg: see the package documentation.
func New(cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	s := &Server{cfg: c, log: c.Logger, now: c.Now, touched: map[string]time.Time{}, policies: map[string]int64{},
		unpublished: map[string]bool{}, closed: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.metrics = newMetrics(s)
	// On failure, release what was opened so far.
	defer func() {
		if err != nil {
			s.closeStores()
		}
	}()

	// Bind every address first: one in use fails here, before any state
	// (data directory, generated tokens) is written.
	if err := s.bind(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: dataDir: %w", ErrConfig, err)
	}
	uploads := filepath.Join(c.DataDir, UploadDir)
	if err := os.RemoveAll(uploads); err != nil {
		return nil, fmt.Errorf("fleetd: clearing %s: %w", uploads, err)
	}
	if err := os.MkdirAll(uploads, 0o700); err != nil {
		return nil, fmt.Errorf("fleetd: %w", err)
	}
	if err := s.loadSecrets(); err != nil {
		return nil, err
	}
	if s.codec, err = protocol.NewCodec(); err != nil {
		return nil, fmt.Errorf("fleetd: %w", err)
	}

	enrol := map[string]string{}
	for name, file := range c.Auth.EnrolTokenFiles {
		gen := file == filepath.Join(c.DataDir, EnrolTokenFile)
		tok, err := secret("auth.enrolTokenFiles."+name, file, gen, "efen_", "enrolment token "+name, c.Announce)
		if err != nil {
			return nil, err
		}
		enrol[name] = tok
	}
	s.inv, err = inventory.Open(filepath.Join(c.DataDir, InventoryFile), inventory.Options{
		EnrolTokens: enrol, AllowReenrol: c.Auth.AllowReenrol, Now: c.Now, Logger: s.log.With("component", "inventory"),
	})
	if err != nil {
		return nil, fmt.Errorf("fleetd: %w", err)
	}
	s.touchCh, s.touchDone = make(chan touchReq, 4096), make(chan struct{})
	go s.touchLoop()
	s.recs, err = telemetry.Open(filepath.Join(c.DataDir, RecordsFile), telemetry.Options{
		MaxPerDevice: c.Records.MaxPerDevice, MaxAge: time.Duration(c.Records.MaxAge), Now: c.Now,
		Logger: s.log.With("component", "records"),
	})
	if err != nil {
		return nil, fmt.Errorf("fleetd: %w", err)
	}

	s.publicURL = strings.TrimSuffix(c.HTTP.PublicURL, "/")
	if s.publicURL == "" {
		scheme := "http"
		if c.HTTP.CertFile != "" {
			scheme = "https"
		}
		s.publicURL = scheme + "://" + s.httpLn.Addr().String()
		if host, _, _ := net.SplitHostPort(c.HTTP.Listen); host == "" || net.ParseIP(host).IsUnspecified() {
			s.log.Warn("fleetd: http.listen is a wildcard address; set http.publicURL to the address devices download bundles from", "using", s.publicURL)
		}
	}
	if err := s.openRegistry(); err != nil {
		return nil, err
	}
	if err := s.openSamples(); err != nil {
		return nil, err
	}
	if err := s.openRollouts(); err != nil {
		return nil, err
	}

	if c.External() {
		if s.ext, err = newExternal(s); err != nil {
			return nil, err
		}
		if c.Broker.Mosquitto.PasswordFile != "" {
			s.mosq = &mosquittoProvisioner{passwordFile: c.Broker.Mosquitto.PasswordFile, pidFile: c.Broker.Mosquitto.PIDFile, log: s.log}
		}
		s.brokerURLs = []string{c.Broker.External}
	} else if err := s.startBroker(); err != nil {
		return nil, err
	}
	if len(c.Broker.PublicURLs) > 0 {
		s.brokerURLs = c.Broker.PublicURLs
	}

	routes, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.httpSrv = &http.Server{
		Handler:           routes,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("fleetd: ready", "data_dir", c.DataDir, "http", s.httpLn.Addr().String(), "public_url", s.publicURL,
		"broker", s.brokerMode(), "mqtt", strings.Join(s.brokerURLs, ","), "registry", c.Registry.Type)
	return s, nil
}

// bind listens on the HTTP address and the embedded broker's.
func (s *Server) bind() error {
	c := s.cfg
	listen := func(key, addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("fleetd: cannot listen on %s (%s): %w", addr, key, err)
		}
		return l, nil
	}
	var err error
	if s.httpLn, err = listen("http.listen", c.HTTP.Listen); err != nil {
		return err
	}
	if c.External() {
		return nil
	}
	if c.Broker.Listen != "off" {
		if s.mqttLn, err = listen("broker.listen", c.Broker.Listen); err != nil {
			return err
		}
	}
	if t := c.Broker.TLS; t != nil {
		if s.mqttTLSLn, err = listen("broker.tls.listen", t.Listen); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) loadSecrets() error {
	c := s.cfg
	gen := c.Auth.OperatorTokenFile == filepath.Join(c.DataDir, OperatorTokenFile)
	tok, err := secret("auth.operatorTokenFile", c.Auth.OperatorTokenFile, gen, "efop_", "operator token", c.Announce)
	if err != nil {
		return err
	}
	s.tokens = []apiToken{{sha256.Sum256([]byte(tok)), api.Whoami{Name: "operator", Role: api.RoleAdmin}}}
	seen := map[[sha256.Size]byte]string{s.tokens[0].hash: "the operator token"}
	for i, tc := range c.Auth.Tokens {
		key := fmt.Sprintf("auth.tokens[%d].file", i)
		tok, err := secret(key, tc.File, true, "efapi_", "API token "+tc.Name+" ("+tc.Role+")", c.Announce)
		if err != nil {
			return err
		}
		role, err := api.ParseRole(tc.Role)
		if err != nil {
			return fmt.Errorf("%w: auth.tokens[%d].role: %w", ErrConfig, i, err)
		}
		h := sha256.Sum256([]byte(tok))
		if other, ok := seen[h]; ok {
			return fmt.Errorf("%w: %s: %s holds the same token as %s", ErrConfig, key, tc.File, other)
		}
		seen[h] = "auth.tokens " + tc.Name
		s.tokens = append(s.tokens, apiToken{h, api.Whoami{Name: tc.Name, Role: role}})
	}
	return nil
}

func (s *Server) openRegistry() error {
	c := s.cfg
	var trust *bundle.TrustRoot
	switch {
	case len(c.Registry.TrustedKeys) > 0:
		var err error
		if trust, err = bundle.LoadTrustRoot(c.Registry.TrustedKeys...); err != nil {
			return fmt.Errorf("%w: registry.trustedKeys: %w", ErrConfig, err)
		}
		s.log.Info("fleetd: registry trusts publisher keys", "keys", strings.Join(trust.KeyIDs(), ","))
	case c.Registry.InsecureAcceptAnyKey:
		s.log.Warn("fleetd: INSECURE: registry.insecureAcceptAnyKey is set: pushed bundles are stored without checking who signed them; set registry.trustedKeys instead")
	default:
		s.log.Warn("fleetd: registry.trustedKeys is empty: every bundle push will be refused; set it to the publishers' public keys (e.g. --set registry.trustedKeys=keys/signing.pub)")
	}
	s.trust = trust
	log := s.log.With("component", "registry")
	switch c.Registry.Type {
	case "s3":
		s3 := c.Registry.S3
		access, secretKey, err := s3Credentials(s3.CredentialsFile)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		reg, err := registry.NewS3(ctx, registry.S3Config{
			Endpoint: s3.Endpoint, Secure: s3.Secure, AccessKey: access, SecretKey: secretKey,
			Region: s3.Region, Bucket: s3.Bucket, Prefix: s3.Prefix, CreateBucket: s3.CreateBucket,
			PublicEndpoint: s3.PublicEndpoint, PublicSecure: s3.PublicSecure,
			URLExpiry: time.Duration(c.Registry.URLExpiry), Trust: trust, Now: c.Now, Logger: log,
		})
		if err != nil {
			return fmt.Errorf("fleetd: registry.s3: %w", err)
		}
		s.reg = reg
	default:
		gen := c.Registry.URLKeyFile == filepath.Join(c.DataDir, URLKeyFile)
		key, err := secret("registry.urlKeyFile", c.Registry.URLKeyFile, gen, "", "registry URL key", nil)
		if err != nil {
			return err
		}
		fs, err := registry.NewFS(registry.FSConfig{
			Dir: c.Registry.Dir, BaseURL: s.publicURL + registryPath, URLKey: []byte(key),
			URLExpiry: time.Duration(c.Registry.URLExpiry), Trust: trust, Now: c.Now, Logger: log,
		})
		if err != nil {
			return fmt.Errorf("fleetd: registry: %w", err)
		}
		s.reg, s.fsReg = fs, fs
	}
	return nil
}

// registryPath is where the file registry's downloads are served.
const registryPath = "/registry"

// startBroker starts the embedded broker, with every device marked
// offline first: no connection survives a broker restart.
func (s *Server) startBroker() error {
	c := s.cfg
	if err := s.markAllOffline("fleetd-restart"); err != nil {
		return err
	}
	bc := broker.Config{
		DataDir: filepath.Join(c.DataDir, BrokerDir),
		Auth:    s.inv,
		Ingest:  s.ingestEmbedded,
		Logger:  s.log,
	}
	if s.mqttLn != nil {
		bc.Addr, bc.Listener = c.Broker.Listen, s.mqttLn
	}
	if t := c.Broker.TLS; t != nil {
		bc.TLS = &broker.TLSConfig{Addr: t.Listen, CertFile: t.CertFile, KeyFile: t.KeyFile,
			ClientCAFile: t.ClientCAFile, RequireClientCert: t.RequireClientCert, Listener: s.mqttTLSLn}
	}
	b, err := broker.New(bc)
	if err != nil {
		return fmt.Errorf("fleetd: broker: %w", err)
	}
	// The broker owns the listeners now, also when Start fails.
	s.mqttLn, s.mqttTLSLn = nil, nil
	if err := b.Start(); err != nil {
		b.Close()
		return fmt.Errorf("fleetd: broker: %w", err)
	}
	s.broker = b
	if a := b.Addr(); a != "" {
		s.brokerURLs = append(s.brokerURLs, "tcp://"+a)
	}
	if a := b.TLSAddr(); a != "" {
		s.brokerURLs = append(s.brokerURLs, "ssl://"+a)
	}
	// Last wills are published by the broker, not by a device, so the
	// Ingest hook does not see them.
	cancel, err := b.Subscribe(protocol.Filter(protocol.KindStatus), s.onStatusMessage)
	if err != nil {
		return fmt.Errorf("fleetd: broker: %w", err)
	}
	s.cancelWills = cancel
	return nil
}

// markAllOffline records every device the inventory has online as
// offline (its current session), for a broker that has no connections.
func (s *Server) markAllOffline(reason string) error {
	devs, err := s.inv.List(inventory.Selector{})
	if err != nil {
		return fmt.Errorf("fleetd: %w", err)
	}
	now := s.now()
	for _, d := range devs {
		if !d.Status.Online {
			continue
		}
		st := &protocol.Status{V: protocol.Version, DeviceID: d.ID, State: protocol.StateOffline,
			Session: d.Status.Session, AgentVersion: d.Status.AgentVersion, Reason: reason}
		if _, err := s.inv.SetStatus(d.ID, st, now); err != nil {
			return fmt.Errorf("fleetd: marking %q offline: %w", d.ID, err)
		}
	}
	return nil
}

func (s *Server) brokerMode() string {
	if s.ext != nil {
		return "external"
	}
	return "embedded"
}

// HTTPAddr is the address the HTTP server listens on.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// URL is the HTTP server's base URL as devices and fleetctl reach it.
func (s *Server) URL() string { return s.publicURL }

// MQTTAddr is the embedded broker's plain TCP address ("" with an
// external broker or without a plain listener).
func (s *Server) MQTTAddr() string {
	if s.broker == nil {
		return ""
	}
	return s.broker.Addr()
}

// BrokerURLs are the broker URLs handed to devices at enrolment.
func (s *Server) BrokerURLs() []string { return append([]string(nil), s.brokerURLs...) }

// Inventory returns the device inventory (for in-process tools and tests).
func (s *Server) Inventory() *inventory.Store { return s.inv }

// Records returns the device record store.
func (s *Server) Records() *telemetry.Store { return s.recs }

// Registry returns the bundle registry.
func (s *Server) Registry() registry.Registry { return s.reg }

// Ready waits until the broker link is up: at once with the embedded
// broker, with an external one once fleetd is connected and subscribed
// (call it after Run started).
func (s *Server) Ready(ctx context.Context) error {
	if s.ext == nil {
		return nil
	}
	return s.ext.awaitSubscribed(ctx)
}

// Run serves until ctx ends (then closes the server and returns nil) or
// the HTTP server fails.
func (s *Server) Run(ctx context.Context) error {
	s.runMu.Lock()
	select {
	case <-s.closed:
		s.runMu.Unlock()
		return ErrClosed
	default:
	}
	if s.running {
		s.runMu.Unlock()
		return errors.New("fleetd: Run called twice")
	}
	s.running = true
	bgCtx, cancel := context.WithCancel(context.Background())
	s.bgCancel = cancel
	s.runMu.Unlock()

	serveErr := make(chan error, 1)
	go func() {
		var err error
		if s.cfg.HTTP.CertFile != "" {
			err = s.httpSrv.ServeTLS(s.httpLn, s.cfg.HTTP.CertFile, s.cfg.HTTP.KeyFile)
		} else {
			err = s.httpSrv.Serve(s.httpLn)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		serveErr <- err
	}()
	if s.ext != nil {
		if err := s.ext.start(bgCtx); err != nil {
			s.Close()
			return err
		}
	}
	s.startLoops(bgCtx)
	s.bg.Go(func() { s.watchRollouts(bgCtx) })
	s.bg.Go(func() { s.runSamples(bgCtx) })

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		if err != nil {
			err = fmt.Errorf("fleetd: http: %w", err)
		}
	case <-s.closed:
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close shuts the server down in order (HTTP, ingest, background loops,
// broker link, stores). It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.runMu.Lock()
		close(s.closed)
		cancel := s.bgCancel
		s.runMu.Unlock()
		var errs []error

		ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		if s.httpSrv != nil {
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("http: %w", err))
			}
		}
		if s.httpLn != nil {
			s.httpLn.Close()
		}

		// Stop ingest: refuse new messages (they are not acknowledged,
		// so devices send them again), let running ones finish.
		s.ingestMu.Lock()
		s.ingestClosed = true
		s.ingestMu.Unlock()
		if s.cancelWills != nil {
			s.cancelWills()
		}
		if s.ext != nil {
			s.ext.stop(ctx)
		}
		s.ingestWG.Wait()

		if cancel != nil {
			cancel()
		}
		s.bg.Wait()

		if s.broker != nil {
			if err := s.broker.Close(); err != nil {
				errs = append(errs, fmt.Errorf("broker: %w", err))
			}
		}
		if err := s.closeStores(); err != nil {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			s.closeErr = fmt.Errorf("fleetd: close: %w", errors.Join(errs...))
		}
		s.log.Info("fleetd: stopped")
	})
	return s.closeErr
}

func (s *Server) closeStores() error {
	var errs []error
	if s.touchCh != nil {
		close(s.touchCh)
		<-s.touchDone
		s.touchCh = nil
	}
	for _, l := range []net.Listener{s.httpLn, s.mqttLn, s.mqttTLSLn} {
		if l != nil {
			l.Close()
		}
	}
	if s.broker != nil {
		s.broker.Close()
	}
	errs = append(errs, s.closeRollouts())
	errs = append(errs, s.closeSamples())
	if s.recs != nil {
		errs = append(errs, s.recs.Close())
	}
	if s.inv != nil {
		errs = append(errs, s.inv.Close())
	}
	if s.codec != nil {
		s.codec.Close()
	}
	return errors.Join(errs...)
}

// tlsConfigFor returns the TLS settings to reach an external broker.
func tlsConfigFor(u *url.URL, caFile string) (*tls.Config, error) {
	switch u.Scheme {
	case "ssl", "tls", "mqtts":
	default:
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if caFile != "" {
		pool, err := loadCertPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: broker.caFile: %w", ErrConfig, err)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
