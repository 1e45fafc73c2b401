package cli

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.yaml.in/yaml/v3"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// testFleetd is a fleetd running in-process for one test, in a temporary
// directory dir: its data in dir/fleetd-data (defaultDataDir), and the
// publisher key pair it trusts in dir/keys.
type testFleetd struct {
	t               *testing.T
	srv             *fleetd.Server
	dir, data, keys string
	// tokenFile is the operator token's file; remote are the flags that
	// reach fleetd as the operator (--server URL --token-file tokenFile).
	tokenFile string
	remote    []string
}

// startFleetd generates a publisher key pair (fleetctl keys generate),
// runs fleetd in-process trusting it, and returns it; it stops when the
// test ends.
func startFleetd(t *testing.T) *testFleetd {
	t.Helper()
	dir := t.TempDir()
	f := &testFleetd{t: t, dir: dir, data: filepath.Join(dir, defaultDataDir), keys: filepath.Join(dir, "keys")}
	wantOK(t, fleetctl(t, nil, "keys", "generate", "--out", f.keys), "keys generate")
	srv, err := fleetd.New(fleetd.Config{
		DataDir:  f.data,
		Registry: fleetd.RegistryConfig{TrustedKeys: []string{filepath.Join(f.keys, "signing.pub")}},
		HTTP:     fleetd.HTTPConfig{Listen: "127.0.0.1:0"},
		Broker:   fleetd.BrokerConfig{Listen: "127.0.0.1:0"},
		Logger:   slog.New(slog.DiscardHandler), Announce: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	run := testenv.Start(srv.Run)
	t.Cleanup(func() {
		if err := run.Stop(time.Minute); err != nil {
			t.Errorf("fleetd: %v", err)
		}
	})
	f.srv = srv
	f.tokenFile = filepath.Join(f.data, operatorTokenRel)
	f.remote = []string{"--server", srv.URL(), "--token-file", f.tokenFile}
	return f
}

// fc runs fleetctl in-process (okCheck as the model check) with f.remote
// appended to args.
func (f *testFleetd) fc(args ...string) result {
	f.t.Helper()
	return fleetctl(f.t, okCheck, append(args, f.remote...)...)
}

// signedDemoBundle builds the demo bundle into dir/demo-0.3.0.bundle,
// signs it with the key fleetd trusts, and returns its path.
func (f *testFleetd) signedDemoBundle() string {
	f.t.Helper()
	file := filepath.Join(f.dir, "demo-0.3.0.bundle")
	wantOK(f.t, fleetctl(f.t, okCheck, "bundle", "build", demoSpec(f.t), "--out", file), "bundle build")
	wantOK(f.t, fleetctl(f.t, nil, "bundle", "sign", "--key", filepath.Join(f.keys, "signing.key"), file), "bundle sign")
	return file
}

// connect is a device going online with its credentials.
func connect(t *testing.T, addr, id, password string) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(id).SetPassword(password).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(10) })
	for kind, m := range map[protocol.Kind]protocol.Message{
		protocol.KindStatus: &protocol.Status{V: 1, DeviceID: id, State: protocol.StateOnline, Session: 1, AgentVersion: "0.1.0"},
		protocol.KindTelemetry: &protocol.TelemetryBatch{V: 1, DeviceID: id, Epoch: "e", Records: []protocol.Record{
			{ID: 1, Kind: "metrics", Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Payload: json.RawMessage(`{"p95Ms":4.1}`)}}},
	} {
		b, _ := protocol.Encode(m)
		topic, _ := protocol.Topic(id, kind)
		if tok := c.Publish(topic, 1, kind.Retained(), b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
}

// TestRemoteCommands drives a running fleetd with fleetctl: bundle push
// and list, enroll, devices list/show/records, assign, in table and JSON
// form, with the server and token from flags, the environment and the
// default data directory.
func TestRemoteCommands(t *testing.T) {
	f := startFleetd(t)
	dir, data, srv, fc, tokenFile := f.dir, f.data, f.srv, f.fc, f.tokenFile

	// A signed bundle.
	file := f.signedDemoBundle()

	r := fc("bundle", "push", file)
	wantOK(t, r, "bundle push")
	if !strings.HasPrefix(r.stdout, "pushed demo@0.3.0: ") || !strings.Contains(r.stdout, "signature verified by fleetd") {
		t.Errorf("push printed %q", r.stdout)
	}
	r = fc("bundle", "push", file, "-o", "json")
	wantOK(t, r, "bundle push again")
	var pushed struct {
		api.Bundle
		Created bool `json:"created"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &pushed); err != nil || pushed.Created || pushed.ID() != "demo@0.3.0" {
		t.Errorf("second push -o json: %+v %v\n%s", pushed, err, r.stdout)
	}
	r = fc("bundle", "list")
	wantOK(t, r, "bundle list")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "demo  ") || !strings.Contains(lines[1], "0.3.0") {
		t.Errorf("bundle list printed %q", r.stdout)
	}
	r = fc("bundle", "list", "demo", "-o", "json")
	wantOK(t, r, "bundle list demo -o json")
	var bl api.BundleList
	if err := json.Unmarshal([]byte(r.stdout), &bl); err != nil || len(bl.Bundles) != 1 || bl.Bundles[0].Version != "0.3.0" {
		t.Errorf("bundle list -o json: %+v %v", bl, err)
	}
	wantExit(t, fc("bundle", "list", "nope"), ExitNotFound, "bundle list nope", `no bundle named "nope" (HTTP 404)`)

	// Enrol two devices; one connects and sends a record.
	enrolFile := filepath.Join(data, enrolTokenRel)
	r = fleetctl(t, nil, "enroll", "cam-1", "--label", "ring=canary", "--server", srv.URL(), "--enrol-token-file", enrolFile, "-o", "json")
	wantOK(t, r, "enroll -o json")
	var e api.Enrolment
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || e.Username != "cam-1" || len(e.Password) < 16 || len(e.Brokers) != 1 {
		t.Fatalf("enroll -o json: %+v %v", e, err)
	}
	r = fleetctl(t, nil, "enroll", "cam-2", "--server", srv.URL(), "--enrol-token-file", enrolFile)
	wantOK(t, r, "enroll")
	if !strings.Contains(r.stdout, "password ") || !strings.Contains(r.stderr, "shown only this once") {
		t.Errorf("enroll printed %q / %q", r.stdout, r.stderr)
	}
	wantFail(t, fleetctl(t, nil, "enroll", "cam-3", "--server", srv.URL(), "--enrol-token-file", tokenFile), "enroll with the operator token", "enrolment token not valid")
	connect(t, srv.MQTTAddr(), "cam-1", e.Password)

	r = fc("devices", "list")
	wantOK(t, r, "devices list")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], "cam-1 ") || !strings.Contains(lines[1], "online") ||
		!strings.Contains(lines[1], "ring=canary") || !strings.Contains(lines[2], "offline") {
		t.Errorf("devices list printed\n%s", r.stdout)
	}
	r = fc("devices", "list", "--selector", "ring=canary", "-o", "json")
	wantOK(t, r, "devices list --selector -o json")
	var dl api.DeviceList
	if err := json.Unmarshal([]byte(r.stdout), &dl); err != nil || len(dl.Devices) != 1 || dl.Devices[0].ID != "cam-1" || dl.Devices[0].Records.Delivered != 1 {
		t.Errorf("devices list --selector ring=canary: %+v %v", dl, err)
	}
	wantFail(t, fc("devices", "list", "--selector", "ring==="), "bad selector", "selector")

	// -o name, yaml and wide.
	if r = fc("devices", "list", "-o", "name"); r.code != 0 || r.stdout != "cam-1\ncam-2\n" {
		t.Errorf("devices list -o name: exit %d, %q", r.code, r.stdout)
	}
	r = fc("devices", "list", "-o", "yaml")
	wantOK(t, r, "devices list -o yaml")
	var yl struct {
		Devices []struct {
			ID     string            `yaml:"id"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"devices"`
	}
	if err := yaml.Unmarshal([]byte(r.stdout), &yl); err != nil || len(yl.Devices) != 2 || yl.Devices[0].ID != "cam-1" || yl.Devices[0].Labels["ring"] != "canary" {
		t.Errorf("devices list -o yaml: %+v %v\n%s", yl, err, r.stdout)
	}
	r = fc("devices", "list", "-o", "wide")
	wantOK(t, r, "devices list -o wide")
	if lines := strings.Split(r.stdout, "\n"); !strings.HasSuffix(strings.TrimSpace(lines[0]), "AGENT  PROVIDER  BUFFERED") || len(lines) < 3 {
		t.Errorf("devices list -o wide:\n%s", r.stdout)
	}

	// Assign, then look at the device.
	r = fc("assign", "cam-1", "demo@0.3.0")
	wantOK(t, r, "assign")
	if !strings.HasPrefix(r.stdout, "cam-1: desired seq 1: install demo@0.3.0 (expires ") {
		t.Errorf("assign printed %q", r.stdout)
	}
	r = fc("assign", "cam-1", "demo@0.3.0", "--rollback", "-o", "json")
	wantOK(t, r, "assign -o json")
	var as api.Assignment
	if err := json.Unmarshal([]byte(r.stdout), &as); err != nil || as.Desired.Seq != 2 || as.Desired.Action != protocol.ActionRollback || !as.Published {
		t.Errorf("assign -o json: %+v %v", as, err)
	}
	wantExit(t, fc("assign", "cam-1", "demo@9.9.9"), ExitNotFound, "assign unknown version", "HTTP 404")
	wantExit(t, fc("assign", "cam-1", "demo"), ExitUsage, "assign without version", "NAME@VERSION")

	r = fc("devices", "show", "cam-1")
	wantOK(t, r, "devices show")
	for _, want := range []string{"id ", "cam-1", "state ", "online (session 1", "desired ", "seq 2: rollback demo@0.3.0", "records ", "1 delivered"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("devices show lacks %q:\n%s", want, r.stdout)
		}
	}
	r = fc("devices", "show", "cam-1", "-o", "json")
	wantOK(t, r, "devices show -o json")
	var dev api.Device
	if err := json.Unmarshal([]byte(r.stdout), &dev); err != nil || dev.ID != "cam-1" || dev.Desired == nil || dev.Desired.Seq != 2 {
		t.Errorf("devices show -o json: %+v %v", dev, err)
	}
	wantExit(t, fc("devices", "show", "ghost"), ExitNotFound, "devices show ghost", "HTTP 404")

	r = fc("devices", "records", "cam-1", "--kind", "metrics")
	wantOK(t, r, "devices records")
	if !strings.Contains(r.stdout, "1 delivered") || !strings.Contains(r.stdout, `{"p95Ms":4.1}`) {
		t.Errorf("devices records printed\n%s", r.stdout)
	}
	wantExit(t, fc("devices", "records", "cam-1", "--since", "yesterday"), ExitUsage, "bad --since", "--since")

	wantOK(t, fc("devices", "delete", "cam-2"), "devices delete")
	wantExit(t, fc("devices", "show", "cam-2"), ExitNotFound, "show deleted", "HTTP 404")

	// Tokens and servers from elsewhere.
	wantExit(t, fleetctl(t, nil, "devices", "list", "--server", srv.URL(), "--token-file", filepath.Join(dir, "none")), ExitNotFound, "missing token file", "reading the token")
	bad := filepath.Join(dir, "bad.token")
	os.WriteFile(bad, []byte("wrong-token-0123456789\n"), 0o600)
	wantFail(t, fleetctl(t, nil, "devices", "list", "--server", srv.URL(), "--token-file", bad), "wrong token", "invalid API token (HTTP 401)")
	wantFail(t, fleetctl(t, nil, "devices", "list", "--server", "ftp://x", "--token-file", tokenFile), "bad server", "not an http(s)")

	t.Run("environment", func(t *testing.T) {
		t.Setenv(envServer, srv.URL())
		t.Setenv(envToken, strings.TrimSpace(string(must(os.ReadFile(tokenFile)))))
		wantOK(t, fleetctl(t, nil, "devices", "list"), "devices list with $FLEETCTL_SERVER and $FLEETCTL_TOKEN")
	})
	t.Run("default token file", func(t *testing.T) {
		t.Setenv(envServer, srv.URL())
		t.Chdir(dir) // where ./fleetd-data/operator.token is
		wantOK(t, fleetctl(t, nil, "devices", "list"), "devices list with ./fleetd-data/operator.token")
		wantOK(t, fleetctl(t, nil, "enroll", "cam-4"), "enroll with ./fleetd-data/enrol.token")
		t.Chdir(t.TempDir())
		wantFail(t, fleetctl(t, nil, "devices", "list"), "no token anywhere", "no operator token")
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
