// Package config reads the edge agent's YAML configuration
// (edge-agent --config FILE). Parsing is strict: an unknown key, a value
// of the wrong type or out of range stops the agent at start with the
// key's path and the file, line and column named, e.g.
//
//	config: /etc/edge-agent/config.yaml:12:13: buffer.maxBytes: must be > 0, got -1
//
// (shared/configfile reads the file; every problem is reported at once).
// Every setting has a working default (Default); a file only says what
// differs. Relative paths in a file are relative to the file's directory.
// testdata/full.yaml is a complete, commented example.
package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/shared/configfile"
)

// Config is the agent's configuration.
type Config struct {
	// DeviceID names the device to the control plane (MQTT client id and
	// topic segment): 1 to 128 of [A-Za-z0-9._-]. Default: the hostname.
	DeviceID string `yaml:"deviceID" json:"deviceID"`
	// Labels are matched by rollout selectors, e.g. site: berlin.
	Labels map[string]string `yaml:"labels" json:"labels"`
	// DataDir holds installed bundles, the outbox and caches.
	DataDir string `yaml:"dataDir" json:"dataDir"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"logLevel" json:"logLevel"`

	Trust   Trust   `yaml:"trust" json:"trust"`
	API     API     `yaml:"api" json:"api"`
	Metrics Metrics `yaml:"metrics" json:"metrics"`
	Shadow  Shadow  `yaml:"shadow" json:"shadow"`
	Buffer  Buffer  `yaml:"buffer" json:"buffer"`
	Runtime Runtime `yaml:"runtime" json:"runtime"`
	WASM    WASM    `yaml:"wasm" json:"wasm"`
	Install Install `yaml:"install" json:"install"`
	Uplink  Uplink  `yaml:"uplink" json:"uplink"`

	// src records where settings came from, for error messages.
	src *configfile.Source
}

// Trust is who may publish bundles for this device.
type Trust struct {
	// PublicKeys are PEM files with the publishers' public keys (ECDSA
	// P-256 or Ed25519). Required for installs: with none, the agent
	// serves what it has but refuses every bundle install.
	PublicKeys []string `yaml:"publicKeys" json:"publicKeys"`
}

// API is the local inference API (Open Inference Protocol).
type API struct {
	// Socket is the unix socket path.
	Socket string `yaml:"socket" json:"socket"`
	// SocketMode is the socket's permissions, an octal string: "0660"
	// lets the agent's group connect.
	SocketMode FileMode `yaml:"socketMode" json:"socketMode"`
	// TCP optionally serves the API on a loopback address too, e.g.
	// "127.0.0.1:8080". Never a routable address: the API has no
	// authentication.
	TCP string `yaml:"tcp" json:"tcp"`
	// MaxBodyBytes caps a request body (413 above it), and a gRPC
	// request message.
	MaxBodyBytes ByteSize `yaml:"maxBodyBytes" json:"maxBodyBytes"`
	// GRPCSocket optionally serves the API's gRPC form too (KServe's
	// inference.GRPCInferenceService, with server reflection) on a unix
	// socket of its own, e.g. "/run/edge-agent/grpc.sock", with
	// socketMode's permissions; empty (the default) serves no gRPC.
	GRPCSocket string `yaml:"grpcSocket" json:"grpcSocket"`
	// GRPCListen optionally serves the gRPC form on TCP, e.g.
	// "0.0.0.0:8081" or "127.0.0.1:8081", with mutual TLS: clients must
	// present a certificate signed by grpcTLS.clientCA. Requires grpcTLS.
	GRPCListen string `yaml:"grpcListen" json:"grpcListen"`
	// GRPCTLS is grpcListen's certificates.
	GRPCTLS ServerTLS `yaml:"grpcTLS" json:"grpcTLS"`
}

// ServerTLS names the certificate files of a listener with mutual TLS.
type ServerTLS struct {
	// Cert and Key are the agent's server certificate (PEM, with any
	// intermediates) and its private key.
	Cert string `yaml:"cert" json:"cert"`
	Key  string `yaml:"key" json:"key"`
	// ClientCA holds the CA certificates (PEM) that sign the clients'
	// certificates; a client without one is refused.
	ClientCA string `yaml:"clientCA" json:"clientCA"`
}

// Metrics is the Prometheus endpoint.
type Metrics struct {
	// Listen optionally serves /metrics on a loopback address, e.g.
	// "127.0.0.1:9101"; empty disables it.
	Listen string `yaml:"listen" json:"listen"`
	// Interval is how often the request metrics window (counts, errors,
	// latency quantiles) is appended to the outbox for the rollout gates.
	Interval Duration `yaml:"interval" json:"interval"`
	// DriftWindow is the length of a drift window: every window, the
	// drift summary of the served bundle (when it ships a profile) is
	// appended to the outbox.
	DriftWindow Duration `yaml:"driftWindow" json:"driftWindow"`
}

// Shadow tunes shadow mode: while a desired state names a candidate
// bundle to run in shadow (a rollout's shadow step), the agent runs a
// sample of the active model's successful requests through the candidate
// too and reports how often the two agree, for the rollout's
// shadowAgreement gate. The candidate never answers a client.
type Shadow struct {
	// SampleRate is the share (0 to 1) of the active model's successful
	// requests also run on the candidate; 0 loads a candidate but
	// compares nothing.
	SampleRate float64 `yaml:"sampleRate" json:"sampleRate"`
	// Window is how often the comparison is appended to the outbox as a
	// "shadow" record.
	Window Duration `yaml:"window" json:"window"`
	// Queue bounds the sampled inputs waiting for the candidate, which
	// runs beside the request path; samples that find it full are
	// dropped (and counted).
	Queue int `yaml:"queue" json:"queue"`
}

// Buffer is the outbox that keeps what the agent reports while offline.
type Buffer struct {
	// MaxBytes bounds the outbox; beyond it the oldest records are
	// dropped (and counted).
	MaxBytes ByteSize `yaml:"maxBytes" json:"maxBytes"`
	// MaxRecordBytes bounds one record.
	MaxRecordBytes ByteSize `yaml:"maxRecordBytes" json:"maxRecordBytes"`
	// PredictionSampleRate is the fraction (0 to 1) of predictions
	// sampled into the outbox.
	PredictionSampleRate float64 `yaml:"predictionSampleRate" json:"predictionSampleRate"`
}

// Runtime overrides how models run on this device.
type Runtime struct {
	// ExecutionProviders replaces the bundle's preference list, e.g.
	// [cuda, cpu] on a Jetson; empty keeps the bundle's. CPU is always
	// the last resort.
	ExecutionProviders []string `yaml:"executionProviders" json:"executionProviders"`
	// IntraOpThreads and InterOpThreads size ONNX Runtime's thread
	// pools; 0 picks defaults tuned for small CPUs.
	IntraOpThreads int `yaml:"intraOpThreads" json:"intraOpThreads"`
	InterOpThreads int `yaml:"interOpThreads" json:"interOpThreads"`
	// ORTLibrary is the ONNX Runtime shared library; empty searches the
	// default places.
	ORTLibrary string `yaml:"ortLibrary" json:"ortLibrary"`
}

// WASM bounds the sandboxed pre- and post-processors.
type WASM struct {
	// MemoryLimitMiB caps one module instance's linear memory.
	MemoryLimitMiB int `yaml:"memoryLimitMiB" json:"memoryLimitMiB"`
	// Timeout bounds one call into a module, e.g. "2s".
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// CacheDir keeps compiled modules. Default: DataDir/cache/wasm.
	CacheDir string `yaml:"cacheDir" json:"cacheDir"`
}

// Install bounds bundle installs.
type Install struct {
	// MaxBundleBytes caps a bundle file.
	MaxBundleBytes ByteSize `yaml:"maxBundleBytes" json:"maxBundleBytes"`
	// MinFreeBytes is kept free on DataDir's filesystem: an install that
	// would leave less is refused.
	MinFreeBytes ByteSize `yaml:"minFreeBytes" json:"minFreeBytes"`
}

// Uplink is the MQTT connection to the control plane. Without a broker
// the agent runs standalone.
type Uplink struct {
	// Broker is the broker's URL: mqtt:// or tcp:// (plain), mqtts://,
	// ssl:// or tls:// (TLS), ws:// or wss:// (websocket).
	Broker string `yaml:"broker" json:"broker"`
	// Username and PasswordFile authenticate the device; the password is
	// read from the file (first line), never written in the config.
	Username     string `yaml:"username" json:"username"`
	PasswordFile string `yaml:"passwordFile" json:"passwordFile"`
	// TLS configures certificates for TLS brokers.
	TLS TLS `yaml:"tls" json:"tls"`
	// KeepAlive is the MQTT keepalive, whole seconds.
	KeepAlive Duration `yaml:"keepAlive" json:"keepAlive"`
	// RetryMin and RetryMax bound the exponential, jittered wait before
	// the agent tries again a desired state that failed for a transient
	// reason (download, full disk).
	RetryMin Duration `yaml:"retryMin" json:"retryMin"`
	RetryMax Duration `yaml:"retryMax" json:"retryMax"`
}

// TLS names certificate files.
type TLS struct {
	// CA verifies the broker; empty uses the system roots.
	CA string `yaml:"ca" json:"ca"`
	// Cert and Key are the device's client certificate and key; both or
	// neither.
	Cert string `yaml:"cert" json:"cert"`
	Key  string `yaml:"key" json:"key"`
}

// Defaults of settings that are not derived from others.
const (
	DefaultDataDir              = "/var/lib/edge-agent"
	DefaultSocket               = "/run/edge-agent/api.sock"
	DefaultSocketMode           = 0o660
	DefaultMaxBodyBytes         = 8 << 20  // as api.DefaultMaxBodyBytes
	DefaultBufferMaxBytes       = 64 << 20 // as outbox.DefaultMaxBytes
	DefaultBufferMaxRecordBytes = 1 << 20  // as outbox.DefaultMaxRecordBytes
	DefaultPredictionSampleRate = 0.01
	DefaultWASMMemoryLimitMiB   = 64
	DefaultWASMTimeout          = 2 * time.Second
	DefaultMetricsInterval      = time.Minute
	DefaultDriftWindow          = 5 * time.Minute
	DefaultShadowSampleRate     = 0.1 // as agent.DefaultShadowRate
	DefaultShadowWindow         = time.Minute
	DefaultShadowQueue          = 64
	DefaultMaxBundleBytes       = 2 << 30  // as bundle.DefaultLimits().MaxBundleBytes
	DefaultMinFreeBytes         = 32 << 20 // as fetch.DefaultMinFreeBytes
	DefaultKeepAlive            = 30 * time.Second
	DefaultRetryMin             = 10 * time.Second
	DefaultRetryMax             = 10 * time.Minute
	DefaultLogLevel             = "info"
)

// Default returns the configuration the agent runs with when the file
// sets nothing: device ID from the hostname, derived paths under
// DefaultDataDir.
func Default() *Config {
	c := defaults()
	c.derive()
	return c
}

// defaults is Default without the settings derived from others, which
// Load fills in after reading the file.
func defaults() *Config {
	return &Config{
		DataDir:  DefaultDataDir,
		LogLevel: DefaultLogLevel,
		API: API{
			Socket:       DefaultSocket,
			SocketMode:   DefaultSocketMode,
			MaxBodyBytes: DefaultMaxBodyBytes,
		},
		Metrics: Metrics{
			Interval:    Duration(DefaultMetricsInterval),
			DriftWindow: Duration(DefaultDriftWindow),
		},
		Shadow: Shadow{
			SampleRate: DefaultShadowSampleRate,
			Window:     Duration(DefaultShadowWindow),
			Queue:      DefaultShadowQueue,
		},
		Buffer: Buffer{
			MaxBytes:             DefaultBufferMaxBytes,
			MaxRecordBytes:       DefaultBufferMaxRecordBytes,
			PredictionSampleRate: DefaultPredictionSampleRate,
		},
		WASM: WASM{
			MemoryLimitMiB: DefaultWASMMemoryLimitMiB,
			Timeout:        Duration(DefaultWASMTimeout),
		},
		Install: Install{
			MaxBundleBytes: DefaultMaxBundleBytes,
			MinFreeBytes:   DefaultMinFreeBytes,
		},
		Uplink: Uplink{KeepAlive: Duration(DefaultKeepAlive), RetryMin: Duration(DefaultRetryMin), RetryMax: Duration(DefaultRetryMax)},
	}
}

// derive fills in settings left empty whose defaults depend on others.
func (c *Config) derive() {
	if c.DeviceID == "" {
		if h, err := os.Hostname(); err == nil {
			c.DeviceID = h
		}
	}
	if c.WASM.CacheDir == "" && c.DataDir != "" {
		c.WASM.CacheDir = filepath.Join(c.DataDir, "cache", "wasm")
	}
}

// ErrNoTrust is returned by TrustKeys when no publisher key is
// configured.
var ErrNoTrust = errors.New("config: trust.publicKeys is empty: the agent refuses every bundle install until at least one publisher public key (PEM) is configured")

// TrustKeys returns the publishers' public key files, or ErrNoTrust if
// there are none: the agent then serves the models it has but installs
// nothing.
func (c *Config) TrustKeys() ([]string, error) {
	if len(c.Trust.PublicKeys) == 0 {
		return nil, ErrNoTrust
	}
	return c.Trust.PublicKeys, nil
}

// SlogLevel is LogLevel as a slog.Level (info if unset or invalid).
func (c *Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// ErrInvalid is wrapped by every error about the configuration's content.
var ErrInvalid = errors.New("invalid configuration")

// FieldError is a problem with one setting.
type FieldError struct {
	// File, Line and Column locate the setting, when it came from a file.
	File         string
	Line, Column int
	// Key is the setting's path, e.g. "buffer.maxBytes".
	Key string
	// Msg says what is wrong.
	Msg string
}

// Error is "config: FILE:LINE:COLUMN: KEY: MSG", less what is unknown.
func (e *FieldError) Error() string {
	ce := configfile.Error{File: e.File, Line: e.Line, Column: e.Column, Path: e.Key, Msg: e.Msg}
	return "config: " + ce.Error()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// fieldErrors turns the configfile package's problems into FieldErrors,
// joined.
func fieldErrors(errs []*configfile.Error) error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = &FieldError{File: e.File, Line: e.Line, Column: e.Column, Key: e.Path, Msg: e.Msg}
	}
	return errors.Join(out...)
}
