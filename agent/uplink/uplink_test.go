package uplink

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

func TestConnectPublishesOnlineAndReported(t *testing.T) {
	b := startBroker(t)
	f := newFleetd(t, b.URL(), fleetdUser)
	r := newRig(t, testConfig(t, b.URL()))
	u := r.start()
	r.waitConnected()

	online := f.waitStatus("status online", protocol.StateOnline)
	if online.Session == 0 || online.AgentVersion != "0.3.1" || online.Session != u.Stats().Session {
		t.Errorf("online status %+v, uplink session %d", online, u.Stats().Session)
	}
	testenv.Eventually(t, "reported state", func() bool { return len(f.reported()) > 0 })
	rep, _ := f.lastReported()
	if rep.DeviceID != devID || rep.AgentVersion != "0.3.1" || rep.Labels["site"] != "lab" || rep.AppliedSeq != 0 || rep.Provider != "cpu" {
		t.Errorf("reported %+v", rep)
	}

	// Both are retained: a subscriber that comes later gets them at once.
	late := newFleetd(t, b.URL(), viewerUser)
	testenv.Eventually(t, "retained status and reported", func() bool {
		return len(late.messages(protocol.KindStatus)) > 0 && len(late.messages(protocol.KindReported)) > 0
	})
	for _, k := range []protocol.Kind{protocol.KindStatus, protocol.KindReported} {
		if m := late.messages(k)[0]; !m.retained {
			t.Errorf("%s was not retained", k)
		}
	}

	// ReportChanged publishes the agent's new state.
	r.agent.mu.Lock()
	r.agent.active = &protocol.BundleID{Name: "silero-vad", Version: "1.3.2"}
	r.agent.mu.Unlock()
	u.ReportChanged()
	testenv.Eventually(t, "the changed reported state", func() bool {
		rep, _ := f.lastReported()
		return rep.Active != nil && rep.Active.Version == "1.3.2"
	})

	// A clean shutdown publishes offline itself, for the same session.
	r.stop()
	off := f.waitStatus("status offline", protocol.StateOffline)
	if off.Session != online.Session || off.Reason != reasonShutdown {
		t.Errorf("offline status %+v, want session %d reason %q", off, online.Session, reasonShutdown)
	}
	if u.Connected() {
		t.Error("Connected after Run returned")
	}
	if err := u.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := u.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
}

func TestLastWillOnSeveredConnection(t *testing.T) {
	b := startBroker(t)
	f := newFleetd(t, b.URL(), fleetdUser)
	p := newProxy(t, b.Addr())
	r := newRig(t, testConfig(t, p.url()))
	u := r.start()
	r.waitConnected()
	first := f.waitStatus("status online", protocol.StateOnline)

	p.sever()
	will := f.waitStatus("the last will (offline)", protocol.StateOffline)
	if will.Session != first.Session || will.Reason != reasonConnectionLost {
		t.Errorf("will %+v, want session %d reason %q", will, first.Session, reasonConnectionLost)
	}

	// The uplink reconnects by itself, with a higher session.
	again := f.waitStatus("online again", protocol.StateOnline)
	if again.Session <= first.Session {
		t.Errorf("session after reconnect %d, want > %d", again.Session, first.Session)
	}
	testenv.Eventually(t, "the second connection", func() bool { return u.Stats().Connects == 2 })
	if st := u.Stats(); st.ConnectionsLost != 1 {
		t.Errorf("stats %+v, want 1 connection lost and 2 connects", st)
	}
}

func TestReconnectBacksOffWhileBrokerIsDown(t *testing.T) {
	b := startBroker(t)
	p := newProxy(t, b.Addr())
	p.refuse(true)
	r := newRig(t, testConfig(t, p.url()))
	u := r.start()
	testenv.Eventually(t, "a few failed attempts", func() bool { return u.Stats().ConnectFailures >= 3 })
	if u.Connected() {
		t.Fatal("connected through a refusing proxy")
	}
	p.refuse(false)
	r.waitConnected()
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ob, err := outbox.Open(filepath.Join(dir, "ob.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	good := func() Config {
		return Config{DeviceID: devID, Brokers: []string{"tcp://127.0.0.1:1883"}, StateDir: filepath.Join(dir, "state")}
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"device id", func(c *Config) { c.DeviceID = "a/b" }, "DeviceID"},
		{"no broker", func(c *Config) { c.Brokers = nil }, "at least one broker"},
		{"scheme", func(c *Config) { c.Brokers = []string{"http://x:1"} }, "scheme"},
		{"no host", func(c *Config) { c.Brokers = []string{"tcp://"} }, "no host"},
		{"credentials in url", func(c *Config) { c.Brokers = []string{"tcp://u:p@x:1"} }, "credentials"},
		{"state dir", func(c *Config) { c.StateDir = "" }, "StateDir"},
		{"negative", func(c *Config) { c.PublishTimeout = -time.Second }, "PublishTimeout"},
		{"keepalive", func(c *Config) { c.KeepAlive = time.Millisecond }, "KeepAlive"},
		{"backoff", func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }, "MaxBackoff"},
		{"batch", func(c *Config) { c.BatchRecords = protocol.MaxRecords + 1 }, "BatchRecords"},
		{"epoch", func(c *Config) { c.Epoch = "no spaces" }, "Epoch"},
		{"cert without key", func(c *Config) { c.Brokers = []string{"ssl://x:8883"}; c.TLS.CertFile = "c.pem" }, "CertFile and KeyFile"},
		{"tls without tls broker", func(c *Config) { c.TLS.CAFile = caFile }, "no broker URL uses TLS"},
		{"bad ca", func(c *Config) { c.Brokers = []string{"ssl://x:8883"}; c.TLS.CAFile = caFile }, "no PEM certificate"},
		{"missing ca", func(c *Config) { c.Brokers = []string{"ssl://x:8883"}; c.TLS.CAFile = caFile + ".missing" }, "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := good()
			c.mod(&cfg)
			_, err := New(cfg, newTestAgent(), ob, nil)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want ErrConfig naming %q", err, c.want)
			}
		})
	}
	if _, err := New(good(), nil, ob, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("nil agent: %v", err)
	}
	if _, err := New(good(), badAgent{}, ob, nil); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "agentVersion") {
		t.Errorf("agent without a version: %v, want ErrConfig naming agentVersion", err)
	}
	u, err := New(good(), newTestAgent(), ob, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Close without Run is fine, and idempotent.
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
}

type badAgent struct{}

func (badAgent) Apply(context.Context, *protocol.DesiredState, ProgressFunc) error { return nil }
func (badAgent) Reported() protocol.ReportedState                                  { return protocol.ReportedState{} }

func TestBackoffJitter(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		d := b.next()
		if d < w/2 || d > w {
			t.Errorf("attempt %d: %s, want within [%s, %s]", i, d, w/2, w)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %s", d)
	}
}

// TestReconnectWhenBrokerReturns: with a backoff far longer than the test
// may wait, an uplink whose broker went away reconnects as soon as the
// broker listens again, found by the TCP probe; a broker that accepts
// TCP but drops the MQTT connection gets the whole backoff.
func TestReconnectWhenBrokerReturns(t *testing.T) {
	b := startBroker(t)
	cfg := testConfig(t, b.URL())
	cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour
	cfg.ProbeInterval = 20 * time.Millisecond
	r := newRig(t, cfg)
	u := r.start()
	r.waitConnected()

	b.Kill()
	// The broker returns only once a probe found it gone: one that is back
	// before the first probe is indistinguishable from a broker that
	// dropped the device, which gets the whole backoff.
	testenv.Eventually(t, "a probe to find the broker gone", func() bool { return !u.Connected() && u.Stats().ProbesRefused > 0 })
	b.Start()
	testenv.Eventually(t, "the uplink to reconnect (well before its hour of backoff)", u.Connected)
	if st := u.Stats(); st.Connects != 2 || st.ConnectionsLost != 1 {
		t.Errorf("stats %+v, want 2 connects and 1 lost", st)
	}
	if !strings.Contains(r.log.String(), "a broker accepts connections again") {
		t.Errorf("no probe success in the log:\n%s", r.log.String())
	}
}

// TestBackoffWhenBrokerAcceptsTCP: a broker that accepts TCP but not the
// device (here a listener that closes every connection) gets the whole
// backoff: the probes keep finding it up, and the uplink does not try to
// connect again.
func TestBackoffWhenBrokerAcceptsTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	cfg := testConfig(t, "tcp://"+ln.Addr().String())
	cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour
	cfg.ProbeInterval = 5 * time.Millisecond
	r := newRig(t, cfg)
	u := r.start()
	// The connect attempt and then at least five probes, each finding
	// the broker up.
	testenv.Eventually(t, "the probes", func() bool { return u.Stats().ConnectFailures == 1 && accepted.Load() >= 6 })
	if st := u.Stats(); st.ConnectFailures != 1 || st.Connects != 0 || st.ProbesRefused != 0 {
		t.Errorf("stats %+v: want one failed connect, no other attempt, no refused probe", st)
	}
}

func TestReachableAndProbeAddrs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		brokers []string
		want    []string
	}{
		{[]string{"tcp://127.0.0.1:1884", "ssl://localhost", "ws://[::1]/mqtt", "mqtts://localhost", "wss://localhost:9443"},
			[]string{"127.0.0.1:1884", "localhost:8883", "[::1]:80", "localhost:8883", "localhost:9443"}},
		{[]string{"mqtt://127.0.0.1"}, []string{"127.0.0.1:1883"}},
	} {
		if got := probeAddrs(tc.brokers); !slices.Equal(got, tc.want) {
			t.Errorf("probeAddrs(%v) = %v, want %v", tc.brokers, got, tc.want)
		}
	}
	u := &Uplink{cfg: Config{ConnectTimeout: 5 * time.Second}}
	ctx := context.Background()
	u.probeAddrs = []string{closedAddr}
	if u.reachable(ctx) {
		t.Errorf("reachable with only the closed port %s", closedAddr)
	}
	u.probeAddrs = []string{closedAddr, ln.Addr().String()}
	if !u.reachable(ctx) {
		t.Errorf("not reachable with %s listening", ln.Addr())
	}
}

func TestRunFailsWhenOutboxClosed(t *testing.T) {
	b := startBroker(t)
	f := newFleetd(t, b.URL(), fleetdUser)
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "ob.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := New(testConfig(t, b.URL()), newTestAgent(), ob, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	done := make(chan error, 1)
	go func() { done <- u.Run(context.Background()) }()
	testenv.Eventually(t, "the uplink to connect", u.Connected)
	if err := u.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	ob.Close()
	select {
	case err := <-done:
		if !errors.Is(err, outbox.ErrClosed) {
			t.Fatalf("Run: %v, want outbox.ErrClosed", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after its outbox was closed")
	}
	f.waitStatus("status offline", protocol.StateOffline)
}
