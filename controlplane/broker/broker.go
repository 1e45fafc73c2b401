// Package broker is fleetd's embedded MQTT broker (mochi-mqtt, MQTT 3.1.1
// and 5) with the edgefleet access rules built in: every client
// authenticates, a device is confined to its own subtree of the topic tree
// (shared/protocol) and its client id must be its device id, and fleetd
// itself publishes and subscribes in-process with full rights.
//
// Retained messages (desired states, reported states, statuses) and
// persistent device sessions survive a restart in a bbolt file under the
// data directory.
//
// MosquittoACL and MosquittoPasswd produce the equivalent configuration for
// an external mosquitto broker; see docs/protocol.md.
package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

const (
	// DefaultAddr is the plain TCP listener's address when Config.Addr is
	// empty and no TLS listener is configured.
	DefaultAddr = "127.0.0.1:1883"
	// DefaultSessionExpiry is how long a disconnected persistent session is
	// kept when Config.SessionExpiry is zero.
	DefaultSessionExpiry = 30 * 24 * time.Hour
	// DefaultMaxPacketSize bounds an incoming MQTT packet: the largest
	// payload plus room for the topic and MQTT 5 properties.
	DefaultMaxPacketSize = protocol.MaxPayloadSize + 16<<10
	// StoreFile is the bbolt file under Config.DataDir.
	StoreFile = "broker.db"
	// minServicePassword is the shortest service password accepted.
	minServicePassword = 16
)

// Refusal reasons, the keys of Broker.Refusals.
const (
	RefusedAuth          = "auth_failed"        // bad credentials or certificate
	RefusedClientID      = "client_id_mismatch" // client id is not the device id
	RefusedReservedID    = "reserved_id"        // the device id is reserved
	RefusedWill          = "will_denied"        // last will on a topic the client may not write
	RefusedPublish       = "publish_denied"     // publish outside the client's rights
	RefusedSubscribe     = "subscribe_denied"   // subscribe (or delivery) outside the client's rights
	RefusedIngest        = "ingest_failed"      // Config.Ingest returned an error
	RefusedServiceClient = "service_client_id"  // a service client id without its username prefix
)

// ErrClosed is returned by a Broker used after Close.
var ErrClosed = errors.New("broker: closed")

// ErrNotStarted is returned by Publish and Subscribe before Start.
var ErrNotStarted = errors.New("broker: not started")

// Authenticator checks device credentials; fleetd's device inventory
// implements it. AuthenticateDevice returns the device id the credentials
// belong to (normally the username itself). It is called on every CONNECT
// and must be safe for concurrent use.
type Authenticator interface {
	AuthenticateDevice(username, password string) (deviceID string, ok bool)
}

// CertAuthorizer may also be implemented by an Authenticator: a device
// that presents a client certificate verified against the client CA is
// identified by the certificate's CommonName, and AuthorizeCertDevice can
// still refuse it (an unknown or decommissioned device).
type CertAuthorizer interface {
	AuthorizeCertDevice(deviceID string) bool
}

// TLSConfig configures the TLS listener.
type TLSConfig struct {
	// Addr is the listen address, e.g. ":8883".
	Addr string
	// CertFile and KeyFile are the server's PEM certificate and key.
	CertFile, KeyFile string
	// ClientCAFile, when set, is a PEM bundle of CAs for client
	// certificates: a device presenting a certificate they verify is
	// authenticated as the certificate's CommonName, with no password.
	ClientCAFile string
	// RequireClientCert refuses TLS clients without a verified
	// certificate (otherwise they may use a password).
	RequireClientCert bool
	// Listener, if set, is a TCP listener already bound (Addr is then
	// ignored); the broker adds TLS to it and closes it.
	Listener net.Listener
}

// DeviceMessage is a publish from a device, handed to Config.Ingest.
type DeviceMessage struct {
	DeviceID string
	Kind     protocol.Kind
	Topic    string
	Payload  []byte
	Retained bool
	QoS      byte
}

// Config configures a Broker.
type Config struct {
	// Addr is the plain TCP listen address. Empty means DefaultAddr, or
	// no plain listener when TLS is set.
	Addr string
	// Listener, if set, is a plain TCP listener already bound (Addr is
	// then ignored): a caller that checks its addresses before writing
	// any state binds them first. The broker closes it.
	Listener net.Listener
	// TLS, if set, adds a TLS listener.
	TLS *TLSConfig
	// DataDir holds the store (StoreFile) of retained messages and
	// persistent sessions. Empty keeps everything in memory only.
	DataDir string
	// Auth checks device usernames and passwords. It may be nil only when
	// TLS client certificates are configured.
	Auth Authenticator
	// ServiceUsers are username -> password credentials with full rights,
	// for fleetd processes connecting over the network (the in-process
	// Publish and Subscribe need none). A service username must not be a
	// valid device id (start it with '_', e.g. "_fleetd"), its client id
	// must start with the username, and passwords are at least 16 bytes.
	ServiceUsers map[string]string
	// SessionExpiry is how long a disconnected persistent session (MQTT
	// 3.1.1 clean session false, or an MQTT 5 session expiry interval,
	// capped at this) is kept. Zero means DefaultSessionExpiry.
	SessionExpiry time.Duration
	// MaxPacketSize is the largest MQTT packet a client may send. Zero
	// means DefaultMaxPacketSize.
	MaxPacketSize uint32
	// Ingest, if set, is called for every publish a device is allowed to
	// make, before the broker acknowledges, retains or forwards it. If it
	// returns an error the message is refused: an MQTT 5 device gets a
	// PUBACK with reason 0x80, an MQTT 3.1.1 device is disconnected
	// without a PUBACK, so either resends it later. This is how fleetd
	// persists telemetry before the device deletes it from its outbox.
	// It runs on the device's connection goroutine (so concurrently for
	// different devices): keep it short. Payload is shared with the
	// broker: do not modify it, copy it to keep it.
	Ingest func(DeviceMessage) error
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
}

// Broker is the embedded MQTT broker.
type Broker struct {
	cfg      Config
	log      *slog.Logger
	srv      *mqtt.Server
	services map[string][32]byte // username -> sha256(password)
	tls      *tls.Config

	refusals protocol.Counters
	pending  sync.Map // *mqtt.Client -> struct{}: passed OnConnect, awaiting OnConnectAuthenticate
	attached sync.Map // *mqtt.Client -> chan struct{}: established, closed on OnDisconnect
	subID    atomic.Int64

	mu      sync.Mutex
	started bool
	closed  bool
	tcp     listeners.Listener
	tlsL    listeners.Listener
}

// New validates cfg, opens the store (if DataDir is set) and returns a
// Broker that is not listening yet: call Start or Run.
func New(cfg Config) (*Broker, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" && cfg.TLS == nil {
		cfg.Addr = DefaultAddr
	}
	if cfg.SessionExpiry == 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	if cfg.SessionExpiry < 0 || cfg.SessionExpiry/time.Second > 1<<32-1 {
		return nil, fmt.Errorf("broker: session expiry %s out of range", cfg.SessionExpiry)
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	b := &Broker{cfg: cfg, log: log, services: make(map[string][32]byte)}
	for user, pass := range cfg.ServiceUsers {
		if user == "" || protocol.ValidateDeviceID(user) == nil || user == mqtt.InlineClientId {
			return nil, fmt.Errorf("broker: service username %q must not be a valid device id (start it with '_', e.g. \"_fleetd\")", user)
		}
		if len(pass) < minServicePassword {
			return nil, fmt.Errorf("broker: service user %q: password shorter than %d bytes", user, minServicePassword)
		}
		b.services[user] = sha256.Sum256([]byte(pass))
	}
	if cfg.TLS != nil {
		tc, err := loadTLS(cfg.TLS)
		if err != nil {
			return nil, err
		}
		b.tls = tc
	}
	if cfg.Auth == nil && (cfg.TLS == nil || cfg.TLS.ClientCAFile == "") {
		return nil, errors.New("broker: no way for devices to authenticate: set Auth or TLS.ClientCAFile")
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumPacketSize = cfg.MaxPacketSize
	// No forced expiry of retained messages (mochi defaults to a day):
	// desired states and statuses stay until replaced.
	caps.MaximumMessageExpiryInterval = 0
	// mochi keeps an outbound queue per client sized by this (8192 slots,
	// about 64 KiB, by default). A device only ever receives its desired
	// state; 512 keeps a connected device at a few KiB of broker memory
	// and still absorbs bursts to a service subscriber.
	caps.MaximumClientWritesPending = 512
	b.srv = mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		Logger:       slog.New(mochiLogHandler{log.Handler()}).With("component", "mqtt"),
		// $SYS topics are published every minute, not every second.
		SysTopicResendInterval: 60,
	})
	if err := b.srv.AddHook(&accessHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: access hook: %w", err)
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			_ = b.srv.Close()
			return nil, fmt.Errorf("broker: data dir: %w", err)
		}
		path := filepath.Join(cfg.DataDir, StoreFile)
		err := b.srv.AddHook(newStoreHook(), &bolt.Options{
			Path:    path,
			Options: &bbolt.Options{Timeout: time.Second},
		})
		if err != nil {
			_ = b.srv.Close()
			return nil, fmt.Errorf("broker: open store %s: %w", path, err)
		}
	}
	return b, nil
}

func loadTLS(c *TLSConfig) (*tls.Config, error) {
	if c.Addr == "" {
		return nil, errors.New("broker: TLS.Addr is required")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("broker: TLS certificate: %w", err)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("broker: TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker: TLS client CA %s: no PEM certificates", c.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		if c.RequireClientCert {
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		}
	} else if c.RequireClientCert {
		return nil, errors.New("broker: TLS.RequireClientCert needs TLS.ClientCAFile")
	}
	return tc, nil
}

// Start binds the listeners, loads the store and starts serving. It
// returns once clients can connect.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.started {
		return errors.New("broker: already started")
	}
	if b.cfg.Listener != nil || b.cfg.Addr != "" {
		var l listeners.Listener = listeners.NewTCP(listeners.Config{ID: "tcp", Address: b.cfg.Addr})
		if b.cfg.Listener != nil {
			l = listeners.NewNet("tcp", b.cfg.Listener)
		}
		if err := b.srv.AddListener(l); err != nil {
			return fmt.Errorf("broker: listen on %s: %w", b.cfg.Addr, err)
		}
		b.tcp = l
	}
	if b.tls != nil {
		var l listeners.Listener = listeners.NewTCP(listeners.Config{ID: "tls", Address: b.cfg.TLS.Addr, TLSConfig: b.tls})
		if b.cfg.TLS.Listener != nil {
			l = listeners.NewNet("tls", tls.NewListener(b.cfg.TLS.Listener, b.tls))
		}
		if err := b.srv.AddListener(l); err != nil {
			return fmt.Errorf("broker: listen (TLS) on %s: %w", b.cfg.TLS.Addr, err)
		}
		b.tlsL = l
	}
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.started = true
	b.log.Info("mqtt broker listening", "addr", b.addrLocked(b.tcp), "tls_addr", b.addrLocked(b.tlsL), "data_dir", b.cfg.DataDir)
	return nil
}

// Run starts the broker, serves until ctx is done, then closes it.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.Start(); err != nil {
		_ = b.Close()
		return err
	}
	<-ctx.Done()
	return b.Close()
}

// Close disconnects every client (their last wills are published), stops
// the listeners and closes the store. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.srv.Close()
	b.log.Info("mqtt broker stopped")
	return err
}

func (b *Broker) addrLocked(l listeners.Listener) string {
	if l == nil {
		return ""
	}
	return l.Address()
}

// Addr returns the plain TCP listener's address ("" before Start or
// without one), with the real port when Config.Addr asked for port 0.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrLocked(b.tcp)
}

// TLSAddr returns the TLS listener's address ("" before Start or without
// one).
func (b *Broker) TLSAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrLocked(b.tlsL)
}

// Refusals returns the number of refusals so far by reason (the Refused*
// constants).
func (b *Broker) Refusals() map[string]uint64 { return b.refusals.Snapshot() }

// Clients is the number of MQTT connections open now (the in-process
// Publish and Subscribe are not one).
func (b *Broker) Clients() int64 { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) }

// Refused returns the number of refusals for one reason.
func (b *Broker) Refused(reason string) uint64 { return b.refusals.Get(reason) }

func (b *Broker) ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case !b.started:
		return ErrNotStarted
	}
	return nil
}

// Publish publishes as fleetd, with full rights, to every matching
// subscriber; retain stores it as the topic's retained message (an empty
// payload with retain clears it). qos caps the delivery QoS.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if err := b.ready(); err != nil {
		return err
	}
	if qos > 2 {
		return fmt.Errorf("broker: publish %s: qos %d", topic, qos)
	}
	if !mqtt.IsValidFilter(topic, true) {
		return fmt.Errorf("broker: publish: invalid topic %q", topic)
	}
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("broker: publish %s: %w", topic, err)
	}
	return nil
}

// PublishDesired encodes d and publishes it retained at QoS 1 on its
// device's desired topic.
func (b *Broker) PublishDesired(d *protocol.DesiredState) error {
	payload, err := protocol.Encode(d)
	if err != nil {
		return fmt.Errorf("broker: desired state: %w", err)
	}
	topic, err := protocol.Topic(d.DeviceID, protocol.KindDesired)
	if err != nil {
		return fmt.Errorf("broker: desired state: %w", err)
	}
	return b.Publish(topic, payload, true, protocol.KindDesired.QoS())
}

// Message is a message delivered to a Subscribe handler.
type Message struct {
	Topic    string
	Payload  []byte // the handler's own copy
	Retained bool   // a retained message delivered on subscribe
	QoS      byte
}

// Subscribe calls fn, in-process, for every message published on a topic
// matching filter, and at once for the retained messages it matches. fn
// runs on the publisher's goroutine (so concurrently for different
// devices) after the broker acknowledged the message to the publisher;
// keep it short and hand work off (use Config.Ingest to process device
// messages before they are acknowledged). The returned cancel removes the
// subscription.
func (b *Broker) Subscribe(filter string, fn func(Message)) (cancel func(), err error) {
	if err := b.ready(); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, errors.New("broker: subscribe: nil handler")
	}
	id := int(b.subID.Add(1))
	handler := func(_ *mqtt.Client, sub packets.Subscription, pk packets.Packet) {
		fn(Message{
			Topic:    pk.TopicName,
			Payload:  append([]byte(nil), pk.Payload...),
			Retained: pk.FixedHeader.Retain,
			QoS:      pk.FixedHeader.Qos,
		})
	}
	if err := b.srv.Subscribe(filter, id, handler); err != nil {
		return nil, fmt.Errorf("broker: subscribe %q: %w", filter, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() { _ = b.srv.Unsubscribe(filter, id) })
	}, nil
}

// Connected reports whether a client with this id is connected now.
func (b *Broker) Connected(clientID string) bool {
	cl, ok := b.srv.Clients.Get(clientID)
	return ok && !cl.Closed() && cl.Net.Conn != nil
}

// checkService reports whether user is a service user and, if so,
// whether pass is its password (compared in constant time).
func (b *Broker) checkService(user string, pass []byte) (isService, ok bool) {
	want, isService := b.services[user]
	if !isService {
		return false, false
	}
	got := sha256.Sum256(pass)
	return true, subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

func (b *Broker) isService(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return true
	}
	_, ok := b.services[string(cl.Properties.Username)]
	return ok
}

// mayWrite is the publish rule: services anywhere, a device only to the
// device kinds of its own subtree.
func (b *Broker) mayWrite(cl *mqtt.Client, topic string) bool {
	if b.isService(cl) {
		return true
	}
	return b.mayWriteDevice(cl.ID, topic)
}

// mayRead is the subscribe (and delivery) rule: services anything, a
// device only its own desired topic, exactly.
func (b *Broker) mayRead(cl *mqtt.Client, filter string) bool {
	if b.isService(cl) {
		return true
	}
	want, err := protocol.Topic(cl.ID, protocol.KindDesired)
	return err == nil && filter == want
}

func (b *Broker) refuse(reason string, cl *mqtt.Client, msg string, attrs ...any) {
	b.refusals.Inc(reason)
	attrs = append([]any{"reason", reason, "client", cl.ID, "remote", cl.Net.Remote, "username", string(cl.Properties.Username)}, attrs...)
	b.log.Warn(msg, attrs...)
}

// mochiLogHandler passes mochi's logs on without the packets it attaches
// to some of them ("pk", "packet", "will"): those dumps hold device
// payloads, which do not belong in logs.
type mochiLogHandler struct{ h slog.Handler }

func (m mochiLogHandler) Enabled(ctx context.Context, l slog.Level) bool { return m.h.Enabled(ctx, l) }

func (m mochiLogHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "pk" && a.Key != "packet" && a.Key != "will" {
			out.AddAttrs(a)
		}
		return true
	})
	return m.h.Handle(ctx, out)
}

func (m mochiLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return mochiLogHandler{m.h.WithAttrs(as)}
}

func (m mochiLogHandler) WithGroup(name string) slog.Handler {
	return mochiLogHandler{m.h.WithGroup(name)}
}
