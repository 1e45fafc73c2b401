package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/configfile"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

func TestDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default does not validate: %v", err)
	}
	host, _ := os.Hostname()
	if c.DeviceID != host {
		t.Errorf("deviceID %q, want the hostname %q", c.DeviceID, host)
	}
	if c.WASM.CacheDir != "/var/lib/edge-agent/cache/wasm" {
		t.Errorf("wasm.cacheDir %q", c.WASM.CacheDir)
	}
	if _, err := c.TrustKeys(); !errors.Is(err, ErrNoTrust) {
		t.Errorf("TrustKeys without keys: %v, want ErrNoTrust", err)
	}
}

// TestDefaultsMatchPackages keeps the documented defaults equal to those
// of the packages that use them.
func TestDefaultsMatchPackages(t *testing.T) {
	for _, c := range []struct {
		name      string
		ours, pkg int64
	}{
		{"api.maxBodyBytes", DefaultMaxBodyBytes, api.DefaultMaxBodyBytes},
		{"buffer.maxBytes", DefaultBufferMaxBytes, outbox.DefaultMaxBytes},
		{"buffer.maxRecordBytes", DefaultBufferMaxRecordBytes, outbox.DefaultMaxRecordBytes},
		{"install.maxBundleBytes", DefaultMaxBundleBytes, bundle.DefaultLimits().MaxBundleBytes},
		{"install.minFreeBytes", DefaultMinFreeBytes, fetch.DefaultMinFreeBytes},
	} {
		if c.ours != c.pkg {
			t.Errorf("%s defaults to %d here but %d in its package", c.name, c.ours, c.pkg)
		}
	}
}

// golden renders c for comparison, with dir (machine-specific) replaced.
func golden(t *testing.T, c *Config, dir string) []byte {
	t.Helper()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(bytes.ReplaceAll(b, []byte(dir), []byte("$CONFIG_DIR")), '\n')
}

func TestLoadFull(t *testing.T) {
	c, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	got := golden(t, c, dir)
	testenv.Golden(t, "testdata/full.golden.json", got)
	// Spot checks that do not rely on the golden file being right.
	if c.Trust.PublicKeys[1] != filepath.Join(dir, "keys/backup-publisher.pub") {
		t.Errorf("relative key path resolved to %q", c.Trust.PublicKeys[1])
	}
	if c.API.MaxBodyBytes != 8<<20 || c.API.SocketMode != 0o660 || time.Duration(c.WASM.Timeout) != 2*time.Second || c.Install.MaxBundleBytes != 2<<30 {
		t.Errorf("typed values: %+v %+v %+v", c.API, c.WASM, c.Install)
	}
	if keys, err := c.TrustKeys(); err != nil || len(keys) != 2 {
		t.Errorf("TrustKeys: %v %v", keys, err)
	}
}

// TestFullExampleSetsEverything keeps the example complete: every setting
// of Config appears in testdata/full.yaml.
func TestFullExampleSetsEverything(t *testing.T) {
	b, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src, errs := configfile.Decode(b, defaults(), options("testdata/full.yaml"))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, k := range configfile.Keys(defaults(), "yaml") {
		if !k.Section && !src.Has(k.Path) {
			t.Errorf("testdata/full.yaml does not set %s", k.Path)
		}
	}
}

func TestLoadEmptyIsDefault(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"", "# nothing\n", "---\n", "~\n"} {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			t.Fatalf("%q: %v", content, err)
		}
		if got, want := golden(t, c, dir), golden(t, Default(), dir); !bytes.Equal(got, want) {
			t.Errorf("%q: got\n%s\nwant\n%s", content, got, want)
		}
	}
}

func TestLoadDerived(t *testing.T) {
	c, err := Parse([]byte("dataDir: state\ndeviceID: dev-1\n"), "/srv/agent")
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/agent/state" || c.WASM.CacheDir != "/srv/agent/state/cache/wasm" || c.DeviceID != "dev-1" {
		t.Errorf("dataDir %q, wasm.cacheDir %q, deviceID %q", c.DataDir, c.WASM.CacheDir, c.DeviceID)
	}
	if c.API.Socket != DefaultSocket || c.Buffer.MaxBytes != DefaultBufferMaxBytes {
		t.Errorf("defaults lost: %+v %+v", c.API, c.Buffer)
	}
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // each a line of the error
	}{
		{"unknown key", "buffer:\n  maxByte: 10\n", []string{`config: c.yaml:2:3: buffer.maxByte: unknown key (known here: maxBytes, maxRecordBytes, predictionSampleRate)`}},
		{"case", "deviceId: x\n", []string{`config: c.yaml:1:1: deviceId: unknown key; did you mean "deviceID"? (keys are case-sensitive)`}},
		{"unknown section", "mqtt:\n  broker: x\n", []string{`config: c.yaml:1:1: mqtt: unknown key (known here: deviceID, labels, dataDir, logLevel, trust, api, metrics, shadow, buffer, runtime, wasm, install, uplink)`}},
		{"negative size", "buffer:\n  maxBytes: -1\n", []string{`config: c.yaml:2:13: buffer.maxBytes: must be > 0, got -1`}},
		{"bad size", "api:\n  maxBodyBytes: lots\n", []string{`config: c.yaml:2:17: api.maxBodyBytes: must be a whole number of bytes with an optional unit`}},
		{"record above total", "buffer:\n  maxBytes: 1MiB\n  maxRecordBytes: 2MiB\n", []string{`config: c.yaml:3:19: buffer.maxRecordBytes: 2MiB is more than buffer.maxBytes (1MiB)`}},
		{"sample rate", "buffer:\n  predictionSampleRate: 1.5\n", []string{`config: c.yaml:2:25: buffer.predictionSampleRate: must be from 0 to 1, got 1.5`}},
		{"sample rate nan", "buffer:\n  predictionSampleRate: .nan\n", []string{`buffer.predictionSampleRate: must be from 0 to 1, got NaN`}},
		{"sample rate string", "buffer:\n  predictionSampleRate: often\n", []string{`config: c.yaml:2:25: buffer.predictionSampleRate: must be a number, got "often"`}},
		{"int type", "runtime:\n  intraOpThreads: two\n", []string{`config: c.yaml:2:19: runtime.intraOpThreads: must be an integer, got "two"`}},
		{"int float", "runtime:\n  intraOpThreads: 1.5\n", []string{`runtime.intraOpThreads: must be an integer, got 1.5`}},
		{"threads range", "runtime:\n  interOpThreads: -1\n", []string{`config: c.yaml:2:19: runtime.interOpThreads: must be from 0 to 256, got -1`}},
		{"provider", "runtime:\n  executionProviders: [cuda, tpu, cuda]\n", []string{`runtime.executionProviders[1]: unknown execution provider "tpu"`, `runtime.executionProviders[2]: "cuda" is listed twice`}},
		{"list type", "trust:\n  publicKeys: /etc/key.pub\n", []string{`config: c.yaml:2:15: trust.publicKeys: must be a list, got "/etc/key.pub"`}},
		{"list element", "trust:\n  publicKeys: [/a.pub, {x: 1}]\n", []string{`trust.publicKeys[1]: must be a string, got a mapping`}},
		{"duplicate key", "logLevel: info\nlogLevel: debug\n", []string{`config: c.yaml:2:1: logLevel: set twice (first on line 1)`}},
		{"log level", "logLevel: verbose\n", []string{`config: c.yaml:1:11: logLevel: must be debug, info, warn or error, got "verbose"`}},
		{"device id", "deviceID: 'my device/1'\n", []string{`deviceID: must be 1 to 128 characters of A-Z a-z 0-9 . _ -, got "my device/1"`}},
		{"label", "labels:\n  'bad key': x\n  ok: 'bad value'\n", []string{`labels.bad key: a label key must be`, `labels.ok: a label value must be`}},
		{"label not string", "labels:\n  site: [a]\n", []string{`config: c.yaml:2:9: labels.site: must be a string, got a list`}},
		{"section type", "api: /run/x.sock\n", []string{`config: c.yaml:1:6: api: must be a mapping of settings (key: value), got "/run/x.sock"`}},
		{"tcp not loopback", "api:\n  tcp: 0.0.0.0:8080\n", []string{`config: c.yaml:2:8: api.tcp: 0.0.0.0 is not a loopback address`}},
		{"tcp port", "api:\n  tcp: 127.0.0.1:http\n", []string{`api.tcp: invalid port "http"`}},
		{"metrics not loopback", "metrics:\n  listen: ':9101'\n", []string{`metrics.listen:  is not a loopback address`}},
		{"metrics same as api", "api:\n  tcp: 127.0.0.1:8080\nmetrics:\n  listen: 127.0.0.1:8080\n", []string{`metrics.listen: 127.0.0.1:8080 is also api.tcp`}},
		{"socket mode", "api:\n  socketMode: '0999'\n", []string{`api.socketMode: must be octal permissions from 0000 to 0777`}},
		{"socket mode unusable", "api:\n  socketMode: '0444'\n", []string{`api.socketMode: 0444 lets nobody connect`}},
		{"socket path", "api:\n  socket: /" + strings.Repeat("x", 120) + "\n", []string{`api.socket: path is 121 bytes long; a unix socket path must be at most 107`}},
		{"grpc socket same as api", "api:\n  socket: /run/a.sock\n  grpcSocket: /run/a.sock\n", []string{`config: c.yaml:3:15: api.grpcSocket: /run/a.sock is also api.socket`}},
		{"grpc socket path", "api:\n  grpcSocket: /" + strings.Repeat("x", 120) + "\n", []string{`api.grpcSocket: path is 121 bytes long`}},
		{"grpc listen without tls", "api:\n  grpcListen: 0.0.0.0:8081\n", []string{`api.grpcTLS.cert: required with api.grpcListen`, `api.grpcTLS.key: required with api.grpcListen`, `api.grpcTLS.clientCA: required with api.grpcListen`}},
		{"grpc listen address", "api:\n  grpcListen: grpc.example:8081\n  grpcTLS: {cert: /c.pem, key: /k.pem, clientCA: /ca.pem}\n", []string{`api.grpcListen: host "grpc.example" is not an IP address or localhost`}},
		{"grpc listen port", "api:\n  grpcListen: ':0'\n  grpcTLS: {cert: /c.pem, key: /k.pem, clientCA: /ca.pem}\n", []string{`api.grpcListen: invalid port "0"`}},
		{"grpc listen same as api.tcp", "api:\n  tcp: 127.0.0.1:8080\n  grpcListen: 127.0.0.1:8080\n  grpcTLS: {cert: /c.pem, key: /k.pem, clientCA: /ca.pem}\n", []string{`api.grpcListen: 127.0.0.1:8080 is also api.tcp or metrics.listen`}},
		{"grpc tls without listen", "api:\n  grpcTLS:\n    clientCA: /ca.pem\n", []string{`config: c.yaml:3:15: api.grpcTLS.clientCA: set without api.grpcListen`}},
		{"wasm timeout", "wasm:\n  timeout: 5\n", []string{`config: c.yaml:2:12: wasm.timeout: must be a duration with a unit such as "2s" or "500ms", got "5"`}},
		{"wasm timeout range", "wasm:\n  timeout: 0s\n  memoryLimitMiB: 0\n", []string{`wasm.memoryLimitMiB: must be from 1 to 4096, got 0`, `wasm.timeout: must be from 1ms to 10m0s, got 0s`}},
		{"metrics interval range", "metrics:\n  interval: 100ms\n  driftWindow: 48h\n", []string{`metrics.interval: must be from 1s to 1h0m0s, got 100ms`, `metrics.driftWindow: must be from 1s to 24h0m0s, got 48h0m0s`}},
		{"shadow", "shadow:\n  sampleRate: 2\n  window: 0s\n  queue: 0\n", []string{`config: c.yaml:2:15: shadow.sampleRate: must be from 0 to 1, got 2`, `config: c.yaml:3:11: shadow.window: must be from 1s to 24h0m0s, got 0s`, `config: c.yaml:4:10: shadow.queue: must be from 1 to 65536, got 0`}},
		{"install", "install:\n  maxBundleBytes: 0\n  minFreeBytes: -5\n", []string{`install.maxBundleBytes: must be > 0, got 0`, `install.minFreeBytes: must be >= 0, got -5`}},
		{"uplink without broker", "uplink:\n  username: u\n  tls:\n    ca: /ca.pem\n", []string{`uplink.username: set without uplink.broker`, `uplink.tls.ca: set without uplink.broker`}},
		{"uplink scheme", "uplink:\n  broker: http://x:1883\n", []string{`uplink.broker: unknown scheme "http"`}},
		{"uplink url", "uplink:\n  broker: broker.local\n", []string{`uplink.broker: must be a URL such as mqtts://broker.example.com:8883`}},
		{"uplink credentials", "uplink:\n  broker: mqtts://u:p@x:8883\n", []string{`uplink.broker: credentials belong in uplink.username and uplink.passwordFile`}},
		{"uplink plain tls", "uplink:\n  broker: mqtt://x:1883\n  tls:\n    ca: /ca.pem\n", []string{`uplink.tls.ca: the broker mqtt://x:1883 does not use TLS`}},
		{"uplink cert without key", "uplink:\n  broker: mqtts://x:8883\n  tls:\n    cert: /c.pem\n", []string{`uplink.tls: cert and key go together`}},
		{"uplink password without user", "uplink:\n  broker: mqtts://x:8883\n  passwordFile: /p\n", []string{`uplink.passwordFile: requires uplink.username`}},
		{"uplink keepalive", "uplink:\n  keepAlive: 1500ms\n", []string{`uplink.keepAlive: must be whole seconds`}},
		{"uplink keepalive range", "uplink:\n  keepAlive: 24h\n", []string{`uplink.keepAlive: must be from 1s to 18h12m15s, got 24h0m0s`}},
		{"uplink retry order", "uplink:\n  retryMin: 1m\n  retryMax: 30s\n", []string{`uplink.retryMax: must be at least uplink.retryMin (1m0s), got 30s`}},
		{"uplink retry range", "uplink:\n  retryMin: 0s\n  retryMax: 48h\n", []string{`uplink.retryMin: must be from 1ms to 24h0m0s, got 0s`, `uplink.retryMax: must be from 1ms to 24h0m0s, got 48h0m0s`}},
		{"anchor", "api: &a\n  tcp: 127.0.0.1:1\nmetrics: *a\n", []string{`YAML anchors and aliases are not supported`}},
		{"two documents", "logLevel: info\n---\nlogLevel: debug\n", []string{`config: c.yaml:2:1: more than one YAML document`}},
		{"not a mapping", "- a\n- b\n", []string{`config: c.yaml:1:1: the top level must be a mapping of settings`}},
		{"syntax", "api:\n  tcp: [\n", []string{`config: c.yaml:2: did not find expected node content`}},
		{"tabs", "api:\n\ttcp: x\n", []string{`config: c.yaml:2: found character that cannot start any token`}},
		{"everything at once", "buffer:\n  maxBytes: -1\nlogLevel: loud\nbogus: 1\n", []string{`config: c.yaml:4:1: bogus: unknown key`, `config: c.yaml:3:11: logLevel: must be debug`, `config: c.yaml:2:13: buffer.maxBytes: must be > 0, got -1`}},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "c.yaml")
			if err := os.WriteFile(p, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil {
				t.Fatal("loaded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			msg := strings.ReplaceAll(err.Error(), p, "c.yaml")
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", msg, w)
				}
			}
			if n := len(Problems(err)); n < len(tt.want) {
				t.Errorf("%d problems reported, want at least %d", n, len(tt.want))
			}
		})
	}
}

// TestReportsEveryProblem checks that one Load names all problems of a
// file, not just the first.
func TestReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte("buffer:\n  maxBytes: -1\nlogLevel: loud\napi:\n  tcp: 10.0.0.1:80\n"), "/etc")
	var keys []string
	for _, p := range Problems(err) {
		keys = append(keys, p.Key)
	}
	if got := strings.Join(keys, " "); got != "logLevel api.tcp buffer.maxBytes" {
		t.Errorf("problems %q\n%v", got, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestLoadTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, bytes.Repeat([]byte("# padding\n"), MaxFileBytes/10+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "file larger than") {
		t.Errorf("Load of a huge file: %v", err)
	}
}

// TestValidateBuiltInCode checks Validate on a Config assembled in code,
// with no file or lines to name.
func TestValidateBuiltInCode(t *testing.T) {
	c := Default()
	c.DataDir = "relative/dir"
	c.Buffer.MaxBytes = -1
	err := c.Validate()
	want := "config: dataDir: must be an absolute path, got \"relative/dir\"\nconfig: buffer.maxBytes: must be > 0, got -1"
	if err == nil || err.Error() != want {
		t.Errorf("Validate:\n%v\nwant\n%s", err, want)
	}
}

func FuzzLoad(f *testing.F) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte(""))
	f.Add([]byte("buffer:\n  maxBytes: -1\n"))
	f.Add([]byte("labels: {a: b, c: ''}\napi: {socketMode: 600, maxBodyBytes: 1 KB}\n"))
	f.Add([]byte("uplink:\n  broker: wss://h/mqtt\n  keepAlive: 1m\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "/etc/edge-agent")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if len(Problems(err)) == 0 {
				t.Fatalf("error without a FieldError: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config Validate refuses: %v", err)
		}
		// What was accepted survives a round trip through YAML.
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := Parse(out, "/etc/edge-agent")
		if err != nil {
			t.Fatalf("re-parsing %q: %v\nfrom %q", out, err, data)
		}
		out2, _ := yaml.Marshal(c2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip differs:\n%s\n%s", out, out2)
		}
	})
}
