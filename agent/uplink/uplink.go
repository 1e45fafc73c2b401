package uplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Errors returned by the uplink; test with errors.Is.
var (
	// ErrConfig: New was given an invalid Config or a nil dependency.
	ErrConfig = errors.New("uplink: invalid config")
	// ErrState: the state file in Config.StateDir cannot be read or is
	// corrupt. The uplink refuses to start rather than forget the last
	// accepted desired seq.
	ErrState = errors.New("uplink: bad state file")
	// ErrClosed: Run was called after Close.
	ErrClosed = errors.New("uplink: closed")
	// ErrRunning: Run was called while it is already running.
	ErrRunning = errors.New("uplink: already running")
)

// Defaults for the zero values of Config.
const (
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultPublishTimeout = 15 * time.Second
	DefaultMinBackoff     = time.Second
	DefaultMaxBackoff     = 30 * time.Second
	DefaultProbeInterval  = 500 * time.Millisecond
	DefaultBatchRecords   = 256
	DefaultBatchBytes     = 128 << 10
	DefaultReportDebounce = time.Second
	DefaultRetryMin       = 10 * time.Second
	DefaultRetryMax       = 10 * time.Minute
)

// Agent is what the uplink needs from the agent daemon.
type Agent interface {
	// Apply carries out a desired state the guard accepted: install
	// d.Bundle through the agent's verified install path (or return to
	// it, for ActionRollback) and start or stop d.Shadow. It reports each
	// phase it enters through progress, and returns nil once d is in
	// effect or an error saying why not (see WithReason), marked
	// Transient when trying again later may succeed.
	//
	// ctx ends when the uplink shuts down or a newer valid desired state
	// supersedes d; Apply then returns as soon as the install path
	// allows, leaving a consistent version active. Apply runs on the
	// uplink's worker goroutine, one at a time.
	Apply(ctx context.Context, d *protocol.DesiredState, progress ProgressFunc) error
	// Reported returns the agent's current state: AgentVersion (required),
	// Labels, Active, LastKnownGood, Shadow, Provider. The uplink fills in
	// V, DeviceID, Time, AppliedSeq and Buffer, and Install once it has
	// applied a desired state. It must be cheap and safe for concurrent
	// use; call Uplink.ReportChanged when its result changes.
	Reported() protocol.ReportedState
}

// ProgressFunc is how Apply reports that it entered a phase of the
// install (protocol.PhaseDownloading, ...), with byte progress while
// downloading (nil otherwise). It may be called from any goroutine and as
// often as the download loop likes: a new phase costs one outbox commit
// (an install.progress event), a repeated phase only updates the reported
// state, which is published debounced.
type ProgressFunc func(phase protocol.InstallPhase, p *protocol.Progress)

// TLSFiles names the PEM files of a TLS connection to the broker.
type TLSFiles struct {
	// CAFile verifies the broker's certificate; empty uses the system
	// roots.
	CAFile string
	// CertFile and KeyFile are the device's client certificate and key
	// (certificate authentication); both or neither.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the broker's certificate;
	// empty uses the broker URL's host.
	ServerName string
}

// Config configures an Uplink. Zero durations and sizes take the
// Default* values.
type Config struct {
	// DeviceID is the MQTT client id and the device's topic level
	// (protocol.ValidateDeviceID).
	DeviceID string
	// Brokers are tried in order on every connection attempt:
	// tcp://host:1883 or mqtt:// (plain), ssl://host:8883, tls:// or
	// mqtts:// (TLS), ws:// or wss:// (websocket).
	Brokers []string
	// Username and Password authenticate the device (the caller reads the
	// password from its file). Both empty with a client certificate.
	Username, Password string
	// TLS applies to ssl://, tls://, mqtts:// and wss:// brokers.
	TLS TLSFiles
	// StateDir holds StateFile (last accepted desired seq, session
	// counter). Required; created 0700 if missing.
	StateDir string

	// KeepAlive is the MQTT keepalive.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt (dial, TLS, CONNACK).
	ConnectTimeout time.Duration
	// PublishTimeout bounds the wait for a PUBACK (and a SUBACK).
	PublishTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential, jittered wait
	// between connection attempts and between retries of a failed publish.
	MinBackoff, MaxBackoff time.Duration
	// ProbeInterval is how often, while waiting out a backoff with no
	// broker accepting TCP connections, the uplink tries a plain TCP
	// connection to each; when one succeeds it connects at once (after a
	// random part of one interval), so the backoff delays a device that
	// is refused, not one whose network or broker has come back.
	ProbeInterval time.Duration
	// CleanSession asks the broker for a clean session on every connect.
	// The default (false) keeps a persistent session; nothing depends on
	// it, since the desired state is retained and everything the device
	// sends comes from the outbox.
	CleanSession bool

	// BatchRecords and BatchBytes bound one telemetry batch: record count
	// and estimated JSON size (the wire form, possibly zstd-compressed,
	// must also fit protocol.MaxPayloadSize).
	BatchRecords int
	BatchBytes   int
	// ReportDebounce is how long the uplink collects changes of the
	// reported state before publishing it once.
	ReportDebounce time.Duration
	// MaxSkew is protocol.Guard.MaxSkew: how far in the future a desired
	// state's issuedAt may be.
	MaxSkew time.Duration
	// RetryMin and RetryMax bound the exponential, jittered wait before
	// another attempt at a desired state whose Apply failed with a
	// Transient error.
	RetryMin, RetryMax time.Duration
	// Epoch is sent with every record id (protocol Event.Epoch and
	// TelemetryBatch.Epoch). The outbox never reissues ids, so empty is
	// right unless ids can start over.
	Epoch string
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.KeepAlive, DefaultKeepAlive)
	def(&c.ConnectTimeout, DefaultConnectTimeout)
	def(&c.PublishTimeout, DefaultPublishTimeout)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.ProbeInterval, DefaultProbeInterval)
	def(&c.ReportDebounce, DefaultReportDebounce)
	def(&c.RetryMin, DefaultRetryMin)
	def(&c.RetryMax, DefaultRetryMax)
	if c.BatchRecords == 0 {
		c.BatchRecords = DefaultBatchRecords
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = DefaultBatchBytes
	}
}

// tlsSchemes maps the broker URL schemes paho dials to whether they use TLS.
var tlsSchemes = map[string]bool{"tcp": false, "mqtt": false, "ws": false, "ssl": true, "tls": true, "mqtts": true, "wss": true}

// check validates c (after setDefaults) and returns the TLS config, if any
// broker needs one.
func (c *Config) check() (*tls.Config, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if err := protocol.ValidateDeviceID(c.DeviceID); err != nil {
		return nil, bad("DeviceID: %v", err)
	}
	if len(c.Brokers) == 0 {
		return nil, bad("Brokers: at least one broker URL is required")
	}
	useTLS := false
	for i, b := range c.Brokers {
		u, err := url.Parse(b)
		if err != nil {
			return nil, bad("Brokers[%d]: %v", i, err)
		}
		isTLS, ok := tlsSchemes[u.Scheme]
		switch {
		case !ok:
			return nil, bad("Brokers[%d]: %q: scheme must be tcp, mqtt, ssl, tls, mqtts, ws or wss", i, b)
		case u.Host == "":
			return nil, bad("Brokers[%d]: %q has no host", i, b)
		case u.User != nil:
			return nil, bad("Brokers[%d]: credentials belong in Username and Password, not in the URL", i)
		}
		useTLS = useTLS || isTLS
	}
	if c.StateDir == "" {
		return nil, bad("StateDir is required (it keeps the last accepted desired seq)")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"KeepAlive", c.KeepAlive}, {"ConnectTimeout", c.ConnectTimeout}, {"PublishTimeout", c.PublishTimeout},
		{"MinBackoff", c.MinBackoff}, {"MaxBackoff", c.MaxBackoff}, {"ProbeInterval", c.ProbeInterval}, {"ReportDebounce", c.ReportDebounce},
		{"RetryMin", c.RetryMin}, {"RetryMax", c.RetryMax}} {
		if d.v < 0 {
			return nil, bad("%s %s is negative", d.name, d.v)
		}
	}
	if c.KeepAlive < time.Second {
		return nil, bad("KeepAlive %s is below the MQTT resolution of one second", c.KeepAlive)
	}
	if c.RetryMax < c.RetryMin {
		return nil, bad("RetryMax %s is below RetryMin %s", c.RetryMax, c.RetryMin)
	}
	if c.MaxBackoff < c.MinBackoff {
		return nil, bad("MaxBackoff %s is below MinBackoff %s", c.MaxBackoff, c.MinBackoff)
	}
	if c.BatchRecords < 0 || c.BatchRecords > protocol.MaxRecords {
		return nil, bad("BatchRecords %d: must be 1 to %d", c.BatchRecords, protocol.MaxRecords)
	}
	if c.BatchBytes < 0 || c.BatchBytes > protocol.MaxDecodedSize {
		return nil, bad("BatchBytes %d: must be 1 to %d", c.BatchBytes, protocol.MaxDecodedSize)
	}
	if c.Epoch != "" {
		probe := protocol.TelemetryBatch{V: protocol.Version, DeviceID: c.DeviceID, Epoch: c.Epoch,
			Records: []protocol.Record{{ID: 1, Kind: "x", Time: time.Unix(1, 0), Payload: []byte("1")}}}
		if err := probe.Validate(); err != nil {
			return nil, bad("Epoch: %v", err)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return nil, bad("TLS: CertFile and KeyFile go together")
	}
	if !useTLS {
		if c.TLS != (TLSFiles{}) {
			return nil, bad("TLS files are set but no broker URL uses TLS (ssl://, tls://, mqtts://, wss://)")
		}
		return nil, nil
	}
	return c.TLS.load()
}

func (f TLSFiles) load() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: TLS CA: %w", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: TLS CA %s: no PEM certificate in it", ErrConfig, f.CAFile)
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: TLS client certificate %s / key %s: %w", ErrConfig, f.CertFile, f.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// topics are the device's topics.
type topics struct {
	desired, reported, events, telemetry, status string
}

func deviceTopics(id string) (topics, error) {
	var t topics
	for _, k := range []struct {
		dst  *string
		kind protocol.Kind
	}{{&t.desired, protocol.KindDesired}, {&t.reported, protocol.KindReported}, {&t.events, protocol.KindEvents},
		{&t.telemetry, protocol.KindTelemetry}, {&t.status, protocol.KindStatus}} {
		s, err := protocol.Topic(id, k.kind)
		if err != nil {
			return topics{}, err
		}
		*k.dst = s
	}
	return t, nil
}

// Stats are the uplink's counters since New.
type Stats struct {
	// Connected says whether a connection is up now, Session is its
	// Status.Session (the last one's while disconnected).
	Connected bool
	Session   uint64
	// Connects, ConnectFailures and ConnectionsLost count connections
	// made, attempts that failed and connections that dropped.
	Connects, ConnectFailures, ConnectionsLost uint64
	// ProbesRefused counts the TCP probes, made while waiting to
	// reconnect, that no broker accepted (the network or the broker is
	// down; see Config.ProbeInterval).
	ProbesRefused uint64
	// Batches and Events count telemetry batches and events the broker
	// acknowledged; Records counts the outbox records they carried (all of
	// them acked in the outbox).
	Batches, Events, Records uint64
	// PublishFailures counts publishes of outbox records that failed
	// (no PUBACK in time, connection lost): they are sent again.
	PublishFailures uint64
	// Unsendable counts outbox records dropped because no valid message
	// can carry them (bad kind or payload, too large), each logged and
	// reported with a buffer.dropped event.
	Unsendable uint64
	// ReportedPublished counts reported states the broker acknowledged.
	ReportedPublished uint64
	// AcceptedSeq is the last desired seq the guard accepted.
	AcceptedSeq uint64
	// Applied and ApplyFailed count Apply results (a failure retried
	// later counts in Retries, not ApplyFailed); Duplicates counts
	// redeliveries of the accepted desired state (ignored); Superseded
	// counts desired states replaced by a newer one before they ran.
	Applied, ApplyFailed, Retries, Duplicates, Superseded uint64
	// Refused counts refused desired states by protocol reason
	// (replay, expired, malformed, ...).
	Refused map[string]uint64
}

// counters are the atomic counters behind Stats.
type counters struct {
	connects, connectFailures, connectionsLost atomic.Uint64
	probesRefused                              atomic.Uint64
	batches, events, records                   atomic.Uint64
	publishFailures, unsendable                atomic.Uint64
	reportedPublished                          atomic.Uint64
	applied, applyFailed, retries, duplicates  atomic.Uint64
	superseded                                 atomic.Uint64
	refused                                    protocol.Counters
}

// Uplink is the edge agent's MQTT connection to fleetd. See the package
// documentation for what it guarantees.
type Uplink struct {
	cfg    Config
	tls    *tls.Config
	agent  Agent
	ob     *outbox.Outbox
	log    *slog.Logger
	codec  *protocol.Codec
	topics topics
	state  *stateStore

	probeAddrs []string // host:port of each broker, for waitRetry
	stats      counters

	mu        sync.Mutex
	cur       *conn         // the connection in use; nil while disconnected
	up        chan struct{} // closed while cur != nil; replaced when it goes
	session   uint64        // cur's (or the last) session
	install   *protocol.InstallStatus
	applying  applying // the Apply in progress, if any
	attempt   attempt  // attempts at the latest seq applied
	running   bool
	closed    bool
	runCancel context.CancelCauseFunc
	runDone   chan struct{}

	pending    latest        // desired states for the worker, latest wins
	retry      *retry        // the failed desired state to try again; the worker's own
	refusals   chan refusal  // refusals for the worker to report
	reportKick chan struct{} // cap 1: the reported state may have changed
	reportMu   sync.Mutex    // serializes reported-state publishes
	lastReport []byte        // last published reported state, Time zeroed
	closeOnce  sync.Once
}

// New checks cfg, opens the state in cfg.StateDir and returns an Uplink;
// Run connects. The outbox stays the caller's: close it after Run has
// returned. logger may be nil (discard).
func New(cfg Config, agent Agent, ob *outbox.Outbox, logger *slog.Logger) (*Uplink, error) {
	if agent == nil || ob == nil {
		return nil, fmt.Errorf("%w: agent and outbox are required", ErrConfig)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Brokers = append([]string(nil), cfg.Brokers...)
	cfg.setDefaults()
	tlsCfg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	tp, err := deviceTopics(cfg.DeviceID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	st, err := openState(cfg.StateDir, cfg.DeviceID)
	if err != nil {
		return nil, err
	}
	codec, err := protocol.NewCodec()
	if err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	u := &Uplink{
		cfg:        cfg,
		tls:        tlsCfg,
		agent:      agent,
		ob:         ob,
		log:        logger.With("device", cfg.DeviceID),
		codec:      codec,
		topics:     tp,
		state:      st,
		probeAddrs: probeAddrs(cfg.Brokers),
		up:         make(chan struct{}),
		session:    st.get().Session,
		pending:    latest{ready: make(chan struct{}, 1)},
		refusals:   make(chan refusal, refusalQueue),
		reportKick: make(chan struct{}, 1),
	}
	if _, err := u.buildReported(); err != nil {
		codec.Close()
		return nil, fmt.Errorf("%w: the agent's reported state: %w", ErrConfig, err)
	}
	return u, nil
}

// Run connects and keeps the uplink going until ctx ends or Close is
// called: it reconnects with backoff, applies desired states, publishes
// the reported state and drains the outbox. On the way out it publishes
// the offline status and disconnects cleanly. It returns nil after a
// shutdown, or an error if the outbox failed underneath it (e.g. closed
// before Run returned). Run may be called once.
func (u *Uplink) Run(ctx context.Context) error {
	u.mu.Lock()
	switch {
	case u.closed:
		u.mu.Unlock()
		return ErrClosed
	case u.running:
		u.mu.Unlock()
		return ErrRunning
	}
	ctx, cancel := context.WithCancelCause(ctx)
	u.running, u.runCancel, u.runDone = true, cancel, make(chan struct{})
	u.mu.Unlock()
	defer close(u.runDone)
	defer cancel(nil)

	var wg sync.WaitGroup
	fail := func(err error) {
		if err != nil {
			cancel(err)
		}
	}
	wg.Go(func() { u.work(ctx) })
	wg.Go(func() { fail(u.drain(ctx)) })
	wg.Go(func() { u.report(ctx) })
	u.connLoop(ctx)
	cancel(nil)
	wg.Wait()

	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// Close stops Run (with the same clean shutdown as ending its context),
// waits for it to return and releases the uplink. It is idempotent.
func (u *Uplink) Close() error {
	u.closeOnce.Do(func() {
		u.mu.Lock()
		u.closed = true
		cancel, done := u.runCancel, u.runDone
		u.mu.Unlock()
		if cancel != nil {
			cancel(ErrClosed)
			<-done
		}
		u.codec.Close()
	})
	return nil
}

// Connected reports whether the uplink has a connection to the broker
// (after its online status and subscription went through).
func (u *Uplink) Connected() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cur != nil
}

// Stats returns the uplink's counters.
func (u *Uplink) Stats() Stats {
	u.mu.Lock()
	connected, session := u.cur != nil, u.session
	u.mu.Unlock()
	s := &u.stats
	return Stats{
		Connected:         connected,
		Session:           session,
		Connects:          s.connects.Load(),
		ConnectFailures:   s.connectFailures.Load(),
		ProbesRefused:     s.probesRefused.Load(),
		ConnectionsLost:   s.connectionsLost.Load(),
		Batches:           s.batches.Load(),
		Events:            s.events.Load(),
		Records:           s.records.Load(),
		PublishFailures:   s.publishFailures.Load(),
		Unsendable:        s.unsendable.Load(),
		ReportedPublished: s.reportedPublished.Load(),
		AcceptedSeq:       u.state.get().AcceptedSeq,
		Applied:           s.applied.Load(),
		ApplyFailed:       s.applyFailed.Load(),
		Retries:           s.retries.Load(),
		Duplicates:        s.duplicates.Load(),
		Superseded:        s.superseded.Load(),
		Refused:           s.refused.Snapshot(),
	}
}
