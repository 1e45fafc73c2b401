package fleetd_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
)

func TestExampleConfigs(t *testing.T) {
	for _, name := range []string{"fleetd.yaml", "external.yaml"} {
		c, err := fleetd.LoadConfig(filepath.Join("testdata", name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	c, _ := fleetd.LoadConfig("testdata/external.yaml")
	abs, _ := filepath.Abs("testdata")
	if c.DataDir != filepath.Join(abs, "data") || c.Registry.S3.CredentialsFile != filepath.Join(abs, "s3.env") ||
		c.Broker.PasswordFile != filepath.Join(abs, "mosquitto/_fleetd-1.password") || c.Broker.Mosquitto.PIDFile != "/run/mosquitto/mosquitto.pid" {
		t.Errorf("relative paths not resolved against the file's directory: %+v", c)
	}
	if time.Duration(c.Desired.RefreshAfter) != 24*time.Hour {
		t.Errorf("refreshAfter 1d = %s", c.Desired.RefreshAfter)
	}
	full, _ := fleetd.LoadConfig("testdata/fleetd.yaml")
	if full.HTTP.MaxBundleBytes != 2<<30 || full.Auth.EnrolTokenFiles["field"] != "/etc/fleetd/enrol-field.token" || full.Broker.TLS == nil || !strings.HasSuffix(full.Registry.TrustedKeys[0], "release.pub") {
		t.Errorf("fleetd.yaml decoded as %+v", full)
	}
}

func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want string // in the error
	}{
		{"htp:\n  listen: x\n", "config.yaml:1:1: htp: unknown key"},
		{"http:\n  Listen: x\n", `http.Listen: unknown key; did you mean "listen"?`},
		{"http:\n  listen: 1\n  listen: 2\n", "http.listen: set twice"},
		{"http: 8080\n", "http: must be a mapping"},
		{"auth:\n  allowReenrol: maybe\n", "auth.allowReenrol: must be a boolean"},
		{"records:\n  maxPerDevice: lots\n", "records.maxPerDevice: must be a whole number"},
		{"desired:\n  lifetime: a week\n", `config.yaml:2:13: desired.lifetime: must be a duration with a unit`},
		{"http:\n  maxBodyBytes: 1 PB\n", "config.yaml:2:17: http.maxBodyBytes: must be a whole number of bytes"},
		{"registry:\n  trustedKeys: key.pub\n", "registry.trustedKeys: must be a list"},
		{"a: 1\n---\nb: 2\n", "more than one YAML document"},
		{"- 1\n", "the top level must be a mapping"},
		{"http:\n  listen: &a x\n  publicURL: *a\n", "anchors"},
		{"http: [\n", "config.yaml"},
	} {
		_, err := fleetd.ParseConfig([]byte(tc.yaml), "config.yaml", "/etc")
		if !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want ErrConfig containing %q", tc.yaml, err, tc.want)
		}
	}
}

func TestConfigInvalid(t *testing.T) {
	for _, tc := range []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"http.listen": "8080"}, "http.listen"},
		{map[string]string{"http.publicURL": "ftp://x"}, "http.publicURL"},
		{map[string]string{"http.certFile": "/c"}, "http.certFile"},
		{map[string]string{"broker.listen": "nowhere"}, "broker.listen"},
		{map[string]string{"broker.external": "http://x:1883", "broker.passwordFile": "/p"}, "broker.external"},
		{map[string]string{"broker.external": "tcp://x:1883"}, "broker.passwordFile"},
		{map[string]string{"broker.username": "fleetd"}, "broker.username"},
		{map[string]string{"broker.clientID": "other"}, "broker.clientID"},
		{map[string]string{"broker.mosquitto.passwordFile": "/p"}, "broker.mosquitto"},
		{map[string]string{"registry.type": "ftp"}, "registry.type"},
		{map[string]string{"registry.type": "s3"}, "registry.s3.endpoint"},
		{map[string]string{"registry.type": "s3", "registry.s3.endpoint": "h:9000", "registry.s3.bucket": "b",
			"registry.s3.credentialsFile": "/c", "desired.lifetime": "8d"}, "desired.lifetime: at most 7d"},
		{map[string]string{"registry.s3.bucket": "b"}, "registry.s3"},
		{map[string]string{"registry.urlExpiry": "1h"}, "registry.urlExpiry"},
		{map[string]string{"desired.lifetime": "30s"}, "desired.lifetime"},
		{map[string]string{"desired.refreshAfter": "8d"}, "desired.refreshAfter"},
		{map[string]string{"records.maxPerDevice": "-1"}, "records.maxPerDevice"},
		{map[string]string{"records.maxAge": "1s"}, "records.maxAge"},
		{map[string]string{"http.maxBodyBytes": "-1"}, "http.maxBodyBytes: must be at least 1KiB, got -1"},
		{map[string]string{"auth.enrolTokenFiles.Bad Name": "/t"}, "auth.enrolTokenFiles.Bad Name"},
	} {
		var c fleetd.Config
		for k, v := range tc.set {
			if err := c.Set(k, v); err != nil {
				t.Fatalf("Set(%s, %s): %v", k, v, err)
			}
		}
		err := c.Validate()
		if !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: Validate = %v, want ErrConfig naming %q", tc.set, err, tc.want)
		}
		// New refuses the same, before touching anything.
		if _, err := fleetd.New(c); !errors.Is(err, fleetd.ErrConfig) {
			t.Errorf("%v: New = %v", tc.set, err)
		}
	}
	var c fleetd.Config
	if err := c.Validate(); err != nil {
		t.Errorf("the zero Config (all defaults) is invalid: %v", err)
	}
}

// TestConfigValidateNamesLines: Validate's problems with keys of a file
// name the file, line and column, until a flag sets the key.
func TestConfigValidateNamesLines(t *testing.T) {
	c, err := fleetd.ParseConfig([]byte("http:\n  listen: nowhere\nrecords:\n  maxAge: 1s\ndesired:\n  lifetime: 30s\n"), "fleetd.yaml", "/etc")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	for _, want := range []string{
		`fleetd: invalid configuration: fleetd.yaml:2:11: http.listen: "nowhere" is not host:port`,
		`fleetd: invalid configuration: fleetd.yaml:4:11: records.maxAge: must be at least 1m, got 1s`,
		`fleetd: invalid configuration: fleetd.yaml:6:13: desired.lifetime: must be at least 1m, got 30s`,
		// Not in the file: placed at its section.
		`fleetd: invalid configuration: fleetd.yaml:5:1: desired.refreshAfter: must be at least 1s and below desired.lifetime`,
	} {
		if !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate:\n%v\nlacks\n%s", err, want)
		}
	}
	if err := c.Set("http.listen", "elsewhere"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); !strings.Contains(err.Error(), `fleetd: invalid configuration: http.listen: "elsewhere" is not host:port`) {
		t.Errorf("after Set, Validate still places http.listen in the file:\n%v", err)
	}
}

func TestConfigSet(t *testing.T) {
	var c fleetd.Config
	for k, v := range map[string]string{
		"dataDir": "/d", "http.maxBundleBytes": "512MiB", "desired.lifetime": "3d", "auth.allowReenrol": "true",
		"records.maxPerDevice": "5", "registry.trustedKeys": "a.pub, b.pub", "auth.enrolTokenFiles.ci": "/ci.token",
		"broker.tls.listen": ":8883",
	} {
		if err := c.Set(k, v); err != nil {
			t.Fatalf("Set(%s): %v", k, err)
		}
	}
	if c.DataDir != "/d" || c.HTTP.MaxBundleBytes != 512<<20 || time.Duration(c.Desired.Lifetime) != 72*time.Hour || !c.Auth.AllowReenrol ||
		c.Records.MaxPerDevice != 5 || len(c.Registry.TrustedKeys) != 2 || c.Auth.EnrolTokenFiles["ci"] != "/ci.token" || c.Broker.TLS.Listen != ":8883" {
		t.Errorf("after Set: %+v", c)
	}
	for k, want := range map[string]string{
		"http.lisen":            "unknown key",
		"http":                  "is a section",
		"records.maxPerDevice":  "whole number",
		"auth.allowReenrol":     "boolean",
		"desired.lifetime":      "must be a duration",
		"http.listen.port":      "unknown key",
		"http.maxBodyBytes":     "must be a whole number of bytes",
		"registry.s3.secure.no": "unknown key",
	} {
		if err := c.Set(k, "x y"); !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), strings.Split(k, ".")[0]) {
			t.Errorf("Set(%s) = %v, want ErrConfig with %q", k, err, want)
		}
	}
}

// TestConfiguredSecrets checks configured token files: used as they are,
// never generated; a missing or short one refused naming its key.
func TestConfiguredSecrets(t *testing.T) {
	dir := t.TempDir()
	op, en := filepath.Join(dir, "op.token"), filepath.Join(dir, "en.token")
	os.WriteFile(op, []byte("operator-secret-0123456789\n"), 0o600)
	os.WriteFile(en, []byte("enrol-secret-0123456789\n"), 0o600)
	cfg := baseConfig(t)
	cfg.Auth.OperatorTokenFile = op
	cfg.Auth.EnrolTokenFiles = map[string]string{"factory": en}
	srv, err := fleetd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if _, err := os.Stat(filepath.Join(cfg.DataDir, fleetd.OperatorTokenFile)); err == nil {
		t.Errorf("an operator token was generated although one is configured")
	}
	cfg.Auth.OperatorTokenFile = filepath.Join(dir, "missing.token")
	if _, err := fleetd.New(cfg); !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), "auth.operatorTokenFile") {
		t.Errorf("missing configured token: %v", err)
	}
	os.WriteFile(op, []byte("short\n"), 0o600)
	cfg.Auth.OperatorTokenFile = op
	if _, err := fleetd.New(cfg); !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("short token: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, name := range []string{"fleetd.yaml", "external.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("http: {listen: [1, 2]}\n"))
	f.Add([]byte("auth:\n  enrolTokenFiles: {a: {b: c}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := fleetd.ParseConfig(b, "fuzz.yaml", "/")
		if err != nil {
			if !errors.Is(err, fleetd.ErrConfig) {
				t.Fatalf("error does not wrap ErrConfig: %v", err)
			}
			return
		}
		_ = c.Validate()
	})
}
