package fleetd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/configfile"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// ErrConfig is wrapped by every configuration error; the message names
// the key (and, for a file, the file, line and column).
var ErrConfig = errors.New("fleetd: invalid configuration")

// Defaults.
const (
	DefaultDataDir         = "./fleetd-data"
	DefaultHTTPListen      = "127.0.0.1:8080"
	DefaultMQTTListen      = "127.0.0.1:1883"
	DefaultMaxBodyBytes    = 1 << 20
	DefaultDesiredLifetime = 7 * 24 * time.Hour
	DefaultRefreshAfter    = 24 * time.Hour
	DefaultServiceUser     = "_fleetd"
	DefaultIngestWorkers   = 32
	// MaxConfigBytes caps a configuration file.
	MaxConfigBytes = configfile.DefaultMaxBytes
)

// Files fleetd keeps in its data directory.
const (
	OperatorTokenFile = "operator.token"
	// TokensDir holds the generated auth.tokens files.
	TokensDir      = "tokens"
	EnrolTokenFile = "enrol.token"
	URLKeyFile     = "registry-url.key"
	InventoryFile  = "inventory.db"
	RecordsFile    = "records.db"
	BrokerDir      = "broker"
	RegistryDir    = "registry"
	UploadDir      = "uploads"
)

// Config is fleetd's configuration: a YAML file (LoadConfig), flags that
// override single keys (Set), and the in-process fields Logger, Announce
// and Now. An empty value means the documented default.
type Config struct {
	// DataDir holds the inventory, the records, the embedded broker's
	// store, the file registry and generated secrets.
	DataDir  string         `yaml:"dataDir"`
	HTTP     HTTPConfig     `yaml:"http"`
	Auth     AuthConfig     `yaml:"auth"`
	Broker   BrokerConfig   `yaml:"broker"`
	Registry RegistryConfig `yaml:"registry"`
	Desired  DesiredConfig  `yaml:"desired"`
	Records  RecordsConfig  `yaml:"records"`
	Events   EventsConfig   `yaml:"events"`
	Samples  SamplesConfig  `yaml:"samples"`

	// Logger receives fleetd's logs; nil discards them.
	Logger *slog.Logger `yaml:"-"`
	// Announce receives the secrets fleetd generates on first start
	// (printed once); nil discards them (they are in the data dir).
	Announce io.Writer `yaml:"-"`
	// Now is the clock; nil means time.Now.
	Now func() time.Time `yaml:"-"`
	// EventTiming, if set, replaces the retry timing of event deliveries
	// (tests).
	EventTiming *EventTiming `yaml:"-"`

	// src is where LoadConfig found each key, for Validate's errors.
	src *configfile.Source
}

// HTTPConfig is the HTTP server: the API and, for the file registry,
// bundle downloads.
type HTTPConfig struct {
	// Listen is the address ("host:port"; port 0 picks one).
	Listen string `yaml:"listen"`
	// PublicURL is how devices reach this server, the base of registry
	// download URLs (default http(s)://LISTEN).
	PublicURL string `yaml:"publicURL"`
	// CertFile and KeyFile serve HTTPS.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// MaxBodyBytes caps JSON request bodies.
	MaxBodyBytes ByteSize `yaml:"maxBodyBytes"`
	// MaxBundleBytes caps an uploaded bundle (default the bundle
	// format's limit, 2 GiB).
	MaxBundleBytes ByteSize `yaml:"maxBundleBytes"`
}

// AuthConfig holds the API's tokens.
type AuthConfig struct {
	// OperatorTokenFile holds the operator's bearer token (default
	// DATA/operator.token, generated on first start).
	OperatorTokenFile string `yaml:"operatorTokenFile"`
	// EnrolTokenFiles are enrolment tokens by name (default
	// {default: DATA/enrol.token}, generated on first start).
	EnrolTokenFiles map[string]string `yaml:"enrolTokenFiles"`
	// AllowReenrol lets a device enrol again with a valid token (its
	// password is replaced).
	AllowReenrol bool `yaml:"allowReenrol"`
	// Tokens are API tokens besides the operator token, each with a role
	// the API enforces (docs/operations.md#roles): viewer reads,
	// operator also drives rollouts and assignments, admin may do
	// everything (as the operator token).
	Tokens []TokenConfig `yaml:"tokens"`
}

// TokenConfig is one API token and its role.
type TokenConfig struct {
	// Name names whose token it is, in logs and in GET /api/v1/whoami
	// ([a-z0-9._-]; "operator" is the operator token's).
	Name string `yaml:"name"`
	// Role is viewer, operator or admin.
	Role string `yaml:"role"`
	// File holds the token (default DATA/tokens/NAME.token, generated
	// on first start if missing and shown once).
	File string `yaml:"file"`
}

// BrokerConfig is the MQTT side: the embedded broker, or an external one.
type BrokerConfig struct {
	// Listen is the embedded broker's plain TCP address; "off" disables
	// it (with TLS set).
	Listen string `yaml:"listen"`
	// TLS adds a TLS listener to the embedded broker.
	TLS *BrokerTLS `yaml:"tls"`
	// PublicURLs are the broker URLs enrolment hands devices (default
	// the embedded listeners' addresses, or External).
	PublicURLs []string `yaml:"publicURLs"`

	// External, if set (tcp://, mqtt://, ssl://, tls://, mqtts://),
	// replaces the embedded broker: fleetd connects to it as a client
	// with a service user.
	External string `yaml:"external"`
	// Username and PasswordFile are fleetd's service credentials on
	// the external broker; each replica needs its own username.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"passwordFile"`
	// ClientID defaults to Username.
	ClientID string `yaml:"clientID"`
	// CAFile verifies a TLS external broker (default: system roots).
	CAFile string `yaml:"caFile"`
	// SharedGroup is the MQTT 5 shared-subscription group of telemetry
	// and events (default "fleetd").
	SharedGroup string `yaml:"sharedGroup"`
	// IngestWorkers bounds the messages from an external broker being
	// stored at once (default 32).
	IngestWorkers int `yaml:"ingestWorkers"`
	// Mosquitto is how fleetd provisions enrolled devices on an
	// external mosquitto.
	Mosquitto MosquittoConfig `yaml:"mosquitto"`
}

// BrokerTLS is the embedded broker's TLS listener.
type BrokerTLS struct {
	// Listen is the TLS listener's address ("host:port").
	Listen string `yaml:"listen"`
	// CertFile and KeyFile are the broker's certificate and key (PEM);
	// both are required.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// ClientCAFile verifies device client certificates (PEM CA bundle).
	ClientCAFile string `yaml:"clientCAFile"`
	// RequireClientCert refuses a device without a client certificate
	// that ClientCAFile verifies.
	RequireClientCert bool `yaml:"requireClientCert"`
}

// MosquittoConfig provisions devices on an external mosquitto.
type MosquittoConfig struct {
	// PasswordFile is mosquitto's password_file: fleetd adds (or
	// replaces) an enrolled device's line, atomically.
	PasswordFile string `yaml:"passwordFile"`
	// PIDFile, if set, is mosquitto's pid file: fleetd sends it SIGHUP
	// after changing PasswordFile, so that it reloads.
	PIDFile string `yaml:"pidFile"`
}

// RegistryConfig is the bundle registry.
type RegistryConfig struct {
	// Type is "fs" (default) or "s3".
	Type string `yaml:"type"`
	// Dir is the file registry's directory (default DATA/registry).
	Dir string `yaml:"dir"`
	// URLKeyFile holds the key that signs file-registry download URLs
	// (default DATA/registry-url.key, generated).
	URLKeyFile string `yaml:"urlKeyFile"`
	// TrustedKeys are publishers' public keys (PEM files, several for a
	// key rotation): a push whose signature none of them made is refused.
	// With none, every push is refused, unless InsecureAcceptAnyKey.
	TrustedKeys []string `yaml:"trustedKeys"`
	// InsecureAcceptAnyKey, with no TrustedKeys, stores any signed bundle
	// unchecked (devices still verify against their own pinned keys);
	// fleetd warns at start and on every push. For trying fleetd out.
	InsecureAcceptAnyKey bool `yaml:"insecureAcceptAnyKey"`
	// URLExpiry is how long download URLs are valid; at least
	// desired.lifetime (the default).
	URLExpiry Duration `yaml:"urlExpiry"`
	S3        S3Config `yaml:"s3"`
}

// S3Config is the S3 registry.
type S3Config struct {
	// Endpoint is host[:port]; Secure selects https.
	Endpoint string `yaml:"endpoint"`
	Secure   bool   `yaml:"secure"`
	// Bucket holds the bundles, as objects under Prefix.
	Bucket string `yaml:"bucket"`
	Prefix string `yaml:"prefix"`
	// Region is needed to presign URLs without asking the server
	// (default us-east-1).
	Region string `yaml:"region"`
	// CredentialsFile holds AWS_ACCESS_KEY_ID=... and
	// AWS_SECRET_ACCESS_KEY=... lines.
	CredentialsFile string `yaml:"credentialsFile"`
	// CreateBucket makes the bucket at start if it does not exist.
	CreateBucket bool `yaml:"createBucket"`
	// PublicEndpoint and PublicSecure are the server as devices reach it
	// (presigned URLs), if not Endpoint.
	PublicEndpoint string `yaml:"publicEndpoint"`
	PublicSecure   bool   `yaml:"publicSecure"`
}

// DesiredConfig governs desired states.
type DesiredConfig struct {
	// Lifetime is how long a desired state is valid (expiresAt -
	// issuedAt); at most 7 days with S3 (presigned URL limit).
	Lifetime Duration `yaml:"lifetime"`
	// RefreshAfter: a desired state a device has not applied yet is
	// re-issued (new seq, fresh URLs and expiry) once this old, and any
	// desired state once it has less than this left.
	RefreshAfter Duration `yaml:"refreshAfter"`
}

// RecordsConfig is the retention of device records.
type RecordsConfig struct {
	// MaxPerDevice is how many records are kept per device (the oldest
	// are dropped beyond it).
	MaxPerDevice int `yaml:"maxPerDevice"`
	// MaxAge prunes records older than this (by the device's clock),
	// every 10 minutes.
	MaxAge Duration `yaml:"maxAge"`
}

// The units of the configuration, parsed by shared/configfile as in every
// configuration document of the module.
type (
	// Duration is a time.Duration written as Go writes it ("90s", "24h"),
	// with "d" for days ("7d").
	Duration = configfile.Duration
	// ByteSize is a size in bytes, written as an integer or with a unit
	// (KiB, MiB, GiB, TiB; KB, MB, GB, TB; case-insensitive).
	ByteSize = configfile.ByteSize
)

// External reports whether fleetd uses an external broker.
func (c *Config) External() bool { return c.Broker.External != "" }

// Defaults returns the configuration fleetd runs with when nothing is
// set: every default filled in (the files under DefaultDataDir).
func Defaults() Config { return (&Config{}).withDefaults() }

// withDefaults returns a copy of c with every empty setting filled in.
func (c *Config) withDefaults() Config {
	d := *c
	if d.DataDir == "" {
		d.DataDir = DefaultDataDir
	}
	in := func(p *string, name string) {
		if *p == "" {
			*p = filepath.Join(d.DataDir, name)
		}
	}
	if d.HTTP.Listen == "" {
		d.HTTP.Listen = DefaultHTTPListen
	}
	if d.HTTP.MaxBodyBytes == 0 {
		d.HTTP.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if d.HTTP.MaxBundleBytes == 0 {
		d.HTTP.MaxBundleBytes = ByteSize(bundle.DefaultLimits().MaxBundleBytes)
	}
	in(&d.Auth.OperatorTokenFile, OperatorTokenFile)
	if d.Auth.EnrolTokenFiles == nil {
		d.Auth.EnrolTokenFiles = map[string]string{"default": filepath.Join(d.DataDir, EnrolTokenFile)}
	}
	d.Auth.Tokens = slices.Clone(d.Auth.Tokens)
	for i := range d.Auth.Tokens {
		in(&d.Auth.Tokens[i].File, filepath.Join(TokensDir, d.Auth.Tokens[i].Name+".token"))
	}
	if d.Broker.Listen == "" {
		d.Broker.Listen = DefaultMQTTListen
	}
	if d.Broker.Username == "" {
		d.Broker.Username = DefaultServiceUser
	}
	if d.Broker.ClientID == "" {
		d.Broker.ClientID = d.Broker.Username
	}
	if d.Broker.SharedGroup == "" {
		d.Broker.SharedGroup = protocol.SharedGroup
	}
	if d.Broker.IngestWorkers == 0 {
		d.Broker.IngestWorkers = DefaultIngestWorkers
	}
	if d.Registry.Type == "" {
		d.Registry.Type = "fs"
	}
	in(&d.Registry.Dir, RegistryDir)
	in(&d.Registry.URLKeyFile, URLKeyFile)
	if d.Desired.Lifetime == 0 {
		d.Desired.Lifetime = Duration(DefaultDesiredLifetime)
	}
	if d.Desired.RefreshAfter == 0 {
		d.Desired.RefreshAfter = Duration(DefaultRefreshAfter)
	}
	if d.Registry.URLExpiry == 0 {
		d.Registry.URLExpiry = d.Desired.Lifetime
	}
	if d.Records.MaxPerDevice == 0 {
		d.Records.MaxPerDevice = telemetry.DefaultMaxPerDevice
	}
	if d.Records.MaxAge == 0 {
		d.Records.MaxAge = Duration(telemetry.DefaultMaxAge)
	}
	d.Events = d.Events.withDefaults()
	d.Samples = d.Samples.withDefaults()
	return d
}

// Validate checks c (with defaults applied) and reports every problem,
// each naming its key and, for a key LoadConfig read and no flag changed
// since, the file, line and column.
func (c *Config) Validate() error {
	d := c.withDefaults()
	r := configfile.NewReport(c.src)
	bad := r.Add
	checkAddr := func(key, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port (e.g. 127.0.0.1:8080, :0 for any free port)", addr)
		}
	}
	checkAddr("http.listen", d.HTTP.Listen)
	if d.HTTP.PublicURL != "" {
		if u, err := url.Parse(d.HTTP.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			bad("http.publicURL", "%q is not an http(s)://host[:port][/path] URL", d.HTTP.PublicURL)
		}
	}
	if (d.HTTP.CertFile == "") != (d.HTTP.KeyFile == "") {
		bad("http.certFile", "http.certFile and http.keyFile go together")
	}
	if d.HTTP.MaxBodyBytes < 1024 {
		bad("http.maxBodyBytes", "must be at least 1KiB, got %d", d.HTTP.MaxBodyBytes)
	}
	if d.HTTP.MaxBundleBytes < 1024 {
		bad("http.maxBundleBytes", "must be at least 1KiB, got %d", d.HTTP.MaxBundleBytes)
	}
	if len(d.Auth.EnrolTokenFiles) == 0 {
		bad("auth.enrolTokenFiles", "at least one enrolment token is needed")
	}
	for name, f := range d.Auth.EnrolTokenFiles {
		if !validToken(name) || f == "" {
			bad("auth.enrolTokenFiles."+name, "a name of [a-z0-9._-] and a file path are needed")
		}
	}
	seen := map[string]bool{"operator": true}
	for i, tc := range d.Auth.Tokens {
		key := fmt.Sprintf("auth.tokens[%d]", i)
		switch {
		case !validToken(tc.Name):
			bad(key+".name", "%q: a name of [a-z0-9._-] (at most 64) is needed", tc.Name)
		case seen[tc.Name]:
			bad(key+".name", "%q is taken (by the operator token or an earlier entry)", tc.Name)
		}
		seen[tc.Name] = true
		if _, err := api.ParseRole(tc.Role); err != nil {
			bad(key+".role", "%v", err)
		}
	}
	if d.External() {
		u, err := url.Parse(d.Broker.External)
		if err != nil || u.Host == "" {
			bad("broker.external", "%q is not a broker URL (tcp://host:1883, mqtts://host:8883)", d.Broker.External)
		} else {
			switch u.Scheme {
			case "tcp", "mqtt", "ssl", "tls", "mqtts":
			default:
				bad("broker.external", "scheme %q not supported (tcp, mqtt, ssl, tls, mqtts)", u.Scheme)
			}
		}
		if d.Broker.PasswordFile == "" {
			bad("broker.passwordFile", "required with broker.external (the service user's password)")
		}
		if d.Broker.TLS != nil {
			bad("broker.tls", "configures the embedded broker; not with broker.external")
		}
		if d.Broker.Mosquitto.PIDFile != "" && d.Broker.Mosquitto.PasswordFile == "" {
			bad("broker.mosquitto.pidFile", "needs broker.mosquitto.passwordFile")
		}
	} else {
		if d.Broker.Listen != "off" {
			checkAddr("broker.listen", d.Broker.Listen)
		} else if d.Broker.TLS == nil {
			bad("broker.listen", "off needs broker.tls")
		}
		if t := d.Broker.TLS; t != nil {
			checkAddr("broker.tls.listen", t.Listen)
			if t.CertFile == "" || t.KeyFile == "" {
				bad("broker.tls.certFile", "broker.tls needs certFile and keyFile")
			}
		}
		if d.Broker.Mosquitto != (MosquittoConfig{}) {
			bad("broker.mosquitto", "provisions an external mosquitto; needs broker.external")
		}
	}
	if !strings.HasPrefix(d.Broker.Username, "_") || protocol.ValidateDeviceID(d.Broker.Username[1:]) != nil {
		bad("broker.username", "%q: a service user is _ followed by [A-Za-z0-9._-] (never a device id)", d.Broker.Username)
	}
	if !strings.HasPrefix(d.Broker.ClientID, d.Broker.Username) {
		bad("broker.clientID", "%q must start with the username %q", d.Broker.ClientID, d.Broker.Username)
	}
	if !validToken(d.Broker.SharedGroup) {
		bad("broker.sharedGroup", "%q: must be [a-z0-9._-]", d.Broker.SharedGroup)
	}
	if d.Broker.IngestWorkers < 1 || d.Broker.IngestWorkers > 4096 {
		bad("broker.ingestWorkers", "must be 1 to 4096, got %d", d.Broker.IngestWorkers)
	}
	for i, u := range d.Broker.PublicURLs {
		if pu, err := url.Parse(u); err != nil || pu.Host == "" {
			bad(fmt.Sprintf("broker.publicURLs[%d]", i), "%q is not a broker URL", u)
		}
	}

	const day = 24 * time.Hour
	life := time.Duration(d.Desired.Lifetime)
	if life < time.Minute {
		bad("desired.lifetime", "must be at least 1m, got %s", life)
	}
	if ra := time.Duration(d.Desired.RefreshAfter); ra < time.Second || ra >= life {
		bad("desired.refreshAfter", "must be at least 1s and below desired.lifetime (%s), got %s", life, ra)
	}
	switch d.Registry.Type {
	case "fs":
		if d.Registry.S3 != (S3Config{}) {
			bad("registry.s3", "set, but registry.type is fs")
		}
	case "s3":
		s := d.Registry.S3
		if s.Endpoint == "" {
			bad("registry.s3.endpoint", "required with registry.type s3")
		}
		if s.Bucket == "" {
			bad("registry.s3.bucket", "required with registry.type s3")
		}
		if s.CredentialsFile == "" {
			bad("registry.s3.credentialsFile", "required with registry.type s3")
		}
		if life > 7*day {
			bad("desired.lifetime", "at most 7d with registry.type s3 (presigned URLs last at most 7 days), got %s", life)
		}
		if time.Duration(d.Registry.URLExpiry) > 7*day {
			bad("registry.urlExpiry", "at most 7d with S3, got %s", d.Registry.URLExpiry)
		}
	default:
		bad("registry.type", "%q: must be fs or s3", d.Registry.Type)
	}
	if time.Duration(d.Registry.URLExpiry) < life {
		bad("registry.urlExpiry", "%s is shorter than desired.lifetime %s: a device could hold a valid desired state with a dead download URL", d.Registry.URLExpiry, life)
	}
	if d.Records.MaxPerDevice < 1 {
		bad("records.maxPerDevice", "must be at least 1, got %d", d.Records.MaxPerDevice)
	}
	if time.Duration(d.Records.MaxAge) < time.Minute {
		bad("records.maxAge", "must be at least 1m, got %s", d.Records.MaxAge)
	}
	validateEvents(d.Events, bad)
	validateSamples(d.Samples, bad)
	return configErrors(r.Errors())
}

func validToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
