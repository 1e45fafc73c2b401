package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestEnrollAgentConfig enrols a device with --agent-config and checks
// what it wrote: a configuration the agent's own loader reads, with the
// device's id, labels and uplink, the package's defaults for the rest, a
// password file (0600) whose password the broker accepts, and the pinned
// key; -o json still prints the enrolment.
func TestEnrollAgentConfig(t *testing.T) {
	f := startFleetd(t)
	dir, data, keys, srv := f.dir, f.data, f.keys, f.srv
	enrol := []string{"--server", srv.URL(), "--enrol-token-file", filepath.Join(data, enrolTokenRel)}
	pub := filepath.Join(keys, "signing.pub")
	cfgFile := filepath.Join(dir, "devices", "cam-1", "config.yaml")

	r := fleetctl(t, nil, append([]string{"enroll", "cam-1", "--label", "site=plant-7", "--label", "ring=canary",
		"--agent-config", cfgFile, "--trust-key", pub, "--trust-key", pub}, enrol...)...)
	wantOK(t, r, "enroll --agent-config")
	for _, want := range []string{"device    cam-1", "password  (in " + filepath.Join(dir, "devices", "cam-1", "mqtt.password") + ")",
		"wrote " + cfgFile + ": edge-agent configuration of cam-1 (uplink " + srv.BrokerURLs()[0] + ", data in /var/lib/edge-agent)",
		"install -m 0640 -g edge-agent "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("enroll printed no %q:\n%s", want, r.stdout)
		}
	}
	pw, err := os.ReadFile(filepath.Join(dir, "devices", "cam-1", "mqtt.password"))
	if err != nil {
		t.Fatal(err)
	}
	password := strings.TrimSuffix(string(pw), "\n")
	if len(password) < 16 || strings.Contains(r.stdout+r.stderr, password) {
		t.Errorf("password %q: too short, or printed", password)
	}

	// The agent's loader reads it as the device will.
	c, err := config.Load(cfgFile)
	if err != nil {
		t.Fatalf("the agent refuses the written configuration: %v", err)
	}
	devDir := filepath.Dir(cfgFile)
	if c.DeviceID != "cam-1" || c.Labels["site"] != "plant-7" || c.Labels["ring"] != "canary" || len(c.Labels) != 2 {
		t.Errorf("deviceID %q, labels %v", c.DeviceID, c.Labels)
	}
	u := c.Uplink
	if u.Broker != srv.BrokerURLs()[0] || u.Username != "cam-1" || u.PasswordFile != filepath.Join(devDir, "mqtt.password") {
		t.Errorf("uplink %+v, want broker %s, username cam-1, password file beside the config", u, srv.BrokerURLs()[0])
	}
	if !slices.Equal(c.Trust.PublicKeys, []string{filepath.Join(devDir, "trust", "*.pub")}) {
		t.Errorf("trust.publicKeys %q", c.Trust.PublicKeys)
	}
	pinned, _ := filepath.Glob(c.Trust.PublicKeys[0])
	want, err := bundle.LoadTrustRoot(pub)
	if err != nil {
		t.Fatal(err)
	}
	if len(pinned) != 1 || filepath.Base(pinned[0]) != want.KeyIDs()[0]+".pub" {
		t.Fatalf("pinned keys %q, want one named %s.pub", pinned, want.KeyIDs()[0])
	}
	if got, err := bundle.LoadTrustRoot(pinned[0]); err != nil || !slices.Equal(got.KeyIDs(), want.KeyIDs()) {
		t.Errorf("pinned key %v (%v), want %v", got.KeyIDs(), err, want.KeyIDs())
	}
	for f, mode := range map[string]os.FileMode{"mqtt.password": 0o600, "config.yaml": 0o644, ".": 0o700} {
		if fi, err := os.Stat(filepath.Join(devDir, f)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v (%v), want %v", f, fi.Mode().Perm(), err, mode)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(devDir, ".fleetctl-*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}

	// Everything but what enrolment sets is the package's default.
	def, err := config.Load(filepath.Join(testenv.Root(t), "firmware", "edge-agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.DeviceID, c.Labels, c.Trust, c.Uplink = def.DeviceID, def.Labels, def.Trust, def.Uplink
	if got, want := cptest.JSON(t, c), cptest.JSON(t, def); got != want {
		t.Errorf("settings besides the enrolment's differ from firmware/edge-agent.yaml:\n got %s\nwant %s", got, want)
	}

	// The password is the device's: the broker takes it.
	connect(t, srv.MQTTAddr(), "cam-1", password)

	// -o json prints the enrolment; --data-dir moves the data and WASM cache.
	cfg2 := filepath.Join(dir, "devices", "cam-2", "config.yaml")
	r = fleetctl(t, nil, append([]string{"enroll", "cam-2", "--agent-config", cfg2, "--trust-key", pub, "--data-dir", "/data/edge-agent", "-o", "json"}, enrol...)...)
	wantOK(t, r, "enroll --agent-config -o json")
	var e api.Enrolment
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || e.DeviceID != "cam-2" || e.Password == "" {
		t.Fatalf("-o json printed %q (%v)", r.stdout, err)
	}
	if !strings.Contains(r.stderr, "wrote "+cfg2) {
		t.Errorf("-o json: stderr %q says nothing written", r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "devices", "cam-2", "mqtt.password")); string(b) != e.Password+"\n" {
		t.Errorf("cam-2's password file holds %q, the enrolment says %q", b, e.Password)
	}
	c2, err := config.Load(cfg2)
	if err != nil || c2.DataDir != "/data/edge-agent" || c2.WASM.CacheDir != "/data/edge-agent/cache/wasm" || len(c2.Labels) != 0 {
		t.Errorf("cam-2: dataDir %q, wasm.cacheDir %q, labels %v (%v)", c2.DataDir, c2.WASM.CacheDir, c2.Labels, err)
	}

	// --force replaces another device's files; a refused enrolment leaves
	// them as they were.
	before, _ := os.ReadFile(cfg2)
	wantExit(t, fleetctl(t, nil, append([]string{"enroll", "cam-1", "--agent-config", cfg2, "--trust-key", pub, "--force"}, enrol...)...),
		ExitRefused, "enroll an enrolled device", "already enrolled")
	if after, _ := os.ReadFile(cfg2); string(after) != string(before) {
		t.Error("a refused enrolment changed the existing configuration")
	}
	wantOK(t, fleetctl(t, nil, append([]string{"enroll", "cam-3", "--agent-config", cfg2, "--trust-key", pub, "--force"}, enrol...)...), "enroll --force")
	if c3, err := config.Load(cfg2); err != nil || c3.DeviceID != "cam-3" || c3.Uplink.Username != "cam-3" {
		t.Errorf("after --force: %+v (%v)", c3, err)
	}
}

// TestEnrollAgentConfigRefusals: every bad flag, key or file is refused
// with its reason before fleetd is asked, and leaves nothing behind: the
// same device enrols fine afterwards, and no file or directory appeared.
func TestEnrollAgentConfigRefusals(t *testing.T) {
	f := startFleetd(t)
	dir, data, keys, srv := f.dir, f.data, f.keys, f.srv
	enrolFile := filepath.Join(data, enrolTokenRel)
	enrol := []string{"--server", srv.URL(), "--enrol-token-file", enrolFile}
	pub := filepath.Join(keys, "signing.pub")
	out := filepath.Join(dir, "out")
	cfg := filepath.Join(out, "cam", "config.yaml")

	existing := filepath.Join(dir, "existing")
	if err := os.MkdirAll(filepath.Join(existing, "trust"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(existing, "config.yaml"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(dir, "stray")
	if err := os.MkdirAll(filepath.Join(stray, "trust"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stray, "trust", "old.pub"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	notKey := filepath.Join(dir, "not-a-key.pub")
	if err := os.WriteFile(notKey, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no key", []string{"--agent-config", cfg}, ExitUsage, "--agent-config needs at least one --trust-key"},
		{"missing key", []string{"--agent-config", cfg, "--trust-key", filepath.Join(dir, "nope.pub")}, ExitNotFound, "nope.pub: no such file"},
		{"not a key", []string{"--agent-config", cfg, "--trust-key", notKey}, ExitError, "no PEM public key"},
		{"private key", []string{"--agent-config", cfg, "--trust-key", filepath.Join(keys, "signing.key")}, ExitError, `is not a "PUBLIC KEY"`},
		{"relative data dir", []string{"--agent-config", cfg, "--trust-key", pub, "--data-dir", "data"}, ExitUsage, `--data-dir "data": want an absolute path`},
		{"bad broker", []string{"--agent-config", cfg, "--trust-key", pub, "--broker", "ftp://fleet:21"}, ExitUsage, `uplink.broker: unknown scheme "ftp"`},
		{"bad label", []string{"--agent-config", cfg, "--trust-key", pub, "--label", "site=plant 7"}, ExitUsage, "labels.site: a label value must be"},
		{"directory name", []string{"--agent-config", out + "/", "--trust-key", pub}, ExitUsage, "want a file name"},
		{"password name", []string{"--agent-config", filepath.Join(out, "mqtt.password"), "--trust-key", pub}, ExitUsage, "the password file's"},
		{"existing file", []string{"--agent-config", filepath.Join(existing, "config.yaml"), "--trust-key", pub}, ExitError, "config.yaml already exists: nothing enrolled (give --force"},
		{"existing directory", []string{"--agent-config", existing, "--trust-key", pub, "--force"}, ExitUsage, "exists and is not a regular file"},
		{"other keys", []string{"--agent-config", filepath.Join(stray, "config.yaml"), "--trust-key", pub}, ExitError, "holds other keys (old.pub) that the device would trust too"},
		{"flag without --agent-config", []string{"--trust-key", pub}, ExitUsage, "--trust-key: only with --agent-config"},
		{"force without --agent-config", []string{"--force", "--data-dir", "/x"}, ExitUsage, "--data-dir, --force: only with --agent-config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fleetctl(t, nil, append(append([]string{"enroll", "cam"}, tc.args...), enrol...)...)
			wantExit(t, r, tc.code, tc.name, tc.msg)
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
	// A device id the agent refuses.
	wantExit(t, fleetctl(t, nil, append([]string{"enroll", "cam/1", "--agent-config", cfg, "--trust-key", pub}, enrol...)...),
		ExitUsage, "bad device id", "deviceID: must be 1 to 128 characters")
	// fleetd refuses (a wrong token): what was prepared goes again.
	wantFail(t, fleetctl(t, nil, "enroll", "cam", "--agent-config", cfg, "--trust-key", pub, "--server", srv.URL(), "--enrol-token-file", filepath.Join(data, operatorTokenRel)),
		"wrong token", "enrolment token not valid")

	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("%s exists after refusals (%v)", out, err)
	}
	if b, _ := os.ReadFile(filepath.Join(existing, "config.yaml")); string(b) != "mine\n" {
		t.Errorf("the existing file now holds %q", b)
	}
	if m, _ := filepath.Glob(filepath.Join(existing, "*")); len(m) != 2 {
		t.Errorf("%s holds %q", existing, m)
	}
	if m, _ := filepath.Glob(filepath.Join(stray, "*")); len(m) != 1 {
		t.Errorf("%s holds %q", stray, m)
	}
	// Nothing was enrolled: the id is still free.
	wantOK(t, fleetctl(t, nil, append([]string{"enroll", "cam", "--agent-config", cfg, "--trust-key", pub}, enrol...)...), "enroll after the refusals")
}
