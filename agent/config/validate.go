package config

import (
	"errors"
	"maps"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/shared/configfile"
	"github.com/edgefleet/edgefleet/shared/onnx"
)

// maxSocketPath is the longest unix socket path Linux takes (sun_path is
// 108 bytes with the terminating NUL).
const maxSocketPath = 107

// Validate checks every setting and reports every problem, each as a
// *FieldError (placed in the file the configuration was loaded from, if
// any); errors.Is(err, ErrInvalid) holds.
func (c *Config) Validate() error {
	r := configfile.NewReport(c.src)
	c.check(r)
	return fieldErrors(r.Errors())
}

// check reports every problem of c into r.
func (c *Config) check(r *configfile.Report) {
	v := validator{r}
	v.check(c)
}

type validator struct {
	r *configfile.Report
}

func (v *validator) fail(key, format string, args ...any) {
	v.r.Add(key, format, args...)
}

func (v *validator) check(c *Config) {
	switch {
	case c.DeviceID == "":
		v.fail("deviceID", "required (and the hostname, its default, is unavailable)")
	case len(c.DeviceID) > 128 || !isName(c.DeviceID, false):
		v.fail("deviceID", "must be 1 to 128 characters of A-Z a-z 0-9 . _ -, got %q", c.DeviceID)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		val := c.Labels[k]
		key := "labels." + k
		if k == "" || len(k) > 63 || !isName(k, true) {
			v.fail(key, "a label key must be 1 to 63 characters of A-Z a-z 0-9 . _ - /")
		}
		if len(val) > 63 || (val != "" && !isName(val, false)) {
			v.fail(key, "a label value must be at most 63 characters of A-Z a-z 0-9 . _ -, got %q", val)
		}
	}
	v.absPath("dataDir", c.DataDir, true)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		v.fail("logLevel", "must be debug, info, warn or error, got %q", c.LogLevel)
	}

	seen := map[string]bool{}
	for i, p := range c.Trust.PublicKeys {
		key := "trust.publicKeys[" + strconv.Itoa(i) + "]"
		if v.absPath(key, p, true) && seen[p] {
			v.fail(key, "%s is listed twice", p)
		}
		seen[p] = true
	}

	if v.absPath("api.socket", c.API.Socket, true) && len(c.API.Socket) > maxSocketPath {
		v.fail("api.socket", "path is %d bytes long; a unix socket path must be at most %d", len(c.API.Socket), maxSocketPath)
	}
	if c.API.SocketMode > 0o777 {
		v.fail("api.socketMode", "must be permission bits from 0000 to 0777, got %v", c.API.SocketMode)
	} else if c.API.SocketMode&0o222 == 0 {
		v.fail("api.socketMode", "%v lets nobody connect (connecting needs write permission); use e.g. 0660", c.API.SocketMode)
	}
	v.loopback("api.tcp", c.API.TCP)
	v.positive("api.maxBodyBytes", c.API.MaxBodyBytes)
	v.grpc(c)
	if v.loopback("metrics.listen", c.Metrics.Listen) && c.Metrics.Listen != "" && c.Metrics.Listen == c.API.TCP {
		v.fail("metrics.listen", "%s is also api.tcp; metrics need their own address", c.Metrics.Listen)
	}

	if r := c.Shadow.SampleRate; math.IsNaN(r) || r < 0 || r > 1 {
		v.fail("shadow.sampleRate", "must be from 0 to 1, got %v", r)
	}
	v.duration("shadow.window", c.Shadow.Window, time.Second, 24*time.Hour)
	v.intRange("shadow.queue", c.Shadow.Queue, 1, 65536)

	v.positive("buffer.maxBytes", c.Buffer.MaxBytes)
	if v.positive("buffer.maxRecordBytes", c.Buffer.MaxRecordBytes) && c.Buffer.MaxBytes > 0 && c.Buffer.MaxRecordBytes > c.Buffer.MaxBytes {
		v.fail("buffer.maxRecordBytes", "%v is more than buffer.maxBytes (%v)", c.Buffer.MaxRecordBytes, c.Buffer.MaxBytes)
	}
	if r := c.Buffer.PredictionSampleRate; math.IsNaN(r) || r < 0 || r > 1 {
		v.fail("buffer.predictionSampleRate", "must be from 0 to 1, got %v", r)
	}

	seen = map[string]bool{}
	for i, p := range c.Runtime.ExecutionProviders {
		key := "runtime.executionProviders[" + strconv.Itoa(i) + "]"
		switch {
		case p == "":
			v.fail(key, "empty provider name")
		case seen[p]:
			v.fail(key, "%q is listed twice", p)
		default:
			if err := onnx.CheckProviders([]string{p}); err != nil {
				v.fail(key, "%v", err)
			}
		}
		seen[p] = true
	}
	v.intRange("runtime.intraOpThreads", c.Runtime.IntraOpThreads, 0, 256)
	v.intRange("runtime.interOpThreads", c.Runtime.InterOpThreads, 0, 256)
	v.absPath("runtime.ortLibrary", c.Runtime.ORTLibrary, false)

	v.intRange("wasm.memoryLimitMiB", c.WASM.MemoryLimitMiB, 1, 4096)
	v.duration("wasm.timeout", c.WASM.Timeout, time.Millisecond, 10*time.Minute)
	v.duration("metrics.interval", c.Metrics.Interval, time.Second, time.Hour)
	v.duration("metrics.driftWindow", c.Metrics.DriftWindow, time.Second, 24*time.Hour)
	v.absPath("wasm.cacheDir", c.WASM.CacheDir, true)

	v.positive("install.maxBundleBytes", c.Install.MaxBundleBytes)
	if c.Install.MinFreeBytes < 0 {
		v.fail("install.minFreeBytes", "must be >= 0, got %d", int64(c.Install.MinFreeBytes))
	}

	v.uplink(&c.Uplink)
}

// grpc checks the gRPC settings of the API: a socket of its own, and a
// TCP address only with all three certificate files.
func (v *validator) grpc(c *Config) {
	a := c.API
	if a.GRPCSocket != "" && v.absPath("api.grpcSocket", a.GRPCSocket, false) {
		switch {
		case len(a.GRPCSocket) > maxSocketPath:
			v.fail("api.grpcSocket", "path is %d bytes long; a unix socket path must be at most %d", len(a.GRPCSocket), maxSocketPath)
		case a.GRPCSocket == a.Socket:
			v.fail("api.grpcSocket", "%s is also api.socket; gRPC needs a socket of its own", a.GRPCSocket)
		}
	}
	files := []struct{ key, path string }{
		{"api.grpcTLS.cert", a.GRPCTLS.Cert},
		{"api.grpcTLS.key", a.GRPCTLS.Key},
		{"api.grpcTLS.clientCA", a.GRPCTLS.ClientCA},
	}
	if a.GRPCListen == "" {
		for _, f := range files {
			if f.path != "" {
				v.fail(f.key, "set without api.grpcListen")
			}
		}
		return
	}
	if host, port, err := net.SplitHostPort(a.GRPCListen); err != nil {
		v.fail("api.grpcListen", "must be host:port such as 0.0.0.0:8081, got %q", a.GRPCListen)
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		v.fail("api.grpcListen", "invalid port %q", port)
	} else if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		v.fail("api.grpcListen", "host %q is not an IP address or localhost", host)
	} else if a.GRPCListen == a.TCP || a.GRPCListen == c.Metrics.Listen {
		v.fail("api.grpcListen", "%s is also api.tcp or metrics.listen; gRPC needs its own address", a.GRPCListen)
	}
	for _, f := range files {
		if f.path == "" {
			v.fail(f.key, "required with api.grpcListen: the gRPC listener on TCP uses mutual TLS")
			continue
		}
		v.absPath(f.key, f.path, true)
	}
}

// uplinkSchemes maps broker URL schemes to whether they use TLS.
var uplinkSchemes = map[string]bool{"mqtt": false, "tcp": false, "ws": false, "mqtts": true, "ssl": true, "tls": true, "wss": true}

func (v *validator) uplink(u *Uplink) {
	files := []struct{ key, path string }{
		{"uplink.passwordFile", u.PasswordFile},
		{"uplink.tls.ca", u.TLS.CA},
		{"uplink.tls.cert", u.TLS.Cert},
		{"uplink.tls.key", u.TLS.Key},
	}
	if u.Broker == "" {
		if u.Username != "" {
			v.fail("uplink.username", "set without uplink.broker")
		}
		for _, f := range files {
			if f.path != "" {
				v.fail(f.key, "set without uplink.broker")
			}
		}
	} else {
		tls := false
		b, err := url.Parse(u.Broker)
		switch {
		case err != nil:
			v.fail("uplink.broker", "not a URL: %v", err)
		case b.User != nil:
			v.fail("uplink.broker", "credentials belong in uplink.username and uplink.passwordFile, not in the URL")
		case b.Hostname() == "":
			v.fail("uplink.broker", "must be a URL such as mqtts://broker.example.com:8883, got %q", u.Broker)
		default:
			var known bool
			tls, known = uplinkSchemes[b.Scheme]
			if !known {
				v.fail("uplink.broker", "unknown scheme %q (use mqtt, mqtts, tcp, ssl, tls, ws or wss)", b.Scheme)
				tls = true // do not pile TLS complaints on top
			}
			if p := b.Port(); p != "" {
				if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
					v.fail("uplink.broker", "invalid port %q", p)
				}
			}
		}
		if !tls {
			for _, f := range files[1:] {
				if f.path != "" {
					v.fail(f.key, "the broker %s does not use TLS; use an mqtts:// (or ssl://, tls://, wss://) URL", u.Broker)
				}
			}
		}
		if u.PasswordFile != "" && u.Username == "" {
			v.fail("uplink.passwordFile", "requires uplink.username")
		}
		if (u.TLS.Cert == "") != (u.TLS.Key == "") {
			v.fail("uplink.tls", "cert and key go together: set both or neither")
		}
	}
	for _, f := range files {
		v.absPath(f.key, f.path, false)
	}
	if v.duration("uplink.keepAlive", u.KeepAlive, time.Second, 65535*time.Second) && time.Duration(u.KeepAlive)%time.Second != 0 {
		v.fail("uplink.keepAlive", "must be whole seconds (MQTT counts in seconds), got %v", u.KeepAlive)
	}
	okMin := v.duration("uplink.retryMin", u.RetryMin, time.Millisecond, 24*time.Hour)
	okMax := v.duration("uplink.retryMax", u.RetryMax, time.Millisecond, 24*time.Hour)
	if okMin && okMax && u.RetryMax < u.RetryMin {
		v.fail("uplink.retryMax", "must be at least uplink.retryMin (%v), got %v", u.RetryMin, u.RetryMax)
	}
}

// absPath checks that p is an absolute path (or empty, if not required).
func (v *validator) absPath(key, p string, required bool) bool {
	switch {
	case p == "" && required:
		v.fail(key, "required")
		return false
	case p == "":
		return true
	case !filepath.IsAbs(p):
		v.fail(key, "must be an absolute path, got %q", p)
		return false
	case strings.ContainsRune(p, 0):
		v.fail(key, "path contains a NUL byte")
		return false
	}
	return true
}

func (v *validator) positive(key string, n ByteSize) bool {
	if n <= 0 {
		v.fail(key, "must be > 0, got %d", int64(n))
		return false
	}
	return true
}

func (v *validator) intRange(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.fail(key, "must be from %d to %d, got %d", lo, hi, n)
	}
}

func (v *validator) duration(key string, d Duration, lo, hi time.Duration) bool {
	if time.Duration(d) < lo || time.Duration(d) > hi {
		v.fail(key, "must be from %v to %v, got %v", lo, hi, d)
		return false
	}
	return true
}

// loopback checks an optional host:port that must be on loopback.
func (v *validator) loopback(key, addr string) bool {
	if addr == "" {
		return true
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.fail(key, "must be host:port such as 127.0.0.1:8080, got %q", addr)
		return false
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		v.fail(key, "invalid port %q", port)
		return false
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		v.fail(key, "%s is not a loopback address (127.0.0.1, ::1 or localhost); the local API and metrics have no authentication", host)
		return false
	}
	return true
}

// isName reports whether s is made of A-Z a-z 0-9 . _ - (and / if slash).
func isName(s string, slash bool) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		case r == '/' && slash:
		default:
			return false
		}
	}
	return s != ""
}

// Problems lists the *FieldErrors in an error from Load, Parse or
// Validate (which join one per problem).
func Problems(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if x := errors.Unwrap(e); x != nil {
			walk(x)
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}
