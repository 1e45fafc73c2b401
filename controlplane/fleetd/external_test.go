package fleetd_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// mosquitto is a real mosquitto 2 on a loopback port, configured with
// the files fleetd mosquitto-config writes.
type mosquitto struct {
	addr    string
	confDir string // the generated files
	pidFile string
}

// startMosquitto generates the configuration for serviceUsers and runs
// mosquitto with it (testenv.StartMosquitto) until the test ends.
func startMosquitto(t testing.TB, serviceUsers ...string) *mosquitto {
	t.Helper()
	dir := t.TempDir()
	m := &mosquitto{confDir: filepath.Join(dir, "conf"), pidFile: filepath.Join(dir, "mosquitto.pid")}
	if err := fleetd.WriteMosquittoConfig(m.confDir, serviceUsers, io.Discard); err != nil {
		t.Fatal(err)
	}
	b := testenv.StartMosquitto(t, testenv.MosquittoConfig{Auth: cptest.ReadFile(t, filepath.Join(m.confDir, fleetd.MosquittoConfFile))})
	m.addr = b.Addr()
	if err := os.WriteFile(m.pidFile, []byte(strconv.Itoa(b.Pid())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return m
}

// externalConfig is fleetd behind m as service user.
func externalConfig(t testing.TB, m *mosquitto, user string) fleetd.Config {
	cfg := baseConfig(t)
	cfg.Broker = fleetd.BrokerConfig{
		External:     "tcp://" + m.addr,
		Username:     user,
		PasswordFile: filepath.Join(m.confDir, user+".password"),
		Mosquitto: fleetd.MosquittoConfig{
			PasswordFile: filepath.Join(m.confDir, fleetd.MosquittoPasswdFile),
			PIDFile:      m.pidFile,
		},
	}
	return cfg
}

func (ts *testServer) ready(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := ts.srv.Ready(ctx); err != nil {
		t.Fatalf("fleetd not connected to the external broker: %v\n%s", err, ts.logs.String())
	}
}

// dialRetry connects a device, retrying while mosquitto reloads its
// password file.
func dialRetry(t testing.TB, addr, id, pw string) *device {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		d, err := dialDevice(t, addr, id, pw)
		if err == nil {
			t.Cleanup(d.close)
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s cannot connect: %v", id, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestExternalMosquitto runs fleetd against a real mosquitto configured by
// fleetd mosquitto-config: enrolment provisions the device on mosquitto,
// telemetry is ingested exactly once through the shared subscription,
// the desired state is published retained, and what devices send while
// fleetd is down waits in fleetd's persistent session.
func TestExternalMosquitto(t *testing.T) {
	ctx := context.Background()
	m := startMosquitto(t, "_fleetd-1", "_fleetd-2")
	ts := startServer(t, externalConfig(t, m, "_fleetd-1"))
	ts.ready(t)
	if h, err := ts.api.Health(ctx); err != nil || h.Broker != "external" {
		t.Fatalf("health = %+v, %v", h, err)
	}

	e, err := ts.api.Enroll(ctx, ts.enrolTok, "dev-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Brokers) != 1 || e.Brokers[0] != "tcp://"+m.addr {
		t.Errorf("enrolment brokers = %v", e.Brokers)
	}
	d := dialRetry(t, m.addr, "dev-1", e.Password)
	d.online()
	d.report(0, map[string]string{"hw": "pi5"})
	b1, b2 := batch("dev-1", "e1", 1, 40), batch("dev-1", "e1", 41, 60)
	for _, b := range []*protocol.TelemetryBatch{b1, b1, b2, b2, b1} {
		d.mustPublish(protocol.KindTelemetry, b)
	}
	waitRecords(t, ts, "dev-1", 60, 100)
	dev, err := ts.api.Device(ctx, "dev-1")
	if err != nil || !dev.Status.Online || dev.Reported == nil || dev.Reported.Labels["hw"] != "pi5" {
		t.Fatalf("device = %+v, %v", dev, err)
	}

	// Desired state through mosquitto, retained.
	bpath := ts.push(t, testPublisher(t), "vad", "1.0.0", 64<<10)
	a, err := ts.api.Assign(ctx, "dev-1", "vad@1.0.0", "")
	if err != nil || !a.Published {
		t.Fatalf("Assign = %+v, %v", a, err)
	}
	d.subscribeDesired()
	ds := d.nextDesired(0)
	if ds.Seq != a.Desired.Seq {
		t.Fatalf("desired seq %d, want %d", ds.Seq, a.Desired.Seq)
	}
	if got, want := fetch(t, ds.Bundle.URL), cptest.ReadFile(t, bpath); string(got) != want {
		t.Fatalf("download differs from the pushed bundle")
	}

	// fleetd down: the device's messages wait in fleetd's session.
	ts.stop()
	d.mustPublish(protocol.KindTelemetry, batch("dev-1", "e1", 61, 70))
	ts.start()
	ts.ready(t)
	waitRecords(t, ts, "dev-1", 70, 100)

	// A second member of the shared group takes a share of the
	// telemetry: fleetd subscribes with $share/fleetd/...
	other := dialService(t, m.addr, "_fleetd-2", strings.TrimSpace(cptest.ReadFile(t, filepath.Join(m.confDir, "_fleetd-2.password"))))
	for i := range uint64(10) {
		d.mustPublish(protocol.KindTelemetry, batch("dev-1", "e1", 71+i, 71+i))
	}
	testenv.EventuallyState(t, "10 batches split between fleetd and the other group member", func() (bool, string) {
		r, err := ts.api.Records(ctx, "dev-1", client.RecordsQuery{})
		if err != nil {
			return false, err.Error()
		}
		got := int(r.Stats.Delivered) - 70
		n := other.count()
		return got+n == 10, fmt.Sprintf("fleetd %d, other member %d", got, n)
	})
	if n := other.count(); n == 0 || n == 10 {
		t.Errorf("the other group member got %d of 10 batches; a shared subscription splits them", n)
	}

	// Deleting the device removes it from mosquitto.
	d.close()
	if err := ts.api.DeleteDevice(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cptest.ReadFile(t, filepath.Join(m.confDir, fleetd.MosquittoPasswdFile)), "dev-1:") {
		t.Errorf("dev-1 still in the password file")
	}
	testenv.EventuallyState(t, "mosquitto refusing the deleted device", func() (bool, string) {
		d, err := dialDevice(t, m.addr, "dev-1", e.Password)
		if err == nil {
			d.close()
			return false, "connected"
		}
		return true, ""
	})
}

func waitRecords(t testing.TB, ts *testServer, id string, delivered, duplicates uint64) {
	t.Helper()
	testenv.EventuallyState(t, fmt.Sprintf("%d records of %s", delivered, id), func() (bool, string) {
		r, err := ts.api.Records(context.Background(), id, client.RecordsQuery{})
		if err != nil {
			return false, err.Error()
		}
		return r.Stats.Delivered == delivered && r.Stats.Duplicates == duplicates && len(r.Records) == int(delivered), fmt.Sprintf("%+v", r.Stats)
	})
}

// service is an MQTT 5 client (paho.golang) of a service user in the
// shared group, counting the telemetry it gets.
type service struct {
	mu sync.Mutex
	n  int
}

func (s *service) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.n }

func dialService(t testing.TB, addr, user, pw string) *service {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &service{}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			s.mu.Lock()
			s.n++
			s.mu.Unlock()
			return true, nil
		},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: user, Username: user, UsernameFlag: true, Password: []byte(pw), PasswordFlag: true, CleanStart: true, KeepAlive: 30})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("service %s connect: %v %+v", user, err, ca)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: protocol.SharedFilter(protocol.SharedGroup, protocol.KindTelemetry), QoS: 1},
	}}); err != nil {
		t.Fatal(err)
	}
	return s
}
