package fleetd_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// wait bounds every wait for something asynchronous to happen.
const wait = 20 * time.Second

// testServer is fleetd running in-process on loopback with random ports.
type testServer struct {
	t        testing.TB
	cfg      fleetd.Config
	srv      *fleetd.Server
	run      *testenv.Running
	logs     *testenv.SyncBuffer
	api      *client.Client // with the operator token
	enrolTok string
}

// baseConfig is a loopback configuration in a fresh data directory.
func baseConfig(t testing.TB) fleetd.Config {
	return fleetd.Config{
		DataDir:  t.TempDir(),
		HTTP:     fleetd.HTTPConfig{Listen: "127.0.0.1:0"},
		Broker:   fleetd.BrokerConfig{Listen: "127.0.0.1:0"},
		Registry: fleetd.RegistryConfig{TrustedKeys: []string{testPublisher(t).publicKey()}},
	}
}

// startServer starts fleetd with cfg and stops it when the test ends.
func startServer(t testing.TB, cfg fleetd.Config) *testServer {
	t.Helper()
	ts := &testServer{t: t, cfg: cfg, logs: &testenv.SyncBuffer{Max: 4 << 20}}
	ts.start()
	t.Cleanup(func() {
		ts.stop()
		if t.Failed() {
			t.Logf("fleetd log:\n%s", ts.logs.String())
		}
	})
	return ts
}

func (ts *testServer) start() {
	t := ts.t
	t.Helper()
	cfg := ts.cfg
	cfg.Logger = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Announce = io.Discard
	srv, err := fleetd.New(cfg)
	if err != nil {
		t.Fatalf("fleetd.New: %v\n%s", err, ts.logs.String())
	}
	ts.srv = srv
	ts.run = testenv.Start(srv.Run)
	tok := cptest.ReadFile(t, filepath.Join(cfg.DataDir, fleetd.OperatorTokenFile))
	if ts.api, err = client.New(srv.URL(), strings.TrimSpace(tok), nil); err != nil {
		t.Fatal(err)
	}
	ts.enrolTok = strings.TrimSpace(cptest.ReadFile(t, filepath.Join(cfg.DataDir, fleetd.EnrolTokenFile)))
}

// stop stops fleetd (idempotent).
func (ts *testServer) stop() {
	if ts.srv == nil {
		return
	}
	if err := ts.run.Stop(wait); err != nil {
		ts.t.Error(err)
	}
	if err := ts.srv.Close(); err != nil {
		ts.t.Errorf("second Close: %v", err)
	}
	ts.srv = nil
}

// restart stops fleetd and starts it again on the same data directory
// (on new ports).
func (ts *testServer) restart() {
	ts.t.Helper()
	ts.stop()
	ts.start()
}

// enroll enrols a device and returns its password.
func (ts *testServer) enroll(t testing.TB, id string, labels map[string]string) string {
	t.Helper()
	e, err := ts.api.Enroll(context.Background(), ts.enrolTok, id, labels)
	if err != nil {
		t.Fatalf("Enroll %s: %v", id, err)
	}
	return e.Password
}

// push builds name@version with pub (see publisher.build), pushes it to
// fleetd, and returns the bundle's path.
func (ts *testServer) push(t testing.TB, pub *publisher, name, version string, size int) string {
	t.Helper()
	bpath := pub.build(t, name, version, size)
	if _, _, err := ts.api.Push(context.Background(), bpath, bpath+".sig"); err != nil {
		t.Fatal(err)
	}
	return bpath
}

// device is a simulated device: a real paho MQTT 3.1.1 client with its
// enrolled credentials, as the agent's uplink connects.
type device struct {
	t       testing.TB
	id      string
	c       mqtt.Client
	conn    net.Conn // the raw connection, to cut it (last will)
	desired chan *protocol.DesiredState
	session uint64
}

// dialDevice connects device id to the broker at addr ("host:port") with
// its last will set to offline.
func dialDevice(t testing.TB, addr, id, password string) (*device, error) {
	d := &device{t: t, id: id, desired: make(chan *protocol.DesiredState, 16), session: uint64(time.Now().UnixNano())}
	will, _ := protocol.Encode(&protocol.Status{V: 1, DeviceID: id, State: protocol.StateOffline, Session: d.session, Reason: "connection-lost"})
	statusTopic, _ := protocol.Topic(id, protocol.KindStatus)
	opts := mqtt.NewClientOptions().AddBroker("tcp://"+addr).SetClientID(id).SetUsername(id).SetPassword(password).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5*time.Second).
		SetWriteTimeout(10*time.Second).SetBinaryWill(statusTopic, will, 1, true).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			d.conn = c
			return c, err
		})
	d.c = mqtt.NewClient(opts)
	tok := d.c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: timeout", id)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	return d, nil
}

func mustDialDevice(t testing.TB, addr, id, password string) *device {
	t.Helper()
	d, err := dialDevice(t, addr, id, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	return d
}

func (d *device) close() {
	if d.c.IsConnectionOpen() {
		d.c.Disconnect(100)
	}
}

// cut drops the connection without a DISCONNECT, so the broker publishes
// the last will.
func (d *device) cut() { d.conn.Close() }

// publish publishes payload on the device's topic of kind at QoS 1 and
// waits for the PUBACK.
func (d *device) publish(kind protocol.Kind, payload []byte) error {
	topic, err := protocol.Topic(d.id, kind)
	if err != nil {
		return err
	}
	tok := d.c.Publish(topic, 1, kind.Retained(), payload)
	if !tok.WaitTimeout(wait) {
		return fmt.Errorf("publish %s: no PUBACK in time", topic)
	}
	return tok.Error()
}

func (d *device) mustPublish(kind protocol.Kind, msg protocol.Message) {
	d.t.Helper()
	b, err := protocol.Encode(msg)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.publish(kind, b); err != nil {
		d.t.Fatal(err)
	}
}

func (d *device) online() {
	d.t.Helper()
	d.mustPublish(protocol.KindStatus, &protocol.Status{V: 1, DeviceID: d.id, State: protocol.StateOnline, Session: d.session,
		Time: time.Now().UTC(), AgentVersion: "0.1.0"})
}

func (d *device) report(appliedSeq uint64, labels map[string]string) {
	d.t.Helper()
	d.mustPublish(protocol.KindReported, &protocol.ReportedState{V: 1, DeviceID: d.id, Time: time.Now().UTC(),
		AgentVersion: "0.1.0", Labels: labels, AppliedSeq: appliedSeq, Provider: "cpu"})
}

// subscribeDesired subscribes to the device's desired topic; decoded
// desired states arrive on d.desired.
func (d *device) subscribeDesired() {
	d.t.Helper()
	topic, _ := protocol.Topic(d.id, protocol.KindDesired)
	tok := d.c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		ds, err := protocol.DecodeDesired(m.Payload())
		if err != nil {
			d.t.Errorf("device %s: bad desired state: %v", d.id, err)
			return
		}
		d.desired <- ds
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		d.t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
}

// nextDesired waits for a desired state with seq > after.
func (d *device) nextDesired(after uint64) *protocol.DesiredState {
	d.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case ds := <-d.desired:
			if ds.Seq > after {
				return ds
			}
		case <-timeout:
			d.t.Fatalf("device %s: no desired state above seq %d", d.id, after)
			return nil
		}
	}
}

// batch is a telemetry batch of records from..to of epoch.
func batch(id, epoch string, from, to uint64) *protocol.TelemetryBatch {
	b := &protocol.TelemetryBatch{V: 1, DeviceID: id, Epoch: epoch}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for n := from; n <= to; n++ {
		b.Records = append(b.Records, protocol.Record{ID: n, Kind: protocol.RecordPrediction,
			Time:    t0.Add(time.Duration(n) * time.Millisecond),
			Payload: json.RawMessage(fmt.Sprintf(`{"model":"m@1.0.0","latencyMs":3.2,"outputs":{"output":[0.%d]}}`, n))})
	}
	return b
}

// publisher signs bundles with a fresh key.
type publisher struct {
	*testbundle.Publisher
}

// publishers holds each running test's testPublisher.
var publishers sync.Map // testing.TB -> *publisher

// testPublisher is the test's own publisher, whose key baseConfig trusts.
func testPublisher(t testing.TB) *publisher {
	t.Helper()
	if p, ok := publishers.Load(t); ok {
		return p.(*publisher)
	}
	p := newPublisher(t)
	publishers.Store(t, p)
	t.Cleanup(func() { publishers.Delete(t) })
	return p
}

func newPublisher(t testing.TB) *publisher {
	t.Helper()
	return &publisher{testbundle.TestPublisher(t)}
}

func (p *publisher) publicKey() string { return p.PublicKey }

// build builds and signs a real bundle NAME-VERSION.bundle whose model is
// size pseudo-random bytes, and returns its path (the signature is
// path.sig).
func (p *publisher) build(t testing.TB, name, version string, size int) string {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(size), 7))
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(r.Uint32())
	}
	return p.MustBuildFake(t, name, version, model, "").Path
}

// fetch downloads url and returns the body; it fails the test on a non-200.
func fetch(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
